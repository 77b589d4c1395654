package rmqtest_test

import (
	"context"
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

// waitFor is how long a test waits for a delivery. Held pulls are answered
// within milliseconds of a store; only a rebalance (20 s client timer) or a
// retry route refresh can take longer.
const waitFor = 30 * time.Second

func newProducer(t testing.TB, env *testenv.RocketMQ, opts ...producer.Option) rocketmq.Producer {
	t.Helper()
	base := []producer.Option{
		producer.WithNameServer(env.NameServers()),
		producer.WithGroupName(testenv.Name(t, "PG")),
		producer.WithInstanceName(testenv.Name(t, "p")),
	}
	p, err := rocketmq.NewProducer(append(base, opts...)...)
	if err != nil {
		t.Fatalf("new producer: %v", err)
	}
	if err := p.Start(); err != nil {
		t.Fatalf("start producer: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Shutdown(); err != nil {
			t.Errorf("producer shutdown: %v", err)
		}
	})
	return p
}

// collector records what a listener received.
type collector struct {
	mu   sync.Mutex
	msgs []*primitive.MessageExt
	ch   chan struct{}
}

func newCollector() *collector { return &collector{ch: make(chan struct{}, 1)} }

func (c *collector) listener(ctx context.Context, msgs ...*primitive.MessageExt) (consumer.ConsumeResult, error) {
	c.mu.Lock()
	c.msgs = append(c.msgs, msgs...)
	c.mu.Unlock()
	select {
	case c.ch <- struct{}{}:
	default:
	}
	return consumer.ConsumeSuccess, nil
}

func (c *collector) snapshot() []*primitive.MessageExt {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*primitive.MessageExt(nil), c.msgs...)
}

// waitCount waits until at least n messages arrived, or fails the test.
func (c *collector) waitCount(t *testing.T, n int) []*primitive.MessageExt {
	t.Helper()
	deadline := time.NewTimer(waitFor)
	defer deadline.Stop()
	for {
		if got := c.snapshot(); len(got) >= n {
			return got
		}
		select {
		case <-c.ch:
		case <-deadline.C:
			t.Fatalf("received %d messages, want %d", len(c.snapshot()), n)
		}
	}
}

type consumerCfg struct {
	group    string
	topic    string
	selector consumer.MessageSelector
	opts     []consumer.Option
}

func startConsumer(t *testing.T, env *testenv.RocketMQ, cfg consumerCfg,
	fn func(context.Context, ...*primitive.MessageExt) (consumer.ConsumeResult, error)) (stop func()) {
	t.Helper()
	testenv.SkipUnderRace(t)
	base := []consumer.Option{
		consumer.WithNameServer(env.NameServers()),
		consumer.WithGroupName(cfg.group),
		consumer.WithInstance(testenv.Name(t, "c")),
		consumer.WithConsumeFromWhere(consumer.ConsumeFromFirstOffset),
	}
	c, err := rocketmq.NewPushConsumer(append(base, cfg.opts...)...)
	if err != nil {
		t.Fatalf("new consumer: %v", err)
	}
	if err := c.Subscribe(cfg.topic, cfg.selector, fn); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	if err := c.Start(); err != nil {
		t.Fatalf("start consumer: %v", err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			if err := c.Shutdown(); err != nil {
				t.Errorf("consumer shutdown: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func sendSync(t *testing.T, p rocketmq.Producer, msgs ...*primitive.Message) *primitive.SendResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := p.SendSync(ctx, msgs...)
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	if r.Status != primitive.SendOK {
		t.Fatalf("send status %d", r.Status)
	}
	return r
}

// waitUntil polls cond until it holds, or fails the test after waitFor.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// newTopic connects to the test's broker and creates a fresh topic there.
func newTopic(t *testing.T, queues int) (*testenv.RocketMQ, string) {
	t.Helper()
	env := testenv.NewRocketMQ(t)
	topic := testenv.Name(t, "T")
	env.CreateTopic(t, topic, queues)
	return env, topic
}

// embeddedTopic is newTopic for tests that need rmqtest's faults or clock;
// they skip on a real cluster.
func embeddedTopic(t *testing.T, queues int) (*testenv.RocketMQ, *rmqtest.Broker, string) {
	t.Helper()
	env := testenv.NewRocketMQ(t)
	b := env.RequireEmbedded(t)
	topic := testenv.Name(t, "T")
	env.CreateTopic(t, topic, queues)
	return env, b, topic
}
