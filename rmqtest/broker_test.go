package rmqtest_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"
	"go.uber.org/goleak"

	"github.com/seed157d4c4d/reliablemq/internal/remoting"
	"github.com/seed157d4c4d/reliablemq/rmqtest"
)

func invoke(t *testing.T, addr string, req *remoting.Command) *remoting.Command {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := remoting.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, err := c.Invoke(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestCloseLeaksNothing(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	b, err := rmqtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c, err := remoting.Dial(ctx, b.BrokerAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hb := `{"clientID":"x@1","producerDataSet":[],"consumerDataSet":[{"groupName":"G","subscriptionDataSet":[{"topic":"T","subString":"*"}]}]}`
	if resp, err := c.Invoke(ctx, &remoting.Command{Code: remoting.ReqHeartBeat, Body: []byte(hb)}); err != nil || resp.Code != 0 {
		t.Fatalf("heartbeat: %v %+v", err, resp)
	}
	b.CreateTopic("T", 1)
	// A pull on an empty queue is held; Close must not wait 20 s for it.
	if err := c.Send(&remoting.Command{Code: remoting.ReqPullMessage, ExtFields: map[string]string{
		"consumerGroup": "G", "topic": "T", "queueId": "0", "queueOffset": "0", "sysFlag": "2",
		"suspendTimeoutMillis": "20000", "maxMsgNums": "32"}}); err != nil {
		t.Fatal(err)
	}
	b.Inject(rmqtest.HeartBeat, rmqtest.Fault{Delay: time.Hour})
	c.Send(&remoting.Command{Code: remoting.ReqHeartBeat, Body: []byte(hb)})
	// The broker handles one connection's requests in order: once a later
	// request is answered, the held pull and the delayed heartbeat are in.
	if resp, err := c.Invoke(ctx, &remoting.Command{Code: remoting.ReqGetConsumerListByGroup,
		ExtFields: map[string]string{"consumerGroup": "G"}}); err != nil || resp.Code != 0 {
		t.Fatalf("barrier: %v %+v", err, resp)
	}
	start := time.Now()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("Close took %v", d)
	}
	if err := b.CreateTopic("U", 1); !errors.Is(err, rmqtest.ErrClosed) {
		t.Fatalf("CreateTopic after Close: %v", err)
	}
}

func TestMalformedInputIsRejectedNotFatal(t *testing.T) {
	t.Parallel()
	b := rmqtest.Run(t)
	cases := map[string][]byte{
		"huge length":     {0x7f, 0xff, 0xff, 0xff},
		"header past end": {0, 0, 0, 8, 0, 0, 0, 100, '{', '}', 0, 0},
		"bad json":        {0, 0, 0, 7, 0, 0, 0, 3, '{', 'x', '}'},
		"rocketmq codec":  {0, 0, 0, 6, 1, 0, 0, 2, 0, 0},
		"truncated":       {0, 0, 0, 50, 0, 0},
	}
	for name, raw := range cases {
		nc, err := net.Dial("tcp", b.BrokerAddr())
		if err != nil {
			t.Fatal(err)
		}
		nc.Write(raw)
		if c, ok := nc.(*net.TCPConn); ok {
			c.CloseWrite()
		}
		nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		var buf [1]byte
		if _, err := nc.Read(buf[:]); err == nil {
			t.Errorf("%s: broker answered a malformed frame", name)
		}
		nc.Close()
	}
	// Unknown codes and bad bodies get error replies; the broker keeps serving.
	if resp := invoke(t, b.BrokerAddr(), &remoting.Command{Code: 9999}); resp.Code != remoting.CodeRequestNotSupported {
		t.Fatalf("unknown code: %+v", resp)
	}
	if resp := invoke(t, b.BrokerAddr(), &remoting.Command{Code: remoting.ReqHeartBeat, Body: []byte("{")}); resp.Code != remoting.CodeSystemError {
		t.Fatalf("bad heartbeat: %+v", resp)
	}
	if resp := invoke(t, b.BrokerAddr(), &remoting.Command{Code: remoting.ReqSendBatchMessage,
		ExtFields: map[string]string{"b": "T", "c": "TBW102", "d": "4"}, Body: []byte{0, 0, 0, 30, 1}}); resp.Code != remoting.CodeMessageIllegal {
		t.Fatalf("bad batch: %+v", resp)
	}
	big := make([]byte, 4<<20+1)
	if resp := invoke(t, b.BrokerAddr(), &remoting.Command{Code: remoting.ReqSendMessage,
		ExtFields: map[string]string{"topic": "Big", "defaultTopic": "TBW102", "defaultTopicQueueNums": "4"}, Body: big}); resp.Code != remoting.CodeMessageIllegal {
		t.Fatalf("oversized body: %+v", resp)
	}
	if resp := invoke(t, b.NamesrvAddr(), &remoting.Command{Code: remoting.ReqGetRouteInfoByTopic,
		ExtFields: map[string]string{"topic": "TBW102"}}); resp.Code != 0 {
		t.Fatalf("broker stopped serving: %+v", resp)
	}
}

func TestFaultDropReplyDuplicates(t *testing.T) {
	t.Parallel()
	env, b, topic := embeddedTopic(t, 1)
	p := newProducer(t, env, producer.WithRetry(1))
	b.Inject(rmqtest.SendMessage, rmqtest.Fault{DropReply: true})
	// The first attempt is stored but its reply is lost; the client times
	// out (3 s) and retries: the broker now holds two copies.
	r, err := p.SendSync(context.Background(), primitive.NewMessage(topic, []byte("once")))
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	msgs := b.Messages(topic)
	if len(msgs) != 2 || msgs[0].MsgID != r.MsgID || msgs[1].MsgID != r.MsgID {
		t.Fatalf("stored %d copies (%v), want 2 with msgId %s", len(msgs), msgs, r.MsgID)
	}
}

func TestFaultResponseCode(t *testing.T) {
	t.Parallel()
	env, b, topic := embeddedTopic(t, 1)
	p := newProducer(t, env, producer.WithRetry(2))
	b.Inject(rmqtest.SendMessage, rmqtest.Fault{Times: 3, Code: rmqtest.CodeServiceNotAvailable, Remark: "injected"})
	_, err := p.SendSync(context.Background(), primitive.NewMessage(topic, []byte("x")))
	if err == nil || !strings.Contains(err.Error(), "injected") {
		t.Fatalf("send under 3 injected failures with 2 retries: %v", err)
	}
	if n := len(b.Messages(topic)); n != 0 {
		t.Fatalf("a refused send was stored: %d messages", n)
	}
	if _, err := p.SendSync(context.Background(), primitive.NewMessage(topic, []byte("y"))); err != nil {
		t.Fatalf("send after the fault: %v", err)
	}
}

func TestFaultDelay(t *testing.T) {
	t.Parallel()
	_, b, topic := embeddedTopic(t, 1)
	resp := invoke(t, b.NamesrvAddr(), &remoting.Command{Code: remoting.ReqGetRouteInfoByTopic, ExtFields: map[string]string{"topic": topic}})
	if resp.Code != 0 {
		t.Fatal(resp.Remark)
	}
	b.Inject(rmqtest.GetRouteInfo, rmqtest.Fault{Delay: 300 * time.Millisecond})
	start := time.Now()
	invoke(t, b.NamesrvAddr(), &remoting.Command{Code: remoting.ReqGetRouteInfoByTopic, ExtFields: map[string]string{"topic": topic}})
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("delayed reply came after %v", d)
	}
}

func TestDownUpKeepsStore(t *testing.T) {
	t.Parallel()
	env, b, topic := embeddedTopic(t, 1)
	p := newProducer(t, env, producer.WithRetry(0))
	if _, err := p.SendSync(context.Background(), primitive.NewMessage(topic, []byte("before"))); err != nil {
		t.Fatal(err)
	}
	if err := b.Down(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.SendSync(context.Background(), primitive.NewMessage(topic, []byte("during"))); err == nil {
		t.Fatal("send succeeded while the broker was down")
	}
	if err := b.Up(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.SendSync(context.Background(), primitive.NewMessage(topic, []byte("after"))); err != nil {
		t.Fatalf("send after Up: %v", err)
	}
	var bodies []string
	for _, m := range b.Messages(topic) {
		bodies = append(bodies, string(m.Body))
	}
	if strings.Join(bodies, ",") != "before,after" {
		t.Fatalf("store after outage: %v", bodies)
	}
}

func TestOrderlyLockOwnershipAndExpiry(t *testing.T) {
	t.Parallel()
	b := rmqtest.Run(t)
	lock := func(client string) string {
		body := fmt.Sprintf(`{"consumerGroup":"G","clientId":%q,"mqSet":[{"topic":"T","brokerName":"broker-a","queueId":0}]}`, client)
		resp := invoke(t, b.BrokerAddr(), &remoting.Command{Code: remoting.ReqLockBatchMQ, Body: []byte(body)})
		return string(resp.Body)
	}
	const granted = `{"lockOKMQSet":[{"topic":"T","brokerName":"broker-a","queueId":0}]}`
	const refused = `{"lockOKMQSet":[]}`
	if got := lock("A"); got != granted {
		t.Fatalf("A's first lock: %s", got)
	}
	if got := lock("B"); got != refused {
		t.Fatalf("B locked a queue A holds: %s", got)
	}
	if got := lock("A"); got != granted {
		t.Fatalf("A's renewal: %s", got)
	}
	b.Advance(59 * time.Second)
	if got := lock("B"); got != refused {
		t.Fatalf("B locked before A's lock expired: %s", got)
	}
	b.Advance(2 * time.Second)
	if got := lock("B"); got != granted {
		t.Fatalf("B could not take an expired lock: %s", got)
	}
	unlock := `{"consumerGroup":"G","clientId":"B","mqSet":[{"topic":"T","brokerName":"broker-a","queueId":0}]}`
	invoke(t, b.BrokerAddr(), &remoting.Command{Code: remoting.ReqUnlockBatchMQ, Body: []byte(unlock)})
	if got := lock("A"); got != granted {
		t.Fatalf("A could not lock after B unlocked: %s", got)
	}
}
