package consumer

import (
	"bytes"
	"compress/zlib"
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"sync"
	"time"

	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/seed157d4c4d/reliablemq/internal/remoting"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// retrySendTimeout bounds one retry store, dial included.
const retrySendTimeout = 3 * time.Second

// retrySender stores the retry copy of a failed message in the group's
// retry topic itself, with a SEND_MESSAGE written by this package, instead
// of asking the broker to (CONSUMER_SEND_MSG_BACK): the official client
// drops a message whose send-back the broker refuses
// (apache/rocketmq-client-go#1106), and its own producer cannot be used
// either, since it sends reconsumeTimes=0 and maxReconsumeTimes=0 in every
// header, which a 4.x broker reads as "retries exhausted" and stores the
// copy in %DLQ%<group>.
//
// On the wire (code 10, request version 317, header fields as the official
// producer names them):
//
//	topic=%RETRY%<group> queueId=0 reconsumeTimes=<deliveries so far>
//	maxReconsumeTimes=16 properties=<the original's, with DELAY=<level>
//	and RETRY_TOPIC=<the original topic>> body=<the original body>
//
// The broker (4.9.4: reconsumeTimes >= maxReconsumeTimes goes to %DLQ%;
// 5.x: reconsumeTimes > maxReconsumeTimes, or a group holding orderly
// locks) stores the copy in the schedule topic for DELAY's level, then in
// %RETRY%<group>, with the header's reconsumeTimes as the message's own.
// The push consumer pulls it from there under its original topic, and
// [Message.Attempt] is reconsumeTimes+1, so the count survives restarts
// and rebalances. The copy goes to the broker that stored the original
// (its store host, the address the broker registers).
type retrySender struct {
	group string
	creds producer.Credentials

	mu     sync.Mutex
	idle   map[string][]*remoting.Conn // by broker address
	closed bool
}

func newRetrySender(group string, creds producer.Credentials) *retrySender {
	return &retrySender{group: group, creds: creds, idle: make(map[string][]*remoting.Conn)}
}

// send stores the retry copy of ext for the delivery after attempt, due
// after delay level level (0: at once). The original may be acknowledged
// only if send returns nil.
func (s *retrySender) send(ctx context.Context, ext *primitive.MessageExt, attempt, level int) error {
	if ext.StoreHost == "" {
		return errors.New("consumer: retry: message has no store host")
	}
	props := maps.Clone(ext.GetProperties())
	if props == nil {
		props = make(map[string]string)
	}
	for _, k := range []string{remoting.PropDelay, remoting.PropRealTopic, remoting.PropRealQueueID, "MIN_OFFSET",
		"MAX_OFFSET", "CONSUME_START_TIME", remoting.PropTransactionPrepared, remoting.PropProducerGroup,
		remoting.PropAttempt, remoting.PropCluster} {
		delete(props, k)
	}
	if props[remoting.PropRetryTopic] == "" {
		props[remoting.PropRetryTopic] = ext.Topic
	}
	if props[remoting.PropUniqKey] == "" && ext.MsgId != "" {
		props[remoting.PropUniqKey] = ext.MsgId
	}
	if level > 0 {
		props[remoting.PropDelay] = strconv.Itoa(level)
	}
	body, sysFlag := ext.Body, 0
	if ext.SysFlag&remoting.SysFlagCompressed != 0 {
		// Stored compressed (the client compresses large bodies): the copy
		// is too. Inflated, a body the broker took compressed may be past
		// its maxMessageSize, and the copy refused (MESSAGE_ILLEGAL) though
		// the message could be retried.
		body, sysFlag = compress(ext.Body), remoting.SysFlagCompressed
	}
	req := &remoting.Command{Code: remoting.ReqSendMessage, Body: body, ExtFields: map[string]string{
		"producerGroup":         s.group,
		"topic":                 "%RETRY%" + s.group,
		"defaultTopic":          "TBW102",
		"defaultTopicQueueNums": "4",
		"queueId":               "0",
		"sysFlag":               strconv.Itoa(sysFlag),
		"bornTimestamp":         strconv.FormatInt(time.Now().UnixMilli(), 10),
		"flag":                  strconv.Itoa(int(ext.Flag)),
		"properties":            remoting.EncodeProperties(props),
		"reconsumeTimes":        strconv.Itoa(attempt),
		"unitMode":              "false",
		"maxReconsumeTimes":     strconv.Itoa(maxBrokerRetries),
		"batch":                 "false",
	}}
	remoting.Sign(req, s.creds.AccessKey, s.creds.SecretKey, s.creds.SecurityToken)
	ctx, cancel := context.WithTimeout(ctx, retrySendTimeout)
	defer cancel()
	resp, err := s.invoke(ctx, ext.StoreHost, req)
	if err != nil {
		return fmt.Errorf("consumer: retry to %s: %w", ext.StoreHost, err)
	}
	if resp.Code == remoting.CodeMessageIllegal {
		return fmt.Errorf("%w: retry to %s: broker code %d: %s", errRetryRefused, ext.StoreHost, resp.Code, resp.Remark)
	}
	if resp.Code != remoting.CodeSuccess {
		return fmt.Errorf("consumer: retry to %s: broker code %d: %s", ext.StoreHost, resp.Code, resp.Remark)
	}
	return nil
}

// compress returns body zlib-compressed, at the level the official
// producer uses (5), as a broker stores a body whose sysFlag has
// [remoting.SysFlagCompressed] and the client inflates it.
func compress(body []byte) []byte {
	var b bytes.Buffer
	w, _ := zlib.NewWriterLevel(&b, 5) // a valid level: no error
	_, _ = w.Write(body)               // a bytes.Buffer takes every write
	_ = w.Close()
	return b.Bytes()
}

// errRetryRefused marks a retry copy the broker refused for the message
// itself (MESSAGE_ILLEGAL): sent again, it is refused again. The message
// it took the original for had properties near the broker's limit, and
// the retry's own (its topic, its delay, and the real topic and queue the
// broker adds to a delayed message) took them past it.
var errRetryRefused = errors.New("consumer: the broker refuses this message's retry copy")

// invoke runs req on an idle connection to addr, or a new one; a
// connection that failed is closed, one that answered is kept.
func (s *retrySender) invoke(ctx context.Context, addr string, req *remoting.Command) (*remoting.Command, error) {
	c, err := s.take(ctx, addr)
	if err != nil {
		return nil, err
	}
	resp, err := c.Invoke(ctx, req)
	if err != nil {
		_ = c.Close() // already failed; the request error is the one to report
		return nil, err
	}
	s.put(addr, c)
	return resp, nil
}

func (s *retrySender) take(ctx context.Context, addr string) (*remoting.Conn, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	if l := s.idle[addr]; len(l) > 0 {
		c := l[len(l)-1]
		s.idle[addr] = l[:len(l)-1]
		s.mu.Unlock()
		return c, nil
	}
	s.mu.Unlock()
	return remoting.Dial(ctx, addr)
}

// maxIdlePerBroker bounds the connections kept per broker.
const maxIdlePerBroker = 4

func (s *retrySender) put(addr string, c *remoting.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || len(s.idle[addr]) >= maxIdlePerBroker {
		_ = c.Close() // surplus connection, nothing to report
		return
	}
	s.idle[addr] = append(s.idle[addr], c)
}

// close closes the idle connections; calls after it fail with ErrClosed.
func (s *retrySender) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for _, l := range s.idle {
		for _, c := range l {
			_ = c.Close() // shutting down; nothing waits on these
		}
	}
	s.idle = nil
}
