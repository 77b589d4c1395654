package producer_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/orderly"
	"github.com/seed157d4c4d/reliablemq/producer"
	"github.com/seed157d4c4d/reliablemq/rmqtest"
	"go.uber.org/goleak"
)

func newProducer(t testing.TB, env *testenv.RocketMQ, opts ...producer.Option) *producer.Producer {
	t.Helper()
	p, err := producer.New(env.NameServers(), opts...)
	if err != nil {
		t.Fatalf("new producer: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return p
}

// embeddedProducer starts rmqtest (skipping on a real cluster: the test
// needs its faults or clock), a topic with the given queues, and a producer.
func embeddedProducer(t *testing.T, queues int, opts ...producer.Option) (*rmqtest.Broker, string, *producer.Producer) {
	t.Helper()
	env := testenv.NewRocketMQ(t)
	b := env.RequireEmbedded(t)
	topic := testenv.Name(t, "T")
	env.CreateTopic(t, topic, queues)
	return b, topic, newProducer(t, env, opts...)
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestSendDeliversKeysTagAndProperties(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t)
	topic := testenv.Name(t, "T")
	env.CreateTopic(t, topic, 4)
	p := newProducer(t, env)
	res, err := p.Send(ctxT(t), producer.Message{
		Topic: topic, Body: []byte("hello"), Keys: []string{"order-1", "user-9"}, Tag: "paid",
		Properties: map[string]string{"trace": "abc"},
	})
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	if res.MsgID == "" || res.OffsetMsgID == "" || res.Attempts != 1 {
		t.Fatalf("result %+v: want ids and 1 attempt", res)
	}
	b := env.RequireEmbedded(t)
	got := b.Messages(topic)
	if len(got) != 1 {
		t.Fatalf("stored %d messages, want 1", len(got))
	}
	m := got[0]
	if m.MsgID != res.MsgID || strings.Join(m.Keys, ",") != "order-1,user-9" || m.Tags != "paid" ||
		m.Properties["trace"] != "abc" || string(m.Body) != "hello" || m.QueueID != res.Queue {
		t.Fatalf("stored %+v, result %+v", m, res)
	}
}

func TestShardingKeyPicksOneStableQueue(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t)
	topic := testenv.Name(t, "T")
	env.CreateTopic(t, topic, 8)
	p := newProducer(t, env, producer.WithOrderedTopics(topic))
	ctx := ctxT(t)
	queues := map[string]map[int]bool{}
	used := map[int]bool{}
	for step := range 5 {
		for order := range 20 {
			key := "order-" + string(rune('a'+order))
			res, err := p.Send(ctx, producer.Message{Topic: topic, Body: []byte{byte(step)}, ShardingKey: key})
			if err != nil {
				t.Fatalf("send: %v", err)
			}
			if queues[key] == nil {
				queues[key] = map[int]bool{}
			}
			queues[key][res.Queue] = true
			used[res.Queue] = true
			if want := orderly.QueueIndex(key, 8); res.Queue != want {
				t.Fatalf("key %s went to queue %d, want %d", key, res.Queue, want)
			}
		}
	}
	for key, qs := range queues {
		if len(qs) != 1 {
			t.Errorf("key %s spread over queues %v", key, qs)
		}
	}
	if len(used) < 4 {
		t.Errorf("20 keys used only %d of 8 queues", len(used))
	}
}

func TestInvalidMessagesAreRefusedBeforeSending(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t)
	topic := testenv.Name(t, "T")
	p := newProducer(t, env, producer.WithOrderedTopics("ordered"), producer.WithMaxBodySize(16))
	ctx := ctxT(t)
	cases := []struct {
		name string
		msg  producer.Message
		want error
	}{
		{"empty topic", producer.Message{Body: []byte("x")}, producer.ErrInvalidMessage},
		{"bad topic", producer.Message{Topic: "a b", Body: []byte("x")}, producer.ErrInvalidMessage},
		{"empty body", producer.Message{Topic: topic}, producer.ErrInvalidMessage},
		{"oversized body", producer.Message{Topic: topic, Body: make([]byte, 17)}, producer.ErrInvalidMessage},
		{"key with space", producer.Message{Topic: topic, Body: []byte("x"), Keys: []string{"a b"}}, producer.ErrInvalidMessage},
		{"empty key", producer.Message{Topic: topic, Body: []byte("x"), Keys: []string{""}}, producer.ErrInvalidMessage},
		{"invalid UTF-8 key", producer.Message{Topic: topic, Body: []byte("x"), Keys: []string{"k\xff"}}, producer.ErrInvalidMessage},
		{"invalid UTF-8 property", producer.Message{Topic: topic, Body: []byte("x"), Properties: map[string]string{"a": "\xfe"}}, producer.ErrInvalidMessage},
		{"reserved property", producer.Message{Topic: topic, Body: []byte("x"), Properties: map[string]string{"KEYS": "k"}}, producer.ErrInvalidMessage},
		{"separator in property", producer.Message{Topic: topic, Body: []byte("x"), Properties: map[string]string{"a": "b\x01c"}}, producer.ErrInvalidMessage},
		{"negative delay", producer.Message{Topic: topic, Body: []byte("x"), Delay: -time.Second}, producer.ErrInvalidMessage},
		{"delay too long", producer.Message{Topic: topic, Body: []byte("x"), Delay: 3 * time.Hour}, producer.ErrDelayTooLong},
		{"ordered topic without key", producer.Message{Topic: "ordered", Body: []byte("x")}, producer.ErrNoShardingKey},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := p.Send(ctx, c.msg)
			if !errors.Is(err, c.want) || !producer.IsPermanent(err) {
				t.Fatalf("err = %v, want %v and permanent", err, c.want)
			}
		})
	}
	t.Run("ordered batch", func(t *testing.T) {
		_, err := p.SendBatch(ctx, []producer.Message{{Topic: topic, Body: []byte("x"), ShardingKey: "k"}})
		if !errors.Is(err, producer.ErrNoShardingKey) {
			t.Fatalf("err = %v, want ErrNoShardingKey", err)
		}
	})
	t.Run("batch past the limit with its headers", func(t *testing.T) {
		// 10 bytes of bodies, under the 16 of the limit; the broker counts
		// each message's header and properties too.
		_, err := p.SendBatch(ctx, []producer.Message{{Topic: topic, Body: []byte("12345")}, {Topic: topic, Body: []byte("12345")}})
		if !errors.Is(err, producer.ErrInvalidMessage) || !producer.IsPermanent(err) {
			t.Fatalf("err = %v, want ErrInvalidMessage and permanent", err)
		}
	})
	t.Run("mixed batch", func(t *testing.T) {
		_, err := p.SendBatch(ctx, []producer.Message{{Topic: topic, Body: []byte("x")}, {Topic: topic + "x", Body: []byte("y")}})
		if !errors.Is(err, producer.ErrInvalidMessage) {
			t.Fatalf("err = %v, want ErrInvalidMessage", err)
		}
	})
	if b := env.Embedded; b != nil && len(b.Messages(topic)) != 0 {
		t.Fatalf("an invalid message was stored")
	}
}

func TestDelayMapsToTheSmallestLevelNotBelow(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t)
	p := newProducer(t, env)
	cases := []struct {
		d    time.Duration
		want int
	}{
		{0, 0}, {time.Nanosecond, 1}, {time.Second, 1}, {1001 * time.Millisecond, 2}, {30 * time.Second, 4},
		{31 * time.Second, 5}, {30 * time.Minute, 16}, {2 * time.Hour, 18},
	}
	for _, c := range cases {
		got, err := p.DelayLevel(c.d)
		if err != nil || got != c.want {
			t.Errorf("DelayLevel(%v) = %d, %v; want %d", c.d, got, err, c.want)
		}
	}
	if _, err := p.DelayLevel(2*time.Hour + 1); !errors.Is(err, producer.ErrDelayTooLong) ||
		strings.Count(err.Error(), "largest delay level") != 1 {
		t.Errorf("DelayLevel(2h+1ns) err = %v, want ErrDelayTooLong saying so once", err)
	}
}

func TestDelayedSendIsHeldUntilItsLevel(t *testing.T) {
	t.Parallel()
	b, topic, p := embeddedProducer(t, 1)
	if _, err := p.Send(ctxT(t), producer.Message{Topic: topic, Body: []byte("x"), Delay: 25 * time.Second}); err != nil {
		t.Fatalf("send: %v", err)
	}
	if n := len(b.Messages(topic)); n != 0 {
		t.Fatalf("delayed message visible at once (%d)", n)
	}
	b.Advance(29 * time.Second)
	if n := len(b.Messages(topic)); n != 0 {
		t.Fatalf("25 s delay (level 30 s) visible after 29 s")
	}
	b.Advance(2 * time.Second)
	if n := len(b.Messages(topic)); n != 1 {
		t.Fatalf("delayed message not delivered after its level: %d", n)
	}
}

func TestLostReplyIsOutcomeUnknownAndNotRetried(t *testing.T) {
	t.Parallel()
	b, topic, p := embeddedProducer(t, 2, producer.WithSendTimeout(300*time.Millisecond))
	b.Inject(rmqtest.SendMessage, rmqtest.Fault{DropReply: true})
	_, err := p.Send(ctxT(t), producer.Message{Topic: topic, Body: []byte("x"), Keys: []string{"k1"}})
	var se *producer.SendError
	if !errors.As(err, &se) || se.Outcome != producer.OutcomeUnknown || se.Attempts != 1 || se.MsgID == "" {
		t.Fatalf("err = %v, want one attempt with outcome unknown", err)
	}
	got := b.Messages(topic)
	if len(got) != 1 || got[0].MsgID != se.MsgID {
		t.Fatalf("stored %d messages; want exactly the one whose ack was lost", len(got))
	}
}

func TestCtxDeadlineWhileWaitingIsOutcomeUnknown(t *testing.T) {
	t.Parallel()
	b, topic, p := embeddedProducer(t, 1)
	if _, err := p.Send(ctxT(t), producer.Message{Topic: topic, Body: []byte("warm")}); err != nil {
		t.Fatalf("warm-up send: %v", err)
	}
	b.Inject(rmqtest.SendMessage, rmqtest.Fault{Delay: time.Second})
	ctx, cancel := context.WithTimeout(ctxT(t), 200*time.Millisecond)
	defer cancel()
	_, err := p.Send(ctx, producer.Message{Topic: topic, Body: []byte("x")})
	if !producer.IsOutcomeUnknown(err) {
		t.Fatalf("err = %v, want outcome unknown", err)
	}
	cancelled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	_, err = p.Send(cancelled, producer.Message{Topic: topic, Body: []byte("y")})
	if !errors.Is(err, context.Canceled) || !producer.IsRetryable(err) {
		t.Fatalf("send on a cancelled ctx: %v, want context.Canceled, transient", err)
	}
	waitStored(t, b, topic, 2) // the delayed one is stored; "y" never is
}

func waitStored(t *testing.T, b *rmqtest.Broker, topic string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(b.Messages(topic)) < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := len(b.Messages(topic)); got != n {
		t.Fatalf("stored %d messages, want %d", got, n)
	}
}

func TestTransientRefusalIsRetriedWithTheSameMsgID(t *testing.T) {
	t.Parallel()
	b, topic, p := embeddedProducer(t, 1, producer.WithRetryBackoff(time.Millisecond))
	b.Inject(rmqtest.SendMessage, rmqtest.Fault{Times: 2, Code: rmqtest.CodeServiceNotAvailable, Remark: "busy"})
	res, err := p.Send(ctxT(t), producer.Message{Topic: topic, Body: []byte("x")})
	if err != nil || res.Attempts != 3 {
		t.Fatalf("send: %+v, %v; want success on attempt 3", res, err)
	}
	got := b.Messages(topic)
	if len(got) != 1 || got[0].MsgID != res.MsgID {
		t.Fatalf("stored %d copies, want 1 with msgId %s", len(got), res.MsgID)
	}

	b.Inject(rmqtest.SendMessage, rmqtest.Fault{Times: 3, Code: rmqtest.CodeServiceNotAvailable})
	_, err = p.Send(ctxT(t), producer.Message{Topic: topic, Body: []byte("y")})
	var se *producer.SendError
	if !errors.As(err, &se) || se.Outcome != producer.Transient || se.Attempts != 3 || se.Code != rmqtest.CodeServiceNotAvailable {
		t.Fatalf("err = %v, want transient after 3 attempts with code 14", err)
	}
}

func TestPermanentRefusalIsNotRetried(t *testing.T) {
	t.Parallel()
	b, topic, p := embeddedProducer(t, 1, producer.WithRetryBackoff(time.Millisecond))
	for _, code := range []int{rmqtest.CodeNoPermission, rmqtest.CodeMessageIllegal} {
		b.Inject(rmqtest.SendMessage, rmqtest.Fault{Code: code})
		_, err := p.Send(ctxT(t), producer.Message{Topic: topic, Body: []byte("x")})
		var se *producer.SendError
		if !errors.As(err, &se) || se.Outcome != producer.Permanent || se.Attempts != 1 {
			t.Fatalf("code %d: err = %v, want permanent after 1 attempt", code, err)
		}
	}
	if n := len(b.Messages(topic)); n != 0 {
		t.Fatalf("stored %d", n)
	}
}

func TestWeakDurabilityIsReportedDistinctly(t *testing.T) {
	t.Parallel()
	b, topic, p := embeddedProducer(t, 1)
	b.Inject(rmqtest.SendMessage, rmqtest.Fault{Code: rmqtest.CodeFlushDiskTimeout})
	res, err := p.Send(ctxT(t), producer.Message{Topic: topic, Body: []byte("x")})
	if !producer.IsNotDurable(err) || res.MsgID == "" {
		t.Fatalf("err = %v, result %+v: want not durable with the message id", err, res)
	}
}

func TestBrokerDownIsTransientAndLeaksNothing(t *testing.T) {
	defer goleak.VerifyNone(t, append(testenv.ClientLeakOptions(), goleak.IgnoreCurrent())...)
	b, err := rmqtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	topic := testenv.Name(t, "T")
	if err := b.CreateTopic(topic, 1); err != nil {
		t.Fatal(err)
	}
	p, err := producer.New([]string{b.NamesrvAddr()}, producer.WithRetryBackoff(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Send(ctxT(t), producer.Message{Topic: topic, Body: []byte("x")}); err != nil {
		t.Fatalf("send: %v", err)
	}
	if err := b.Down(); err != nil {
		t.Fatal(err)
	}
	_, err = p.Send(ctxT(t), producer.Message{Topic: topic, Body: []byte("y")})
	if !producer.IsRetryable(err) {
		t.Fatalf("send to a stopped broker: %v, want transient", err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Send(ctxT(t), producer.Message{Topic: topic, Body: []byte("z")}); !errors.Is(err, producer.ErrClosed) {
		t.Fatalf("send after close: %v", err)
	}
	if err := b.Up(); err != nil {
		t.Fatal(err)
	}
}

func TestCloseIsIdempotentAndWaitsForSends(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t)
	b := env.RequireEmbedded(t)
	topic := testenv.Name(t, "T")
	env.CreateTopic(t, topic, 1)
	p, err := producer.New(env.NameServers())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Send(ctxT(t), producer.Message{Topic: topic, Body: []byte("warm")}); err != nil {
		t.Fatal(err)
	}
	b.Inject(rmqtest.SendMessage, rmqtest.Fault{Delay: 300 * time.Millisecond})
	sent := make(chan error, 1)
	go func() {
		_, err := p.Send(ctxT(t), producer.Message{Topic: topic, Body: []byte("slow")})
		sent <- err
	}()
	waitStored(t, b, topic, 2) // the slow send is in flight: stored, reply held
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			if err := p.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
		})
	}
	wg.Wait()
	select {
	case err := <-sent:
		if err != nil {
			t.Fatalf("in-flight send: %v", err)
		}
	default:
		t.Fatal("Close returned before the in-flight send finished")
	}
}

// TestQueueChangesNameTheBareTopic: in a namespace the client's selector
// sees "ns%topic"; a queue count change is reported (to
// WithQueueCountChange and the log) under the bare topic, as messages,
// results and errors name it.
func TestQueueChangesNameTheBareTopic(t *testing.T) {
	t.Parallel()
	var changes []orderly.QueueCountChange
	logs := &testenv.Logs{}
	sel, err := producer.QueueSelector(producer.WithNamespace("prod"), producer.WithLogger(logs.Logger()),
		producer.WithQueueCountChange(func(ch orderly.QueueCountChange) { changes = append(changes, ch) }))
	if err != nil {
		t.Fatal(err)
	}
	queues := func(n int) []*primitive.MessageQueue {
		var mqs []*primitive.MessageQueue
		for i := range n {
			mqs = append(mqs, &primitive.MessageQueue{Topic: "prod%orders", BrokerName: "broker-a", QueueId: i})
		}
		return mqs
	}
	m := primitive.NewMessage("prod%orders", []byte("b"))
	m.WithShardingKey("order-1")
	sel.Select(m, queues(2), "")
	sel.Select(m, queues(4), "")
	if len(changes) != 1 || changes[0].Topic != "orders" || changes[0].Old != 2 || changes[0].New != 4 {
		t.Fatalf("changes %+v; want one from 2 to 4 queues of the bare topic orders", changes)
	}
	if l := logs.String(); !strings.Contains(l, "topic=orders ") {
		t.Errorf("the change was not logged under the bare topic: %s", l)
	}
}

// TestConnectionErrorsBeforeOrDuringTheWriteAreTransient pins a fix found
// in CI: the broker closed the connection just as a send set its write
// deadline ("set tcp ...: use of closed network connection"), before any
// byte of the frame went out, and the send was reported as of unknown
// outcome. A dial, a deadline or a write that fails stored nothing; a
// read that fails after the write may have.
func TestConnectionErrorsBeforeOrDuringTheWriteAreTransient(t *testing.T) {
	closed := errors.New("use of closed network connection")
	for op, want := range map[string]producer.Outcome{
		"dial": producer.Transient, "set": producer.Transient, "write": producer.Transient, "read": producer.OutcomeUnknown,
	} {
		err := fmt.Errorf("send: %w", &net.OpError{Op: op, Net: "tcp", Err: closed})
		if got := producer.Classify(err); got != want {
			t.Errorf("%s failed: %v, want %v", op, got, want)
		}
	}
}
