package rmqtest_test

// TestRecordScenarios captures the transcripts in testdata/ from a real
// broker through the recording proxy (internal/record); TestReplayRecorded
// (replay_test.go) replays them against rmqtest. To record again, start a
// real 4.9.4 name server and broker with every delay level at 1 s
// (scripts/rocketmq start --fast-delays) and run
//
//	RMQ_RECORD_DIR=$PWD/testdata RMQ_NAMESRV=... RMQ_BROKER=... go test -run TestRecordScenarios -v .
//
// Each scenario uses fresh group and topic names, and its file is only
// replaced when the scenario ran to its end.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/record"
	"github.com/seed157d4c4d/reliablemq/internal/remoting"
)

// recorder drives one scenario's raw requests through the proxy.
type recorder struct {
	t      *testing.T
	p      *record.Proxy
	broker string // the proxy's listener for the real broker
	conn   *remoting.Conn
	suffix string
}

func (r *recorder) invoke(req *remoting.Command) *remoting.Command {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := r.conn.Invoke(ctx, req)
	if err != nil {
		r.t.Fatalf("code %d: %v", req.Code, err)
	}
	return resp
}

// send is SEND_MESSAGE with the header fields consumer/retry.go writes.
func (r *recorder) send(group, topic string, reconsume, maxReconsume int, props map[string]string, body string) *remoting.Command {
	r.t.Helper()
	resp := r.invoke(&remoting.Command{Code: remoting.ReqSendMessage, Body: []byte(body), ExtFields: map[string]string{
		"producerGroup": group, "topic": topic, "defaultTopic": "TBW102", "defaultTopicQueueNums": "4",
		"queueId": "0", "sysFlag": "0", "bornTimestamp": strconv.FormatInt(time.Now().UnixMilli(), 10), "flag": "0",
		"properties": remoting.EncodeProperties(props), "reconsumeTimes": strconv.Itoa(reconsume), "unitMode": "false",
		"maxReconsumeTimes": strconv.Itoa(maxReconsume), "batch": "false",
	}})
	r.p.Note(fmt.Sprintf("SEND_MESSAGE to %s (reconsumeTimes=%d maxReconsumeTimes=%d): code %d queueId %s msgId %s",
		topic, reconsume, maxReconsume, resp.Code, resp.ExtFields["queueId"], resp.ExtFields["msgId"]))
	return resp
}

func (r *recorder) maxOffset(topic string) int64 {
	r.t.Helper()
	resp := r.invoke(&remoting.Command{Code: remoting.ReqGetMaxOffset,
		ExtFields: map[string]string{"topic": topic, "queueId": "0"}})
	n, _ := strconv.ParseInt(resp.ExtFields["offset"], 10, 64)
	r.p.Note(fmt.Sprintf("GET_MAX_OFFSET %s queue 0: code %d offset %d", topic, resp.Code, n))
	return n
}

func (r *recorder) query(topic, key string) []*remoting.StoredMessage {
	r.t.Helper()
	resp := r.invoke(&remoting.Command{Code: remoting.ReqQueryMessage, ExtFields: map[string]string{
		"topic": topic, "key": key, "maxNum": "32", "beginTimestamp": "0",
		"endTimestamp": strconv.FormatInt(time.Now().Add(time.Hour).UnixMilli(), 10)}})
	var msgs []*remoting.StoredMessage
	if resp.Code == remoting.CodeSuccess {
		var err error
		if msgs, err = remoting.DecodeStoredMessages(resp.Body); err != nil {
			r.t.Fatalf("query %s %s: %v", topic, key, err)
		}
	}
	r.p.Note(fmt.Sprintf("QUERY_MESSAGE %s key %s: code %d, %d messages", topic, key, resp.Code, len(msgs)))
	return msgs
}

func (r *recorder) updateTopic(topic string, perm int) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := remoting.UpdateTopic(ctx, remoting.Credentials{}, r.broker, topic, 1, 1, perm); err != nil {
		r.t.Fatal(err)
	}
	r.p.Note(fmt.Sprintf("UPDATE_AND_CREATE_TOPIC %s: 1 queue, perm %d", topic, perm))
}

func TestRecordScenarios(t *testing.T) {
	dir := os.Getenv("RMQ_RECORD_DIR")
	if dir == "" {
		t.Skip("set RMQ_RECORD_DIR, RMQ_NAMESRV and RMQ_BROKER (a real broker, every delay level 1 s) to record testdata/*.jsonl")
	}
	namesrv, broker := os.Getenv("RMQ_NAMESRV"), remoting.SplitAddrs(os.Getenv("RMQ_BROKER"))
	if namesrv == "" || len(broker) != 1 {
		t.Fatal("RMQ_RECORD_DIR needs RMQ_NAMESRV and exactly one broker in RMQ_BROKER")
	}
	for _, sc := range []struct {
		name string
		what string
		run  func(*recorder)
	}{
		{"retry_send_rule", "SEND_MESSAGE to %RETRY%<group> with DELAY=1: reconsumeTimes 0 >= max 0 and 2 < 16", recordRetrySendRule},
		{"send_readonly_topic", "SEND_MESSAGE to a topic with perm 4 (read only)", recordSendReadOnly},
		{"consume_stats", "the requests behind reliablemq lag: cluster info, subscription groups, consume stats after 2 of 5 messages were committed", recordConsumeStats},
		{"offset_queries", "GET_MAX_OFFSET, GET_MIN_OFFSET and SEARCH_OFFSET_BY_TIMESTAMP on a topic the broker does not have and on a queue beyond a topic's queues", recordOffsetQueries},
		{"batch_rules", "SEND_BATCH_MESSAGE with a member whose properties carry DELAY, with DELAY in the batch's own properties, with sysFlag 4 (half message), and to %RETRY%<group> with reconsumeTimes 0 >= max 0", recordBatchRules},
		{"end_transaction", "END_TRANSACTION twice on one half message, commit after rollback, and the checks on group and offsets", recordEndTransaction},
	} {
		t.Run(sc.name, func(t *testing.T) {
			var rnd [4]byte
			rand.Read(rnd[:])
			tmp, err := os.CreateTemp(dir, sc.name+".*.tmp")
			if err != nil {
				t.Fatal(err)
			}
			defer os.Remove(tmp.Name()) // gone after the rename, left only if the scenario failed
			defer tmp.Close()
			p, err := record.Start(context.Background(), namesrv, tmp, record.WithMeta("scenario", sc.name),
				record.WithMeta("what", sc.what), record.WithMeta("realBroker", broker[0]),
				record.WithMeta("server", "Apache RocketMQ 4.9.4 (scripts/rocketmq --fast-delays: all 18 delay levels 1 s)"),
				record.WithMeta("client", "raw remoting.Conn requests (rmqtest/record_test.go)"))
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			r := &recorder{t: t, p: p, suffix: hex.EncodeToString(rnd[:])}
			// The route of TBW102, to show the proxy's rewrite; requests
			// then go to the proxy's listener for the broker.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			route, err := remoting.FetchRoute(ctx, p.NamesrvAddr(), "TBW102")
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			if r.broker, err = p.BrokerAddr(broker[0]); err != nil {
				t.Fatal(err)
			}
			if got := route.MasterAddr("broker-a"); got != r.broker {
				t.Fatalf("route through the proxy names %q, want its broker listener %s", got, r.broker)
			}
			r.conn, err = remoting.Dial(context.Background(), r.broker)
			if err != nil {
				t.Fatal(err)
			}
			sc.run(r)
			r.conn.Close()
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			if err := tmp.Chmod(0o644); err != nil {
				t.Fatal(err)
			}
			if err := tmp.Close(); err != nil {
				t.Fatal(err)
			}
			if t.Failed() {
				return
			}
			if err := os.Rename(tmp.Name(), filepath.Join(dir, sc.name+".jsonl")); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// recordRetrySendRule: a copy sent to the retry topic whose reconsumeTimes
// has reached maxReconsumeTimes goes to %DLQ% (through the schedule topic,
// DELAY kept); one below the cap lands in %RETRY% after its delay.
func recordRetrySendRule(r *recorder) {
	t := r.t
	group := "CG_RecRetry_" + r.suffix
	retry, dlq := "%RETRY%"+group, "%DLQ%"+group
	origin := "TopicRecRetry_" + r.suffix
	r.updateTopic(retry, remoting.PermRead|remoting.PermWrite)
	dlqKey, retryKey := "REC-DLQ-"+r.suffix, "REC-RETRY-"+r.suffix
	props := func(key string) map[string]string {
		return map[string]string{remoting.PropDelay: "1", remoting.PropUniqKey: key, remoting.PropRetryTopic: origin,
			remoting.PropKeys: "order-" + r.suffix}
	}
	if resp := r.send(group, retry, 0, 0, props(dlqKey), "copy for the DLQ"); resp.Code != remoting.CodeSuccess {
		t.Errorf("send reconsumeTimes=0 max=0: code %d %s", resp.Code, resp.Remark)
	}
	if resp := r.send(group, retry, 2, 16, props(retryKey), "copy for the retry topic"); resp.Code != remoting.CodeSuccess {
		t.Errorf("send reconsumeTimes=2 max=16: code %d %s", resp.Code, resp.Remark)
	}
	r.p.Note("waiting 2.5 s for the delay level (1 s) to come due")
	time.Sleep(2500 * time.Millisecond)
	if n := r.maxOffset(retry); n != 1 {
		t.Errorf("%s max offset %d, want 1", retry, n)
	}
	if n := r.maxOffset(dlq); n != 1 {
		t.Errorf("%s max offset %d, want 1", dlq, n)
	}
	if msgs := r.query(dlq, dlqKey); len(msgs) != 1 {
		t.Errorf("DLQ copy: %d messages", len(msgs))
	}
	if msgs := r.query(retry, retryKey); len(msgs) != 1 {
		t.Errorf("retry copy: %d messages", len(msgs))
	}
	// Each copy is indexed under its own topic only.
	r.query(retry, dlqKey)
	r.query(dlq, retryKey)
}

// recordSendReadOnly: SEND_MESSAGE does not check the topic's own write
// permission.
func recordSendReadOnly(r *recorder) {
	topic := "TopicRecReadOnly_" + r.suffix
	r.updateTopic(topic, remoting.PermRead)
	if resp := r.send("PG_RecReadOnly_"+r.suffix, topic, 0, 0, map[string]string{
		remoting.PropUniqKey: "REC-RO-" + r.suffix, remoting.PropWait: "true"}, "to a read-only topic"); resp.Code != remoting.CodeSuccess {
		r.t.Logf("send to a read-only topic: code %d %s", resp.Code, resp.Remark)
	}
	// The broker dispatches to the consume queue after it answers.
	r.p.Note("waiting 0.5 s for the consume queue and index to catch up")
	time.Sleep(500 * time.Millisecond)
	r.maxOffset(topic)
	r.query(topic, "REC-RO-"+r.suffix)
}

// recordConsumeStats: what "reliablemq lag" asks, after a group pulled and
// committed 2 of the 5 messages on queue 0 of a 2-queue topic.
func recordConsumeStats(r *recorder) {
	t := r.t
	topic, group := "TopicRecLag_"+r.suffix, "CG_RecLag_"+r.suffix
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := remoting.UpdateTopic(ctx, remoting.Credentials{}, r.broker, topic, 2, 2, remoting.PermRead|remoting.PermWrite); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		r.send("PG_RecLag_"+r.suffix, topic, 0, 0, map[string]string{remoting.PropUniqKey: fmt.Sprint("REC-LAG-", r.suffix, i)}, "lag")
	}
	r.p.Note("waiting 0.5 s for the consume queue to catch up")
	time.Sleep(500 * time.Millisecond)
	pull := r.invoke(&remoting.Command{Code: remoting.ReqPullMessage, ExtFields: map[string]string{
		"consumerGroup": group, "topic": topic, "queueId": "0", "queueOffset": "0", "maxMsgNums": "2", "sysFlag": "4",
		"commitOffset": "0", "suspendTimeoutMillis": "0", "subscription": "*", "subVersion": "0", "expressionType": "TAG"}})
	r.p.Note(fmt.Sprintf("PULL_MESSAGE %s queue 0 max 2: code %d", topic, pull.Code))
	commit := r.invoke(&remoting.Command{Code: remoting.ReqUpdateConsumerOffset, ExtFields: map[string]string{
		"consumerGroup": group, "topic": topic, "queueId": "0", "commitOffset": "2"}})
	r.p.Note(fmt.Sprintf("UPDATE_CONSUMER_OFFSET %s queue 0 to 2: code %d", topic, commit.Code))

	ns, err := remoting.Dial(ctx, r.p.NamesrvAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if resp, err := ns.Invoke(ctx, &remoting.Command{Code: remoting.ReqGetBrokerClusterInfo}); err != nil || resp.Code != remoting.CodeSuccess {
		t.Errorf("cluster info: %v %+v", err, resp)
	}
	if resp := r.invoke(&remoting.Command{Code: remoting.ReqGetAllSubscriptionGroupConfig}); resp.Code != remoting.CodeSuccess {
		t.Errorf("subscription groups: code %d %s", resp.Code, resp.Remark)
	}
	for _, ext := range []map[string]string{{"consumerGroup": group}, {"consumerGroup": group, "topic": topic},
		{"consumerGroup": "CG_RecLag_none_" + r.suffix}} {
		resp := r.invoke(&remoting.Command{Code: remoting.ReqGetConsumeStats, ExtFields: ext})
		r.p.Note(fmt.Sprintf("GET_CONSUME_STATS %v: code %d %s", ext, resp.Code, resp.Body))
	}
}

// half stores a transactional half message for topic queue 0, as the
// official producer sends it.
func (r *recorder) half(group, topic, key string) *remoting.Command {
	r.t.Helper()
	resp := r.invoke(&remoting.Command{Code: remoting.ReqSendMessage, Body: []byte("half " + key), ExtFields: map[string]string{
		"producerGroup": group, "topic": topic, "defaultTopic": "TBW102", "defaultTopicQueueNums": "4",
		"queueId": "0", "sysFlag": "4", "bornTimestamp": strconv.FormatInt(time.Now().UnixMilli(), 10), "flag": "0",
		"properties": remoting.EncodeProperties(map[string]string{remoting.PropTransactionPrepared: "true",
			remoting.PropProducerGroup: group, remoting.PropUniqKey: "U-" + key, remoting.PropKeys: key}),
		"reconsumeTimes": "0", "unitMode": "false", "maxReconsumeTimes": "0", "batch": "false",
	}})
	r.p.Note(fmt.Sprintf("half message %s: code %d queueOffset %s msgId %s", key, resp.Code, resp.ExtFields["queueOffset"], resp.ExtFields["msgId"]))
	if resp.Code != remoting.CodeSuccess {
		r.t.Fatalf("half message %s: code %d %s", key, resp.Code, resp.Remark)
	}
	return resp
}

// end sends END_TRANSACTION for the half message sent answered by half,
// with the header fields the official producer writes after a send;
// stateDelta shifts tranStateTableOffset, group overrides the producer group.
func (r *recorder) end(half *remoting.Command, group string, decision, stateDelta int) *remoting.Command {
	r.t.Helper()
	_, phys, err := remoting.ParseOffsetMsgID(half.ExtFields["msgId"])
	if err != nil {
		r.t.Fatal(err)
	}
	state := atoi64(half.ExtFields["queueOffset"]) + int64(stateDelta)
	resp := r.invoke(&remoting.Command{Code: remoting.ReqEndTransaction, ExtFields: map[string]string{
		"producerGroup": group, "tranStateTableOffset": strconv.FormatInt(state, 10),
		"commitLogOffset": strconv.FormatInt(phys, 10), "commitOrRollback": strconv.Itoa(decision),
		"fromTransactionCheck": "false", "msgId": half.ExtFields["msgId"], "transactionId": ""}})
	r.p.Note(fmt.Sprintf("END_TRANSACTION %d (group %s, tranStateTableOffset %d): code %d %q", decision, group, state, resp.Code, resp.Remark))
	return resp
}

func atoi64(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

// recordEndTransaction: the broker looks the half message up by offset on
// every END_TRANSACTION and does not remember a decision, so a second
// commit stores a second copy and a commit after a rollback stores one.
func recordEndTransaction(r *recorder) {
	t := r.t
	topic, group := "TopicRecTx_"+r.suffix, "PG_RecTx_"+r.suffix
	r.updateTopic(topic, remoting.PermRead|remoting.PermWrite)
	twice, late, wrong := "REC-TX-TWICE-"+r.suffix, "REC-TX-LATE-"+r.suffix, "REC-TX-WRONG-"+r.suffix
	h := r.half(group, topic, twice)
	for i := 0; i < 2; i++ {
		if resp := r.end(h, group, remoting.SysFlagTransactionCommit, 0); resp.Code != remoting.CodeSuccess {
			t.Errorf("commit %d: code %d %s", i+1, resp.Code, resp.Remark)
		}
	}
	h = r.half(group, topic, late)
	r.end(h, group, remoting.SysFlagTransactionRollback, 0)
	r.end(h, group, remoting.SysFlagTransactionCommit, 0)
	h = r.half(group, topic, wrong)
	r.end(h, "PG_RecTx_other_"+r.suffix, remoting.SysFlagTransactionCommit, 0)
	r.end(h, group, remoting.SysFlagTransactionCommit, 1)
	r.end(h, group, remoting.SysFlagTransactionRollback, 0)
	r.p.Note("waiting 0.5 s for the consume queue and index to catch up")
	time.Sleep(500 * time.Millisecond)
	if n := r.maxOffset(topic); n != 3 {
		t.Errorf("%s max offset %d, want 3", topic, n)
	}
	r.query(topic, twice)
	r.query(topic, late)
	r.query(topic, wrong)
}

// recordOffsetQueries: the offset queries do not check the topic or the
// queue; one the broker does not have reads as an empty queue.
func recordOffsetQueries(r *recorder) {
	topic := "TopicRecOffsets_" + r.suffix
	r.updateTopic(topic, remoting.PermRead|remoting.PermWrite)
	for _, code := range []int{remoting.ReqGetMaxOffset, remoting.ReqGetMinOffset, remoting.ReqSearchOffsetByTimestamp} {
		for _, q := range []struct {
			topic string
			queue int
		}{{"TopicRecNone_" + r.suffix, 0}, {topic, 5}} {
			resp := r.invoke(&remoting.Command{Code: code, ExtFields: map[string]string{"topic": q.topic,
				"queueId": strconv.Itoa(q.queue), "timestamp": strconv.FormatInt(time.Now().UnixMilli(), 10)}})
			r.p.Note(fmt.Sprintf("request %d %s queue %d: code %d offset %q", code, q.topic, q.queue, resp.Code, resp.ExtFields["offset"]))
		}
	}
}

// batch is SEND_BATCH_MESSAGE with the short header keys the official
// producer writes; props are the batch's own properties.
func (r *recorder) batch(topic, props string, sysFlag int, items []remoting.BatchItem) *remoting.Command {
	r.t.Helper()
	resp := r.invoke(&remoting.Command{Code: remoting.ReqSendBatchMessage, Body: remoting.EncodeBatch(items),
		ExtFields: map[string]string{"a": "PG_RecBatch_" + r.suffix, "b": topic, "c": "TBW102", "d": "4", "e": "0", "f": strconv.Itoa(sysFlag),
			"g": strconv.FormatInt(time.Now().UnixMilli(), 10), "h": "0", "i": props, "j": "0", "k": "false", "l": "0", "m": "true"}})
	r.p.Note(fmt.Sprintf("SEND_BATCH_MESSAGE of %d to %s (properties %q, sysFlag %d): code %d %q msgId %s", len(items), topic, props,
		sysFlag, resp.Code, resp.Remark, resp.ExtFields["msgId"]))
	return resp
}

// recordBatchRules: a batch member's DELAY is stored but not acted on, a
// DELAY or transaction flag of the batch itself is refused, and a batch
// to a retry topic is not moved to the DLQ.
func recordBatchRules(r *recorder) {
	t := r.t
	topic := "TopicRecBatch_" + r.suffix
	r.updateTopic(topic, remoting.PermRead|remoting.PermWrite)
	member := func(body, key string, props map[string]string) remoting.BatchItem {
		p := map[string]string{remoting.PropKeys: key}
		for k, v := range props {
			p[k] = v
		}
		return remoting.BatchItem{Body: []byte(body), Properties: remoting.EncodeProperties(p)}
	}
	delayed := "REC-BATCH-DELAYED-" + r.suffix
	if resp := r.batch(topic, "", 0, []remoting.BatchItem{member("at once", "REC-BATCH-PLAIN-"+r.suffix, nil),
		member("delay level 2", delayed, map[string]string{remoting.PropDelay: "2"})}); resp.Code != remoting.CodeSuccess {
		t.Errorf("batch with a delayed member: code %d %s", resp.Code, resp.Remark)
	}
	r.batch(topic, remoting.EncodeProperties(map[string]string{remoting.PropDelay: "1"}), 0,
		[]remoting.BatchItem{member("batch delay", "REC-BATCH-OWN-"+r.suffix, nil)})
	r.batch(topic, "", remoting.SysFlagTransactionPrepared,
		[]remoting.BatchItem{member("batch half", "REC-BATCH-HALF-"+r.suffix, nil)})
	r.p.Note("waiting 0.5 s for the consume queue and index to catch up")
	time.Sleep(500 * time.Millisecond)
	if n := r.maxOffset(topic); n != 2 {
		t.Errorf("%s max offset %d, want 2", topic, n)
	}
	r.query(topic, delayed)

	group := "CG_RecBatch_" + r.suffix
	retry := "%RETRY%" + group
	r.updateTopic(retry, remoting.PermRead|remoting.PermWrite)
	r.batch(retry, "", 0, []remoting.BatchItem{member("retry batch", "REC-BATCH-RETRY-"+r.suffix,
		map[string]string{remoting.PropRetryTopic: topic})})
	r.p.Note("waiting 0.5 s for the consume queue and index to catch up")
	time.Sleep(500 * time.Millisecond)
	if n := r.maxOffset(retry); n != 1 {
		t.Errorf("%s max offset %d, want 1", retry, n)
	}
	r.maxOffset("%DLQ%" + group)
}
