package deadletter_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2"
	rmqconsumer "github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/deadletter"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/producer"
)

const waitFor = 60 * time.Second

// fixture is a broker, a topic, a dead-letter table and a producer.
type fixture struct {
	t     *testing.T
	env   *testenv.RocketMQ
	topic string
	group string
	dead  *deadletter.Table
	prod  *producer.Producer
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	testenv.SkipUnderRace(t)
	env := testenv.NewRocketMQ(t)
	f := &fixture{t: t, env: env, topic: testenv.Name(t, "T"), group: testenv.Name(t, "G")}
	env.CreateTopic(t, f.topic, 1)
	var err error
	if f.dead, err = deadletter.NewTable(testenv.MySQL(t)); err != nil {
		t.Fatal(err)
	}
	if f.prod, err = producer.New(env.NameServers()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.prod.Close() })
	return f
}

func (f *fixture) send(m producer.Message) {
	f.t.Helper()
	m.Topic = f.topic
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := f.prod.Send(ctx, m); err != nil {
		f.t.Fatalf("send: %v", err)
	}
}

// eventually waits for cond, moving rmqtest's clock.
func (f *fixture) eventually(what string, cond func() bool) {
	f.t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			f.t.Fatalf("timed out waiting until %s", what)
		}
		if b := f.env.Embedded; b != nil {
			b.Advance(time.Second)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (f *fixture) parked() []*deadletter.Entry {
	f.t.Helper()
	list, err := f.dead.List(context.Background(), deadletter.Filter{Group: f.group})
	if err != nil {
		f.t.Fatal(err)
	}
	return list
}

// deadLetterViaClient makes the official client send one message to the
// group's DLQ the way a consumer without this package does: it returns
// RetryLater with delay level -1.
func deadLetterViaClient(f *fixture, body string) {
	f.t.Helper()
	c, err := rocketmq.NewPushConsumer(rmqconsumer.WithNameServer(f.env.NameServers()),
		rmqconsumer.WithGroupName(f.group), rmqconsumer.WithInstance(testenv.Name(f.t, "raw")),
		rmqconsumer.WithConsumeFromWhere(rmqconsumer.ConsumeFromFirstOffset))
	if err != nil {
		f.t.Fatal(err)
	}
	sent := make(chan struct{}, 1)
	err = c.Subscribe(f.topic, rmqconsumer.MessageSelector{}, func(ctx context.Context, msgs ...*primitive.MessageExt) (rmqconsumer.ConsumeResult, error) {
		cc, _ := primitive.GetConcurrentlyCtx(ctx)
		cc.DelayLevelWhenNextConsume = -1
		select {
		case sent <- struct{}{}:
		default:
		}
		return rmqconsumer.ConsumeRetryLater, nil
	})
	if err != nil {
		f.t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		f.t.Fatal(err)
	}
	defer c.Shutdown()
	f.send(producer.Message{Body: []byte(body), Keys: []string{"order-7"}, Tag: "paid"})
	select {
	case <-sent:
	case <-time.After(waitFor):
		f.t.Fatal("message never consumed")
	}
}

func TestDrainMovesBrokerDLQIntoTheTable(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	deadLetterViaClient(f, "stuck")
	if b := f.env.Embedded; b != nil {
		f.eventually("the DLQ exists", func() bool { _, ok := b.TopicPerm("%DLQ%" + f.group); return ok })
		if perm, _ := b.TopicPerm("%DLQ%" + f.group); perm != 2 {
			t.Fatalf("DLQ created with perm %d, want 2 as on 4.x", perm)
		}
	}
	d, err := deadletter.NewDrain(f.env.NameServers(), f.group, f.dead, deadletter.WithInterval(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	f.eventually("drained", func() bool { return len(f.parked()) == 1 })
	dl := f.parked()[0]
	if dl.Cause != consumer.CauseDLQ || dl.Topic != f.topic || string(dl.Body) != "stuck" ||
		strings.Join(dl.Keys, ",") != "order-7" || dl.Tag != "paid" || d.Drained() != 1 {
		t.Fatalf("dead letter %+v, drained %d", dl, d.Drained())
	}
	if b := f.env.Embedded; b != nil {
		if perm, _ := b.TopicPerm("%DLQ%" + f.group); perm != 6 {
			t.Fatalf("DLQ perm %d after drain, want 6", perm)
		}
	}
}

func TestDrainWaitsForTheDLQToExist(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	d, err := deadletter.NewDrain(f.env.NameServers(), f.group, f.dead, deadletter.WithInterval(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := d.Run(ctx); err != nil {
		t.Fatalf("run without a DLQ: %v", err)
	}
	if d.Drained() != 0 {
		t.Fatal("drained from nothing")
	}
}
