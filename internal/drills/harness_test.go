package drills

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/deadletter"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/outbox"
	"github.com/seed157d4c4d/reliablemq/producer"
	"github.com/seed157d4c4d/reliablemq/reconcile"
)

const ops = 1000

// drill is one drill's world: a broker, a database with the business
// tables (orders, effects), a producer and an outbox relay.
type drill struct {
	t     *testing.T
	ctx   context.Context
	env   *testenv.RocketMQ
	db    *sqlx.DB
	topic string
	group string
	prod  *producer.Producer
	relay *outbox.Relay
	dead  *deadletter.Table
}

func newDrill(t *testing.T, queues int, prodOpts ...producer.Option) *drill {
	t.Helper()
	testenv.SkipUnderRace(t)
	env := testenv.NewRocketMQ(t)
	d := &drill{t: t, ctx: context.Background(), env: env, topic: testenv.Name(t, "T"), group: testenv.Name(t, "G")}
	env.CreateTopic(t, d.topic, queues)
	env.CreateTopic(t, "%RETRY%"+d.group, 1)
	d.db = testenv.MySQL(t)
	d.db.SetMaxOpenConns(40)
	d.db.MustExec("CREATE TABLE orders (id VARCHAR(64) PRIMARY KEY)")
	d.db.MustExec("CREATE TABLE effects (order_id VARCHAR(64) NOT NULL, step INT NOT NULL DEFAULT 0, seq BIGINT AUTO_INCREMENT PRIMARY KEY)")
	var err error
	if d.prod, err = producer.New(env.NameServers(), append([]producer.Option{producer.WithSendTimeout(500 * time.Millisecond),
		producer.WithRetryBackoff(10 * time.Millisecond)}, prodOpts...)...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.prod.Close() })
	if d.relay, err = outbox.NewRelay(d.db, d.prod, outbox.WithBackoff(20*time.Millisecond, 200*time.Millisecond),
		outbox.WithMaxAttempts(1000)); err != nil {
		t.Fatal(err)
	}
	if d.dead, err = deadletter.NewTable(d.db); err != nil {
		t.Fatal(err)
	}
	return d
}

// placeOrder commits an order and its outbox row, and sends it after the
// commit; fail makes the transaction roll back after the enqueue.
func (d *drill) placeOrder(id string, fail bool) error {
	return d.relay.Transact(d.ctx, func(ctx context.Context, tx *outbox.Tx) error {
		if _, err := tx.ExecContext(ctx, "INSERT INTO orders (id) VALUES (?)", id); err != nil {
			return err
		}
		if _, err := tx.Enqueue(ctx, outbox.Message{Topic: d.topic, Key: id, Body: []byte(id)}); err != nil {
			return err
		}
		if fail {
			return errRolledBack
		}
		return nil
	})
}

var errRolledBack = fmt.Errorf("business rule failed")

// placeOrders places n orders from 8 goroutines; rollback(i) says which
// transactions roll back.
func (d *drill) placeOrders(from, n int, rollback func(int) bool) {
	d.t.Helper()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := from; i < from+n; i++ {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			fail := rollback != nil && rollback(i)
			if err := d.placeOrder(fmt.Sprint("o-", i), fail); err != nil && !(fail && err == errRolledBack) {
				d.t.Errorf("order %d: %v", i, err)
			}
		})
	}
	wg.Wait()
}

// commitUnsent commits n orders with their outbox rows and sends nothing,
// as a process killed right after its commit would.
func (d *drill) commitUnsent(n int) {
	d.t.Helper()
	tx := d.db.MustBegin()
	for i := range n {
		id := fmt.Sprint("o-", i)
		tx.MustExec("INSERT INTO orders (id) VALUES (?)", id)
		if _, _, err := d.relay.Enqueue(d.ctx, tx, outbox.Message{Topic: d.topic, Key: id, Body: []byte("x")}); err != nil {
			d.t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		d.t.Fatal(err)
	}
}

// claimGuard is a claim-mode guard for the drill's group on MySQL.
func (d *drill) claimGuard(opts ...idempotency.GuardOption) *idempotency.Guard {
	d.t.Helper()
	store, err := idempotency.NewMySQLStore(d.db)
	if err != nil {
		d.t.Fatal(err)
	}
	g, err := idempotency.NewGuard(d.group, store, opts...)
	if err != nil {
		d.t.Fatal(err)
	}
	return g
}

// recordEffect is an unguarded effect: one effects row per call, so a
// duplicate that gets past a guard shows in the ledger.
func (d *drill) recordEffect(ctx context.Context, m *consumer.Message) error {
	_, err := d.db.ExecContext(ctx, "INSERT INTO effects (order_id) VALUES (?)", consumer.Key(m))
	return err
}

// reconcile runs a reconcile job until the test ends.
func (d *drill) reconcile(opts ...outbox.Option) {
	relay := d.relay
	if len(opts) > 0 {
		var err error
		if relay, err = outbox.NewRelay(d.db, d.prod, opts...); err != nil {
			d.t.Fatal(err)
		}
	}
	job, err := reconcile.New(relay, reconcile.WithInterval(50*time.Millisecond))
	if err != nil {
		d.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(d.ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = job.Run(ctx) }) // returns nil when ctx ends
	d.t.Cleanup(func() { cancel(); wg.Wait() })
}

// applyOnce is the guarded effect: the effect row and the dedup row commit
// together.
func (d *drill) applyOnce() consumer.Handler {
	g, err := idempotency.NewTxGuard(d.db, d.group)
	if err != nil {
		d.t.Fatal(err)
	}
	return func(ctx context.Context, m *consumer.Message) error {
		_, err := g.Do(ctx, consumer.Key(m), func(ctx context.Context, tx *sqlx.Tx) error {
			_, err := tx.ExecContext(ctx, "INSERT INTO effects (order_id) VALUES (?)", consumer.Key(m))
			return err
		})
		return err
	}
}

func (d *drill) startConsumer(h consumer.Handler, opts ...consumer.Option) *consumer.Consumer {
	d.t.Helper()
	base := []consumer.Option{consumer.WithParker(d.dead), consumer.WithRetryDelay(time.Second)}
	c, err := consumer.New(d.env.NameServers(), d.group, d.topic, h, append(base, opts...)...)
	if err != nil {
		d.t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() { c.Close() })
	return c
}

func (d *drill) count(q string, args ...any) int {
	d.t.Helper()
	var n int
	if err := d.db.Get(&n, q, args...); err != nil {
		d.t.Fatal(err)
	}
	return n
}

// settle waits until every committed order is applied or parked and the
// outbox is drained, moving rmqtest's clock so retries come due.
func (d *drill) settle(limit time.Duration) {
	d.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		accounted := d.count("SELECT COUNT(*) FROM orders o WHERE EXISTS (SELECT 1 FROM effects e WHERE e.order_id = o.id)" +
			" OR EXISTS (SELECT 1 FROM mq_dead_letter l WHERE l.biz_keys = o.id)")
		if accounted == d.count("SELECT COUNT(*) FROM orders") && d.count("SELECT COUNT(*) FROM mq_log WHERE status = 0") == 0 {
			break
		}
		if time.Now().After(deadline) {
			var pending []struct {
				ID         int64  `db:"id"`
				Key        string `db:"biz_key"`
				Attempts   int    `db:"attempts"`
				LeaseOwner string `db:"lease_owner"`
				LastError  string `db:"last_error"`
			}
			if err := d.db.Select(&pending, "SELECT id, biz_key, attempts, lease_owner, last_error FROM mq_log WHERE status = 0 ORDER BY id LIMIT 5"); err != nil {
				d.t.Log(err)
			}
			d.t.Fatalf("not settled after %v: %d of %d orders accounted for, %d outbox rows pending (the first: %+v)", limit, accounted,
				d.count("SELECT COUNT(*) FROM orders"), d.count("SELECT COUNT(*) FROM mq_log WHERE status = 0"), pending)
		}
		if b := d.env.Embedded; b != nil {
			b.Advance(time.Second)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A little longer, so a late duplicate would show.
	for range 10 {
		if b := d.env.Embedded; b != nil {
			b.Advance(5 * time.Second)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ledger checks committed = applied + parked, nothing applied twice,
// nothing applied that did not commit, and logs the line.
func (d *drill) ledger(wantParked int) {
	d.t.Helper()
	committed := d.count("SELECT COUNT(*) FROM orders")
	applied := d.count("SELECT COUNT(DISTINCT order_id) FROM effects")
	parked := d.count("SELECT COUNT(DISTINCT biz_keys) FROM mq_dead_letter")
	double := d.count("SELECT COUNT(*) FROM (SELECT order_id FROM effects GROUP BY order_id, step HAVING COUNT(*) > 1) x")
	phantom := d.count("SELECT COUNT(*) FROM effects e WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = e.order_id)")
	lost := committed - applied - parked
	d.t.Logf("ledger: committed %d = applied %d + parked %d; lost %d, double-applied %d, applied without commit %d",
		committed, applied, parked, lost, double, phantom)
	if lost != 0 || double != 0 || phantom != 0 || parked != wantParked {
		d.t.Errorf("ledger broken (want %d parked)", wantParked)
	}
}
