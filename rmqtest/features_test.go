package rmqtest_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/rmqtest"
)

func TestRetryUntilDLQ(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t)
	b := env.RequireEmbedded(t)
	topic, group := testenv.Name(t, "T"), testenv.Name(t, "CG")
	env.CreateTopic(t, topic, 1)
	env.CreateTopic(t, "%RETRY%"+group, 1) // routed at start, not at the 30 s refresh
	p := newProducer(t, env)
	sent := sendSync(t, p, primitive.NewMessage(topic, []byte("poison")).WithKeys([]string{"order-1"}))

	var mu sync.Mutex
	var deliveries []*primitive.MessageExt
	arrived := make(chan struct{}, 8)
	startConsumer(t, env, consumerCfg{group: group, topic: topic, opts: []consumer.Option{consumer.WithMaxReconsumeTimes(2)}},
		func(ctx context.Context, msgs ...*primitive.MessageExt) (consumer.ConsumeResult, error) {
			mu.Lock()
			deliveries = append(deliveries, msgs...)
			mu.Unlock()
			arrived <- struct{}{}
			return consumer.ConsumeRetryLater, nil
		})
	// Max 2 reconsumes = 3 deliveries; the retries wait delay levels 3
	// and 4 (10 s, 30 s) on the broker's clock, which moves a second per
	// poll (a single jump could come before the send-back is stored, and
	// its copy would never come due).
	for i := range 3 {
		env.Eventually(t, fmt.Sprintf("delivery %d", i+1), waitFor, func() bool {
			select {
			case <-arrived:
				return true
			default:
				return false
			}
		})
		if n := len(b.Messages("%RETRY%" + group)); n < i {
			t.Fatalf("delivery %d with %d retry copies stored", i+1, n)
		}
	}
	waitUntil(t, "the message reaches the DLQ", func() bool { return len(b.Messages("%DLQ%"+group)) == 1 })
	mu.Lock()
	for i, m := range deliveries {
		if m.MsgId != sent.MsgID || m.GetKeys() != "order-1" || string(m.Body) != "poison" || m.Topic != topic || int(m.ReconsumeTimes) != i {
			t.Errorf("delivery %d: msgId %s keys %q body %q topic %s reconsume %d", i, m.MsgId, m.GetKeys(), m.Body, m.Topic, m.ReconsumeTimes)
		}
	}
	mu.Unlock()
	dlq := b.Messages("%DLQ%" + group)[0]
	if dlq.MsgID != sent.MsgID || dlq.ReconsumeTimes != 3 || dlq.Properties["RETRY_TOPIC"] != topic || dlq.Properties["ORIGIN_MESSAGE_ID"] != sent.OffsetMsgID {
		t.Fatalf("DLQ copy: %+v", dlq)
	}
	// 4.9.4 and 5.x create the DLQ read-write (older 4.x write-only: see
	// WithWriteOnlyDLQ and deadletter's drain tests).
	if perm, _ := b.TopicPerm("%DLQ%" + group); perm != 6 {
		t.Fatalf("DLQ perm %d, want 6", perm)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(deliveries) != 3 {
		t.Fatalf("%d deliveries, want 3", len(deliveries))
	}
}

func TestDelayLevelNotDeliveredEarly(t *testing.T) {
	t.Parallel()
	env, b, topic := embeddedTopic(t, 1)
	p := newProducer(t, env)
	c := newCollector()
	startConsumer(t, env, consumerCfg{group: testenv.Name(t, "CG"), topic: topic}, c.listener)
	m := primitive.NewMessage(topic, []byte("later"))
	m.WithDelayTimeLevel(3) // 10 s
	sendSync(t, p, m)
	b.Advance(9 * time.Second)
	if n := len(b.Messages(topic)); n != 0 {
		t.Fatalf("delivered %d messages after 9 s of a 10 s delay", n)
	}
	b.Advance(time.Second)
	got := c.waitCount(t, 1)[0]
	if got.GetProperty("DELAY") != "3" || got.GetProperty("REAL_TOPIC") != topic || got.GetProperty("REAL_QID") != "0" {
		t.Fatalf("delivered copy properties: %v", got.GetProperties())
	}
}

func TestOrderlySuspendKeepsOrder(t *testing.T) {
	t.Parallel()
	env, topic := newTopic(t, 2)
	p := newProducer(t, env, producer.WithQueueSelector(producer.NewHashQueueSelector()))
	for i := 0; i < 3; i++ {
		sendSync(t, p, primitive.NewMessage(topic, []byte(fmt.Sprint(i))).WithShardingKey("order-7"))
	}
	var mu sync.Mutex
	var seen []string
	failures := 0
	done := make(chan struct{})
	startConsumer(t, env, consumerCfg{group: testenv.Name(t, "CG"), topic: topic, opts: []consumer.Option{consumer.WithConsumerOrder(true)}},
		func(ctx context.Context, msgs ...*primitive.MessageExt) (consumer.ConsumeResult, error) {
			mu.Lock()
			defer mu.Unlock()
			m := msgs[0]
			seen = append(seen, fmt.Sprintf("%s/%d", m.Body, m.ReconsumeTimes))
			if string(m.Body) == "0" && failures < 2 {
				failures++
				oc, _ := primitive.GetOrderlyCtx(ctx)
				oc.SuspendCurrentQueueTimeMillis = 10
				return consumer.SuspendCurrentQueueAMoment, nil
			}
			if string(m.Body) == "2" {
				close(done)
			}
			return consumer.ConsumeSuccess, nil
		})
	select {
	case <-done:
	case <-time.After(waitFor):
		t.Fatal("orderly consumer did not finish")
	}
	mu.Lock()
	defer mu.Unlock()
	if got := fmt.Sprint(seen); got != "[0/0 0/1 0/2 1/0 2/0]" {
		t.Fatalf("orderly deliveries %s", got)
	}
}

type txListener struct{}

func (txListener) ExecuteLocalTransaction(m *primitive.Message) primitive.LocalTransactionState {
	switch string(m.Body) {
	case "commit":
		return primitive.CommitMessageState
	case "rollback":
		return primitive.RollbackMessageState
	}
	return primitive.UnknowState
}

func (txListener) CheckLocalTransaction(m *primitive.MessageExt) primitive.LocalTransactionState {
	return primitive.CommitMessageState
}

func TestTransactionCommitRollbackCheckBack(t *testing.T) {
	t.Parallel()
	env, b, topic := embeddedTopic(t, 1)
	tp, err := rocketmq.NewTransactionProducer(txListener{}, producer.WithNameServer(env.NameServers()),
		producer.WithGroupName(testenv.Name(t, "TPG")), producer.WithInstanceName(testenv.Name(t, "tp")))
	if err != nil {
		t.Fatal(err)
	}
	if err := tp.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Shutdown() })
	for _, body := range []string{"commit", "rollback", "unknown"} {
		if _, err := tp.SendMessageInTransaction(context.Background(), primitive.NewMessage(topic, []byte(body))); err != nil {
			t.Fatalf("send %s: %v", body, err)
		}
	}
	c := newCollector()
	startConsumer(t, env, consumerCfg{group: testenv.Name(t, "CG"), topic: topic}, c.listener)
	if got := c.waitCount(t, 1); string(got[0].Body) != "commit" || got[0].SysFlag&8 == 0 {
		t.Fatalf("first delivery %q sysFlag %d", got[0].Body, got[0].SysFlag)
	}
	// The broker checks the undecided one back after 6 s; the producer's
	// checker commits it. The heartbeat that registers the producer group
	// comes within a second of start.
	waitUntil(t, "the unknown message is checked back and committed", func() bool {
		b.Advance(6 * time.Second)
		return len(b.Messages(topic)) == 2
	})
	if got := sortedBodies(c.waitCount(t, 2)); got != "commit,unknown" {
		t.Fatalf("delivered %s, want commit,unknown (never rollback)", got)
	}
}

// TestSendBackRejectedLosesMessage shows the client bug the consumer
// wrapper must defend against: when the broker answers
// CONSUMER_SEND_MSG_BACK with an error code, the client v2.1.2 counts the
// message as consumed anyway. Nothing reaches the retry topic and the
// offset moves past it.
func TestSendBackRejectedLosesMessage(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t)
	b := env.RequireEmbedded(t)
	topic, group := testenv.Name(t, "T"), testenv.Name(t, "CG")
	env.CreateTopic(t, topic, 1)
	p := newProducer(t, env)
	b.Inject(rmqtest.ConsumerSendMsgBack, rmqtest.Fault{Code: rmqtest.CodeSystemError, Remark: "injected"})
	sendSync(t, p, primitive.NewMessage(topic, []byte("doomed")))
	calls := make(chan struct{}, 4)
	startConsumer(t, env, consumerCfg{group: group, topic: topic},
		func(ctx context.Context, msgs ...*primitive.MessageExt) (consumer.ConsumeResult, error) {
			calls <- struct{}{}
			return consumer.ConsumeRetryLater, nil
		})
	<-calls
	waitUntil(t, "the offset moves past the failed message", func() bool { return env.ConsumerOffset(t, group, topic, 0) == 1 })
	b.Advance(time.Hour)
	if n := len(b.Messages("%RETRY%" + group)); n != 0 {
		t.Fatalf("%d retry copies, want 0 (the rejected send-back is dropped)", n)
	}
}

// TestFaultDelayWithClient: a late send reply within the client's 3 s
// timeout is a success; held pull replies only postpone delivery.
func TestFaultDelayWithClient(t *testing.T) {
	t.Parallel()
	env, b, topic := embeddedTopic(t, 1)
	p := newProducer(t, env, producer.WithRetry(0))
	b.Inject(rmqtest.SendMessage, rmqtest.Fault{Delay: time.Second})
	start := time.Now()
	sendSync(t, p, primitive.NewMessage(topic, []byte("late ack")))
	if d := time.Since(start); d < time.Second {
		t.Fatalf("send returned after %v, before the delayed reply", d)
	}
	b.Inject(rmqtest.PullMessage, rmqtest.Fault{Times: 2, Delay: 2 * time.Second})
	c := newCollector()
	startConsumer(t, env, consumerCfg{group: testenv.Name(t, "CG"), topic: topic}, c.listener)
	if got := c.waitCount(t, 1); string(got[0].Body) != "late ack" {
		t.Fatalf("delivered %q", got[0].Body)
	}
}
