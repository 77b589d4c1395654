package rmqtest

import (
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/remoting"
)

const faqSuffix = "\nSee http://rocketmq.apache.org/docs/faq/ for further details."

func response(code int, remark string) *remoting.Command {
	return &remoting.Command{Code: code, Remark: remark}
}

func ok(ext map[string]string, body []byte) *remoting.Command {
	return &remoting.Command{Code: remoting.CodeSuccess, ExtFields: ext, Body: body}
}

// handle answers one request. A nil result means no reply now (a held
// pull, a delayed reply, or a request the real broker does not answer).
func (b *Broker) handle(c *conn, req *remoting.Command) *remoting.Command {
	if f := b.takeFault(req.Code); f != nil {
		return b.applyFault(c, req, f)
	}
	return b.dispatch(c, req)
}

func (b *Broker) dispatch(c *conn, req *remoting.Command) *remoting.Command {
	if c.namesrv {
		switch req.Code {
		case remoting.ReqGetRouteInfoByTopic:
			return b.routeInfo(req)
		case remoting.ReqGetBrokerClusterInfo:
			return b.clusterInfo()
		}
		return response(remoting.CodeRequestNotSupported, fmt.Sprintf(" request type %d not supported", req.Code))
	}
	switch req.Code {
	case remoting.ReqSendMessage, remoting.ReqSendBatchMessage:
		return b.sendMessage(c, req)
	case remoting.ReqPullMessage:
		return b.pullMessage(c, req)
	case remoting.ReqHeartBeat:
		return b.heartbeat(c, req)
	case remoting.ReqGetConsumerListByGroup:
		return b.consumerList(req)
	case remoting.ReqQueryConsumerOffset:
		return b.queryConsumerOffset(req)
	case remoting.ReqUpdateConsumerOffset:
		return b.updateConsumerOffset(req)
	case remoting.ReqGetMaxOffset, remoting.ReqGetMinOffset, remoting.ReqSearchOffsetByTimestamp:
		return b.queueOffsetQuery(req)
	case remoting.ReqUpdateAndCreateTopic:
		return b.createTopicRequest(req)
	case remoting.ReqConsumerSendMsgBack:
		return b.sendMsgBack(req)
	case remoting.ReqEndTransaction:
		return b.endTransaction(req)
	case remoting.ReqLockBatchMQ:
		return b.lockBatch(req)
	case remoting.ReqUnlockBatchMQ:
		return b.unlockBatch(req)
	case remoting.ReqViewMessageByID:
		return b.viewMessage(req)
	case remoting.ReqQueryMessage:
		return b.queryMessage(req)
	case remoting.ReqUnregisterClient:
		return ok(nil, nil)
	case remoting.ReqGetConsumeStats:
		return b.consumeStats(req)
	case remoting.ReqGetAllSubscriptionGroupConfig:
		return b.subscriptionGroups()
	}
	return response(remoting.CodeRequestNotSupported, fmt.Sprintf(" request type %d not supported", req.Code))
}

func (b *Broker) routeInfo(req *remoting.Command) *remoting.Command {
	name := req.ExtFields["topic"]
	b.mu.Lock()
	t := b.topics[name]
	var read, write, perm int
	if t != nil {
		read, write, perm = t.read, t.write, t.perm
	}
	b.mu.Unlock()
	if t == nil {
		return response(remoting.CodeTopicNotExist,
			"No topic route info in name server for the topic: "+name+faqSuffix)
	}
	// Compact JSON with an unquoted broker id key, byte for byte as a 4.9.4
	// name server writes it (the client parses brokerAddrs by hand).
	name, _ = jsonString(b.opts.brokerName)
	cluster, _ := jsonString(b.opts.clusterName)
	addr, _ := jsonString(b.brAddr)
	body := fmt.Sprintf(`{"brokerDatas":[{"brokerAddrs":{0:%s},"brokerName":%s,"cluster":%s}],"filterServerTable":{},"queueDatas":[{"brokerName":%s,"perm":%d,"readQueueNums":%d,"topicSysFlag":0,"writeQueueNums":%d}]}`,
		addr, name, cluster, name, perm, read, write)
	return ok(nil, []byte(body))
}

func jsonString(s string) (string, error) {
	b, err := json.Marshal(s)
	return string(b), err
}

var topicName = regexp.MustCompile(`^[%|a-zA-Z0-9_-]+$`)

func validTopic(name string) string {
	switch {
	case name == "":
		return "The specified topic is blank."
	case len(name) > 127:
		return "The specified topic is longer than topic max length 127."
	case !topicName.MatchString(name):
		return fmt.Sprintf("The specified topic[%s] contains illegal characters, allowing only ^[%%|a-zA-Z0-9_-]+$", name)
	}
	return ""
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

func atoi64(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

// sendHeader is SEND_MESSAGE's header, or SEND_BATCH_MESSAGE's short-key one.
type sendHeader struct {
	group, topic, defaultTopic, properties string
	queueID, sysFlag, flag, defaultQueues  int
	reconsumeTimes, maxReconsumeTimes      int
	bornTimestamp                          int64
}

func parseSendHeader(req *remoting.Command) sendHeader {
	e := req.ExtFields
	if req.Code == remoting.ReqSendBatchMessage {
		return sendHeader{group: e["a"], topic: e["b"], defaultTopic: e["c"], defaultQueues: atoi(e["d"]),
			queueID: atoi(e["e"]), sysFlag: atoi(e["f"]), bornTimestamp: atoi64(e["g"]), flag: atoi(e["h"]),
			properties: e["i"], reconsumeTimes: atoi(e["j"]), maxReconsumeTimes: maxReconsume(e["l"])}
	}
	return sendHeader{group: e["producerGroup"], topic: e["topic"], defaultTopic: e["defaultTopic"],
		defaultQueues: atoi(e["defaultTopicQueueNums"]), queueID: atoi(e["queueId"]), sysFlag: atoi(e["sysFlag"]),
		bornTimestamp: atoi64(e["bornTimestamp"]), flag: atoi(e["flag"]), properties: e["properties"],
		reconsumeTimes: atoi(e["reconsumeTimes"]), maxReconsumeTimes: maxReconsume(e["maxReconsumeTimes"])}
}

// groupRetryMaxTimes is a subscription group's retryMaxTimes on a 4.9.4
// broker: the retry budget of a SEND_MESSAGE to %RETRY% whose header
// names none.
const groupRetryMaxTimes = 16

func maxReconsume(field string) int {
	if field == "" {
		return groupRetryMaxTimes
	}
	return atoi(field)
}

// notAllowedSendTopics are the system topics a 4.9.4 broker takes no sends
// to (TopicValidator.NOT_ALLOWED_SEND_TOPIC_SET).
var notAllowedSendTopics = map[string]bool{scheduleTopic: true, halfTopic: true, "RMQ_SYS_TRANS_OP_HALF_TOPIC": true,
	"SELF_TEST_TOPIC": true, "OFFSET_MOVED_EVENT": true}

func (b *Broker) sendMessage(c *conn, req *remoting.Command) *remoting.Command {
	h := parseSendHeader(req)
	if msg := validTopic(h.topic); msg != "" {
		return response(remoting.CodeSystemError, msg)
	}
	if h.topic == defaultTopic || notAllowedSendTopics[h.topic] {
		return response(remoting.CodeNoPermission, "Sending message to topic["+h.topic+"] is forbidden.")
	}
	var msgs []*message
	if req.Code == remoting.ReqSendBatchMessage {
		items, err := remoting.DecodeBatch(req.Body)
		if err != nil || len(items) == 0 {
			return response(remoting.CodeMessageIllegal, "the batch message body is malformed")
		}
		for _, it := range items {
			msgs = append(msgs, &message{
				StoredMessage: remoting.StoredMessage{Flag: it.Flag, Body: it.Body},
				props:         remoting.DecodeProperties(it.Properties),
			})
		}
	} else {
		msgs = []*message{{
			StoredMessage: remoting.StoredMessage{Flag: int32(h.flag), Body: req.Body},
			props:         remoting.DecodeProperties(h.properties),
		}}
	}
	// A 4.9.4 broker limits a message's body, and a batch's whole body
	// (each member's 20-byte header and properties included); a batch
	// can carry neither a delay level nor a transaction flag of its own.
	batch := req.Code == remoting.ReqSendBatchMessage
	illegal := len(req.Body) > b.opts.maxMessageSize
	if batch {
		level, _ := strconv.Atoi(remoting.DecodeProperties(h.properties)[remoting.PropDelay])
		illegal = illegal || level > 0 || h.sysFlag&remoting.SysFlagTransactionMask != 0
	}
	if !batch {
		illegal = illegal || storedPropertiesLength(msgs[0].props, b.opts.clusterName) > maxPropertiesLength
	}
	if illegal {
		return response(remoting.CodeMessageIllegal, fmt.Sprintf("the message is illegal, maybe msg body or properties length not matched. msg body length limit %dB, msg properties length limit 32KB.", b.opts.maxMessageSize))
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.topics[h.topic]
	if t == nil {
		dt := b.topics[h.defaultTopic]
		if !b.opts.autoCreateTopics || dt == nil || dt.perm&permInherit == 0 {
			return response(remoting.CodeTopicNotExist, "topic["+h.topic+"] not exist, apply first please!"+faqSuffix)
		}
		n := min(max(h.defaultQueues, 1), dt.write)
		t = b.ensureTopicLocked(h.topic, n, dt.perm&^permInherit)
	}
	// A 4.9.4 broker does not check the topic's own permission on
	// SEND_MESSAGE (clients skip unwritable queues by their route); only a
	// send-back checks the retry topic's.
	queue := h.queueID
	if queue < 0 {
		queue = rand.IntN(t.write)
	}
	if queue >= max(t.read, t.write) {
		return response(remoting.CodeSystemError, fmt.Sprintf("request queueId[%d] is illegal, %s Producer: %s", queue, h.topic, c.remote))
	}
	target := t
	if !batch && strings.HasPrefix(h.topic, retryPrefix) && h.reconsumeTimes >= h.maxReconsumeTimes {
		// As a 4.9.4 broker does: a copy whose retries are used up goes to
		// the group's DLQ. The request's properties, DELAY included, are
		// kept, so a delayed copy reaches the DLQ through the schedule topic.
		// A batch is stored in the retry topic whatever its header says.
		target = b.ensureTopicLocked(dlqPrefix+strings.TrimPrefix(h.topic, retryPrefix), 1, b.opts.dlqPerm)
		queue = 0
	}
	ids := make([]string, 0, len(msgs))
	var first *message
	for _, m := range msgs {
		m.SysFlag = int32(h.sysFlag)
		m.BornTimestamp = h.bornTimestamp
		m.BornHost = c.remote
		m.ReconsumeTimes = int32(h.reconsumeTimes)
		delete(m.props, remoting.PropWait)
		m.props[remoting.PropCluster] = b.opts.clusterName
		switch {
		case batch:
			// Stored as sent: a member's own DELAY property is kept
			// but not acted on, as on a 4.9.4 broker.
			b.putLocked(target, int32(queue), m)
		case m.SysFlag&remoting.SysFlagTransactionMask == remoting.SysFlagTransactionPrepared:
			b.putHalfLocked(target, int32(queue), m, h.group)
		default:
			b.storeLocked(target, int32(queue), m)
		}
		if first == nil {
			first = m
		}
		ids = append(ids, remoting.OffsetMsgID(m.StoreHost, m.PhysicalOffset))
	}
	return ok(map[string]string{
		"msgId":       strings.Join(ids, ","),
		"queueId":     strconv.Itoa(queue),
		"queueOffset": strconv.FormatInt(first.QueueOffset, 10),
		"MSG_REGION":  "DefaultRegion",
		"TRACE_ON":    "true",
	}, nil)
}

func (b *Broker) createTopicRequest(req *remoting.Command) *remoting.Command {
	e := req.ExtFields
	name := e["topic"]
	if msg := validTopic(name); msg != "" {
		return response(remoting.CodeSystemError, msg)
	}
	if name == defaultTopic {
		return response(remoting.CodeSystemError, "The topic["+name+"] is conflict with system reserved words.")
	}
	read, write, perm := atoi(e["readQueueNums"]), atoi(e["writeQueueNums"]), atoi(e["perm"])
	if read <= 0 || write <= 0 || read > 1024 || write > 1024 {
		return response(remoting.CodeSystemError, fmt.Sprintf("illegal queue numbers read %d write %d", read, write))
	}
	b.mu.Lock()
	b.upsertTopicLocked(name, read, write, perm)
	b.mu.Unlock()
	return &remoting.Command{Code: remoting.CodeSuccess, Remark: "not set any response code"}
}

func (b *Broker) upsertTopicLocked(name string, read, write, perm int) {
	if t := b.topics[name]; t != nil {
		t.resize(read, write)
		t.perm = perm
		return
	}
	b.topics[name] = newTopic(name, read, write, perm)
}

func (b *Broker) queueLookup(e map[string]string) (*topic, int32, *remoting.Command) {
	t := b.topics[e["topic"]]
	if t == nil {
		return nil, 0, response(remoting.CodeTopicNotExist, "topic["+e["topic"]+"] not exist, apply first please!"+faqSuffix)
	}
	q := atoi(e["queueId"])
	if q < 0 || q >= len(t.queues) {
		return nil, 0, response(remoting.CodeSystemError, fmt.Sprintf("queueId[%d] is illegal, topic:[%s] topicConfig.readQueueNums:[%d]", q, t.name, t.read))
	}
	return t, int32(q), nil
}

func (b *Broker) queryConsumerOffset(req *remoting.Command) *remoting.Command {
	e := req.ExtFields
	b.mu.Lock()
	defer b.mu.Unlock()
	if off, found := b.offsets[e["consumerGroup"]][queueKey{e["topic"], int32(atoi(e["queueId"]))}]; found {
		return ok(map[string]string{"offset": strconv.FormatInt(off, 10)}, nil)
	}
	// A 4.9.4 broker answers 0 rather than QUERY_NOT_FOUND while the
	// queue's first message is still in memory, which for an in-memory
	// store is always: a new group reads the queue from its start, even
	// with CONSUME_FROM_LAST_OFFSET.
	return ok(map[string]string{"offset": "0"}, nil)
}

func (b *Broker) updateConsumerOffset(req *remoting.Command) *remoting.Command {
	e := req.ExtFields
	b.mu.Lock()
	b.commitOffsetLocked(e["consumerGroup"], queueKey{e["topic"], int32(atoi(e["queueId"]))}, atoi64(e["commitOffset"]))
	b.mu.Unlock()
	return ok(nil, nil)
}

func (b *Broker) commitOffsetLocked(group string, k queueKey, off int64) {
	if group == "" || off < 0 {
		return
	}
	m := b.offsets[group]
	if m == nil {
		m = make(map[queueKey]int64)
		b.offsets[group] = m
	}
	m[k] = off
}

// queueOffsetQuery answers GET_MAX_OFFSET, GET_MIN_OFFSET and
// SEARCH_OFFSET_BY_TIMESTAMP. A 4.9.4 broker does not check the topic or
// queue: one it does not have is an empty queue, answered with offset 0.
func (b *Broker) queueOffsetQuery(req *remoting.Command) *remoting.Command {
	e := req.ExtFields
	b.mu.Lock()
	defer b.mu.Unlock()
	var msgs []*message
	if t, q := b.topics[e["topic"]], atoi(e["queueId"]); t != nil && q >= 0 && q < len(t.queues) {
		msgs = t.queues[q]
	}
	var off int64
	switch req.Code {
	case remoting.ReqGetMaxOffset:
		off = int64(len(msgs))
	case remoting.ReqSearchOffsetByTimestamp:
		off = offsetByTime(msgs, atoi64(e["timestamp"]))
	}
	return ok(map[string]string{"offset": strconv.FormatInt(off, 10)}, nil)
}

// offsetByTime is the queue offset a 4.9.4 broker answers for a
// timestamp: its binary search over the store timestamps stops at a
// message stored at exactly that time, else answers the nearer of the
// messages on either side of it (the earlier on a tie). So a time after
// the last message gives the last message's offset, not the max offset,
// and an empty queue 0. (The broker searches one consume queue file,
// 3000 entries with the store settings of scripts/rocketmq; rmqtest has
// one file.)
func offsetByTime(msgs []*message, ts int64) int64 {
	lo, hi := 0, len(msgs)-1
	left, right := -1, -1
	for lo <= hi {
		mid := (lo + hi) / 2
		switch st := msgs[mid].StoreTimestamp; {
		case st == ts:
			return int64(mid)
		case st > ts:
			hi, right = mid-1, mid
		default:
			lo, left = mid+1, mid
		}
	}
	switch {
	case left < 0:
		return int64(max(right, 0))
	case right < 0:
		return int64(left)
	case ts-msgs[left].StoreTimestamp > msgs[right].StoreTimestamp-ts:
		return int64(right)
	}
	return int64(left)
}

func (b *Broker) viewMessage(req *remoting.Command) *remoting.Command {
	off := atoi64(req.ExtFields["offset"])
	b.mu.Lock()
	m := b.byPhys[off]
	b.mu.Unlock()
	if m == nil {
		return response(remoting.CodeSystemError, fmt.Sprintf("can not find message by the offset, %d", off))
	}
	return ok(nil, m.encoded)
}

func (b *Broker) queryMessage(req *remoting.Command) *remoting.Command {
	e := req.ExtFields
	maxNum := atoi(e["maxNum"])
	begin, end := atoi64(e["beginTimestamp"]), atoi64(e["endTimestamp"])
	b.mu.Lock()
	var body []byte
	n := 0
	var last int64
	for _, m := range b.keyIndex[indexHash(e["topic"], e["key"])] {
		if n >= maxNum || m.StoreTimestamp < begin || m.StoreTimestamp > end {
			continue
		}
		body = append(body, m.encoded...)
		last = max(last, m.StoreTimestamp)
		n++
	}
	b.mu.Unlock()
	if n == 0 {
		return &remoting.Command{Code: remoting.CodeQueryNotFound, Remark: "can not find message, maybe time range not correct",
			ExtFields: map[string]string{"indexLastUpdatePhyoffset": "0", "indexLastUpdateTimestamp": "0"}}
	}
	return ok(map[string]string{"indexLastUpdatePhyoffset": "0", "indexLastUpdateTimestamp": strconv.FormatInt(last, 10)}, body)
}

// durationMillis converts a header value in milliseconds.
func durationMillis(s string) time.Duration { return time.Duration(atoi64(s)) * time.Millisecond }

// maxPropertiesLength is a 4.9.4 broker's limit on a message's
// properties as it stores them, in bytes of UTF-8 (a Java string's
// length, in UTF-16 characters, is never more).
const maxPropertiesLength = 32767

// storedPropertiesLength is the length of props as the broker stores them:
// WAIT dropped, its cluster added.
func storedPropertiesLength(props map[string]string, cluster string) int {
	p := maps.Clone(props)
	delete(p, remoting.PropWait)
	p[remoting.PropCluster] = cluster
	return len(remoting.EncodeProperties(p))
}
