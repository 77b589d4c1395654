package consumer_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/deadletter"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/producer"
)

const waitFor = 60 * time.Second

// fixture is a broker, a topic, a MySQL database with the migrations, a
// dead-letter table and a producer.
type fixture struct {
	t     *testing.T
	env   *testenv.RocketMQ
	topic string
	group string
	db    *sqlx.DB
	dead  *deadletter.Table
	prod  *producer.Producer
}

func newFixture(t *testing.T, queues int) *fixture {
	t.Helper()
	return newFixtureNamed(t, queues, "")
}

// newFixtureNamed is newFixture with the topic and group names starting
// with prefix.
func newFixtureNamed(t *testing.T, queues int, prefix string) *fixture {
	t.Helper()
	testenv.SkipUnderRace(t)
	env := testenv.NewRocketMQ(t)
	f := &fixture{t: t, env: env, topic: testenv.Name(t, prefix+"T"), group: testenv.Name(t, prefix+"G")}
	env.CreateTopic(t, f.topic, queues)
	// The client routes the group's retry topic only if it exists when the
	// consumer starts; otherwise retries wait for its next route refresh
	// and rebalance (20-50 s).
	env.CreateTopic(t, "%RETRY%"+f.group, 1)
	f.db = testenv.MySQL(t)
	var err error
	if f.dead, err = deadletter.NewTable(f.db); err != nil {
		t.Fatal(err)
	}
	if f.prod, err = producer.New(env.NameServers()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.prod.Close() })
	return f
}

func (f *fixture) guard(opts ...idempotency.GuardOption) *idempotency.Guard {
	f.t.Helper()
	s, err := idempotency.NewMySQLStore(f.db)
	if err != nil {
		f.t.Fatal(err)
	}
	g, err := idempotency.NewGuard(f.group, s, opts...)
	if err != nil {
		f.t.Fatal(err)
	}
	return g
}

func (f *fixture) send(m producer.Message) producer.Result {
	f.t.Helper()
	if m.Topic == "" {
		m.Topic = f.topic
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := f.prod.Send(ctx, m)
	if err != nil {
		f.t.Fatalf("send: %v", err)
	}
	return r
}

func (f *fixture) start(c *consumer.Consumer, err error) *consumer.Consumer {
	f.t.Helper()
	if err != nil {
		f.t.Fatalf("new consumer: %v", err)
	}
	if err := c.Start(); err != nil {
		f.t.Fatalf("start: %v", err)
	}
	f.t.Cleanup(func() {
		if err := c.Close(); err != nil {
			f.t.Errorf("close: %v", err)
		}
	})
	return c
}

// eventually waits for cond, moving rmqtest's clock so retries and
// delays come due without sleeping through them.
func (f *fixture) eventually(what string, cond func() bool) {
	f.t.Helper()
	f.env.Eventually(f.t, what, waitFor, cond)
}

// settle lets the consumer run a while longer, with the clock moving, so
// a wrong extra delivery would show.
func (f *fixture) settle() {
	for range 20 {
		if b := f.env.Embedded; b != nil {
			b.Advance(5 * time.Second)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (f *fixture) parked() []*deadletter.Entry {
	f.t.Helper()
	dls, err := f.dead.List(context.Background(), deadletter.Filter{Group: f.group})
	if err != nil {
		f.t.Fatal(err)
	}
	return dls
}

// effects counts side effects per key.
type effects struct {
	mu sync.Mutex
	n  map[string]int
	// order records the bodies per key in handling order.
	order map[string][]string
}

func newEffects() *effects { return &effects{n: map[string]int{}, order: map[string][]string{}} }

func (e *effects) apply(key, body string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.n[key]++
	e.order[key] = append(e.order[key], body)
}

func (e *effects) count(key string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n[key]
}

func (e *effects) total() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := 0
	for _, n := range e.n {
		s += n
	}
	return s
}

// memoryParker keeps parked messages in memory; production code parks
// into a deadletter.Table table.
type memoryParker struct {
	mu     sync.Mutex
	parked []*consumer.DeadLetter
}

func (p *memoryParker) Park(_ context.Context, d *consumer.DeadLetter) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.parked = append(p.parked, d)
	return true, nil
}
