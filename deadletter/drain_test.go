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
	"github.com/seed157d4c4d/reliablemq/internal/remoting"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/producer"
	"github.com/seed157d4c4d/reliablemq/rmqtest"
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
	ns    string // the namespace of topic and group; "" for none
	// admin signs the test's own queries on a broker with ACL on.
	admin producer.Credentials
}

func newFixture(t *testing.T, opts ...rmqtest.Option) *fixture {
	t.Helper()
	testenv.SkipUnderRace(t)
	env := testenv.NewRocketMQ(t, opts...)
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
	f.env.Eventually(f.t, what, waitFor, cond)
}

// runDrain runs d until the test ends, then checks Run's error.
func runDrain(t *testing.T, d *deadletter.Drain) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
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
func deadLetterViaClient(f *fixture, body string, opts ...rmqconsumer.Option) {
	f.t.Helper()
	c, err := rocketmq.NewPushConsumer(append([]rmqconsumer.Option{rmqconsumer.WithNameServer(f.env.NameServers()),
		rmqconsumer.WithGroupName(f.group), rmqconsumer.WithInstance(testenv.Name(f.t, "raw")),
		rmqconsumer.WithConsumeFromWhere(rmqconsumer.ConsumeFromFirstOffset)}, opts...)...)
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
	// The client sends the message back after the handler returns: shut
	// down before that, and the message never reaches the DLQ.
	dlq := "%DLQ%" + f.group
	if f.ns != "" {
		dlq = "%DLQ%" + f.ns + "%" + f.group
	}
	f.eventually("the message reaches the DLQ", func() bool { return f.env.MaxOffsetAs(f.t, f.admin, dlq, 0) == 1 })
}

// TestDrainMovesBrokerDLQIntoTheTable: on rmqtest the DLQ is write-only,
// as older 4.x brokers create it, and the drain makes it readable first
// (and logs so); a real 4.9.4 or 5.x broker creates it readable.
func TestDrainMovesBrokerDLQIntoTheTable(t *testing.T) {
	t.Parallel()
	f := newFixture(t, rmqtest.WithWriteOnlyDLQ())
	deadLetterViaClient(f, "stuck")
	if b := f.env.Embedded; b != nil {
		f.eventually("the DLQ exists", func() bool { _, ok := b.TopicPerm("%DLQ%" + f.group); return ok })
		if perm, _ := b.TopicPerm("%DLQ%" + f.group); perm != 2 {
			t.Fatalf("DLQ created with perm %d, want 2 as on older 4.x", perm)
		}
	}
	var logs testenv.Logs
	d, err := deadletter.NewDrain(f.env.NameServers(), f.group, f.dead, deadletter.WithInterval(100*time.Millisecond),
		deadletter.WithLogger(logs.Logger()))
	if err != nil {
		t.Fatal(err)
	}
	runDrain(t, d)
	// Drained counts a dead letter once its row is committed: after it.
	f.eventually("drained", func() bool { return len(f.parked()) == 1 && d.Drained() == 1 })
	dl := f.parked()[0]
	if dl.Cause != consumer.CauseDLQ || dl.Topic != f.topic || string(dl.Body) != "stuck" ||
		strings.Join(dl.Keys, ",") != "order-7" || dl.Tag != "paid" || d.Drained() != 1 {
		t.Fatalf("dead letter %+v, drained %d", dl, d.Drained())
	}
	route, err := remoting.FetchRoute(context.Background(), f.env.NameServers()[0], "%DLQ%"+f.group)
	if err != nil || route.QueueDatas[0].Perm&remoting.PermRead == 0 {
		t.Fatalf("DLQ route after drain: %+v, %v; want readable", route, err)
	}
	if f.env.Embedded != nil && !strings.Contains(logs.String(), "dlq topic made readable") {
		t.Errorf("the permission change was not logged:\n%s", logs.String())
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

// TestACLDrainSignsItsAdminCallAndItsConsumer runs against a broker with
// ACL on (see testenv.ACLAccount): a message the official client sent to
// the DLQ with the app account is drained with the admin account, which
// may update the DLQ's permission and consume it.
func TestACLDrainSignsItsAdminCallAndItsConsumer(t *testing.T) {
	app, admin := testenv.ACLAccount(t, "RMQ_ACL_APP"), testenv.ACLAccount(t, "RMQ_ACL_ADMIN")
	env := testenv.NewRocketMQ(t)
	testenv.SkipUnderRace(t)
	f := &fixture{t: t, env: env, topic: testenv.Name(t, "T"), group: testenv.Name(t, "G"), admin: admin}
	env.CreateTopicAs(t, admin, f.topic, 1)
	var err error
	if f.dead, err = deadletter.NewTable(testenv.MySQL(t)); err != nil {
		t.Fatal(err)
	}
	if f.prod, err = producer.New(env.NameServers(), producer.WithCredentials(app)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.prod.Close() })
	deadLetterViaClient(f, "stuck", rmqconsumer.WithCredentials(primitive.Credentials{AccessKey: app.AccessKey, SecretKey: app.SecretKey}))
	if _, err := deadletter.NewDrain(env.NameServers(), f.group, f.dead,
		deadletter.WithCredentials(producer.Credentials{AccessKey: admin.AccessKey})); err == nil {
		t.Fatal("an access key without a secret was accepted")
	}
	d, err := deadletter.NewDrain(env.NameServers(), f.group, f.dead, deadletter.WithCredentials(admin),
		deadletter.WithInterval(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	runDrain(t, d)
	f.eventually("drained", func() bool { return len(f.parked()) == 1 })
}

// TestDrainInANamespace: the official client's namespace option sends a
// dead letter to "%DLQ%ns%group"; a drain with the same namespace finds it
// there and parks it under the namespaced group with the bare topic, as
// the group's own consumer would.
func TestDrainInANamespace(t *testing.T) {
	t.Parallel()
	testenv.SkipUnderRace(t)
	env := testenv.NewRocketMQ(t)
	n := testenv.Name(t, "ns")
	ns := "ns" + n[len(n)-8:]
	f := &fixture{t: t, env: env, topic: testenv.Name(t, "T"), group: testenv.Name(t, "G"), ns: ns}
	env.CreateTopic(t, ns+"%"+f.topic, 1)
	var err error
	if f.dead, err = deadletter.NewTable(testenv.MySQL(t)); err != nil {
		t.Fatal(err)
	}
	if f.prod, err = producer.New(env.NameServers(), producer.WithNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.prod.Close() })
	deadLetterViaClient(f, "stuck", rmqconsumer.WithNamespace(ns))
	d, err := deadletter.NewDrain(env.NameServers(), f.group, f.dead, deadletter.WithNamespace(ns),
		deadletter.WithInterval(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	runDrain(t, d)
	dlq := "%DLQ%" + ns + "%" + f.group
	var list []*deadletter.Entry
	f.eventually("drained", func() bool {
		list, err = f.dead.List(context.Background(), deadletter.Filter{Group: ns + "%" + f.group})
		return err == nil && len(list) == 1
	})
	if dl := list[0]; dl.Cause != consumer.CauseDLQ || dl.Topic != f.topic || string(dl.Body) != "stuck" ||
		!strings.Contains(dl.LastError, dlq) {
		t.Fatalf("dead letter %+v; want the bare topic and the DLQ %s", dl, dlq)
	}
	if _, err := deadletter.NewDrain(env.NameServers(), f.group, f.dead, deadletter.WithNamespace("a%b")); err == nil {
		t.Error("a namespace with '%' was accepted")
	}
}
