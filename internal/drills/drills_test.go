package drills

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/remoting"
	"github.com/seed157d4c4d/reliablemq/orderly"
	"github.com/seed157d4c4d/reliablemq/outbox"
	"github.com/seed157d4c4d/reliablemq/producer"
	"github.com/seed157d4c4d/reliablemq/rmqtest"
)

// Drill 1: the payment callback is retried by the caller and acks are lost
// on the wire; each order's effect happens once.
func TestDrill01RetriedCallbackAndLostAcks(t *testing.T) {
	t.Parallel()
	d := newDrill(t, 4)
	if b := d.env.Embedded; b != nil {
		b.Inject(rmqtest.SendMessage, rmqtest.Fault{DropReply: true, Times: 30})
	} else {
		t.Log("real broker: lost acks (rmqtest fault) skipped; retried callbacks still run")
	}
	d.startConsumer(d.applyOnce())
	d.reconcile()
	d.placeOrders(0, ops, nil)
	// The caller retries 200 callbacks, the handler is idempotent: the
	// order is inserted if missing, and the outbox row is unique per key, so
	// nothing new is sent for an order that exists.
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			err := d.relay.Transact(d.ctx, func(ctx context.Context, tx *outbox.Tx) error {
				if _, err := tx.ExecContext(ctx, "INSERT IGNORE INTO orders (id) VALUES (?)", fmt.Sprint("o-", i)); err != nil {
					return err
				}
				_, err := tx.Enqueue(ctx, outbox.Message{Topic: d.topic, Key: fmt.Sprint("o-", i), Body: []byte("retry")})
				if errors.Is(err, outbox.ErrDuplicate) {
					return nil // the retried callback's event is already recorded
				}
				return err
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	d.settle(2 * time.Minute)
	if b := d.env.Embedded; b != nil {
		t.Logf("messages stored for %d orders: %d (duplicates from lost acks)", ops, len(b.Messages(d.topic)))
	}
	d.ledger(0)
}

// Drill 2: the broker is down in the middle of a write burst. Every
// committed order arrives after recovery; a rolled-back one never does.
func TestDrill02BrokerOutageMidBurst(t *testing.T) {
	t.Parallel()
	d := newDrill(t, 4)
	b := d.env.RequireEmbedded(t)
	rollback := func(i int) bool { return i%10 == 7 }
	d.placeOrders(0, ops/2, rollback)
	if err := b.Down(); err != nil {
		t.Fatal(err)
	}
	d.placeOrders(ops/2, ops/4, rollback)
	pending := d.count("SELECT COUNT(*) FROM mq_log WHERE status = 0")
	if err := b.Up(); err != nil {
		t.Fatal(err)
	}
	d.placeOrders(3*ops/4, ops/4, rollback)
	t.Logf("%d outbox rows pending after the outage", pending)
	d.reconcile()
	d.startConsumer(d.applyOnce())
	d.settle(2 * time.Minute)
	if n := d.count("SELECT COUNT(*) FROM orders"); n != ops-ops/10 {
		t.Fatalf("%d orders committed, want %d", n, ops-ops/10)
	}
	d.ledger(0)
}

// Drill 3: the process dies between the business commit and the send.
func TestDrill03KilledBetweenCommitAndSend(t *testing.T) {
	t.Parallel()
	d := newDrill(t, 4)
	d.commitUnsent(ops)
	d.startConsumer(d.applyOnce())
	d.reconcile()
	d.settle(2 * time.Minute)
	d.ledger(0)
}

// Drill 4: consumers restart and rebalance mid-stream with offsets not yet
// committed; redeliveries are suppressed by the claim guard.
func TestDrill04RestartAndRebalanceMidStream(t *testing.T) {
	t.Parallel()
	d := newDrill(t, 8)
	guard := d.claimGuard()
	effect := func(ctx context.Context, m *consumer.Message) error {
		time.Sleep(time.Millisecond) // slow enough that the rebalance lands mid-stream
		return d.recordEffect(ctx, m)
	}
	first := d.startConsumer(effect, consumer.WithGuard(guard))
	d.reconcile() // a send that timed out on a loaded machine is sent again
	d.placeOrders(0, ops, nil)
	for d.count("SELECT COUNT(*) FROM effects") < ops/4 {
		time.Sleep(10 * time.Millisecond)
	}
	second := d.startConsumer(effect, consumer.WithGuard(guard)) // a rebalance
	for d.count("SELECT COUNT(*) FROM effects") < ops/2 {
		time.Sleep(10 * time.Millisecond)
	}
	if err := first.Close(); err != nil { // a restart: its queues move
		t.Fatal(err)
	}
	third := d.startConsumer(effect, consumer.WithGuard(guard))
	d.settle(2 * time.Minute)
	t.Logf("duplicates suppressed: %d", first.Stats().Duplicates+second.Stats().Duplicates+third.Stats().Duplicates)
	d.ledger(0)
}

// Drill 5: a consumer crashed mid-handler holding claims; when the lease
// ends the redeliveries complete, once.
func TestDrill05CrashMidHandler(t *testing.T) {
	t.Parallel()
	d := newDrill(t, 4)
	guard := d.claimGuard(idempotency.WithLease(3 * time.Second))
	for i := range 50 { // the crashed consumer's claims
		if c, err := guard.Claim(d.ctx, fmt.Sprint("o-", i)); err != nil || c.Outcome != idempotency.Acquired {
			t.Fatalf("claim: %v %v", c, err)
		}
	}
	d.startConsumer(d.recordEffect, consumer.WithGuard(guard))
	d.reconcile() // a send that timed out on a loaded machine is sent again
	d.placeOrders(0, ops, nil)
	d.settle(2 * time.Minute)
	d.ledger(0)
}

// Drill 6: the consumer's database is down for a while. Messages retry
// within the cap and succeed after recovery; those that exhaust it are
// parked with their errors; none is acknowledged silently.
func TestDrill06ConsumerDatabaseDown(t *testing.T) {
	t.Parallel()
	d := newDrill(t, 4)
	var down atomic.Bool
	down.Store(true)
	apply := d.applyOnce()
	var failures atomic.Int64
	c := d.startConsumer(func(ctx context.Context, m *consumer.Message) error {
		if down.Load() {
			failures.Add(1)
			return errors.New("dial tcp 10.0.0.5:3306: connect: connection refused")
		}
		return apply(ctx, m)
	}, consumer.WithMaxAttempts(3))
	d.placeOrders(0, ops, nil)
	// Down until some messages have used up their attempts.
	for c.Stats().Parked < 10 {
		if b := d.env.Embedded; b != nil {
			b.Advance(time.Second)
		}
		time.Sleep(20 * time.Millisecond)
	}
	down.Store(false)
	d.settle(2 * time.Minute)
	parked := d.count("SELECT COUNT(*) FROM mq_dead_letter")
	if n := d.count("SELECT COUNT(*) FROM mq_dead_letter WHERE attempts = 3 AND last_error LIKE '%connection refused%'"); n != parked {
		t.Errorf("%d of %d parked messages lack their attempts or error", parked-n, parked)
	}
	t.Logf("failed attempts while down: %d, parked: %d", failures.Load(), parked)
	d.ledger(parked)
}

// Drill 7: a poison message in an ordered stream is parked after the cap;
// under the park-the-key policy the later steps of its key are parked
// behind it, and the other keys keep their order.
func TestDrill07PoisonInOrderedStream(t *testing.T) {
	t.Parallel()
	d := newDrill(t, 8)
	guard := d.claimGuard()
	const keys, steps = 200, 5
	c, err := consumer.NewOrderly(d.env.NameServers(), d.group, d.topic, func(ctx context.Context, m *consumer.Message) error {
		var step int
		fmt.Sscan(string(m.Body), &step)
		if m.ShardingKey == "k-13" && step == 2 {
			return errors.New("cannot apply step 2 of k-13")
		}
		_, err := d.db.ExecContext(ctx, "INSERT INTO effects (order_id, step) VALUES (?, ?)", m.ShardingKey, step)
		return err
	}, consumer.ParkKey, consumer.WithGuard(guard), consumer.WithParker(d.dead), consumer.WithMaxAttempts(3),
		consumer.WithRetryDelay(20*time.Millisecond), consumer.WithConcurrency(8))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	for s := range steps {
		err := d.relay.Transact(d.ctx, func(ctx context.Context, tx *outbox.Tx) error {
			for k := range keys {
				key := fmt.Sprint("k-", k)
				if _, err := tx.Enqueue(ctx, outbox.Message{Topic: d.topic, Key: fmt.Sprint(key, "-", s), Body: []byte(fmt.Sprint(s)), ShardingKey: key}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	d.reconcile()
	want := keys*steps - (steps - 2)
	deadline := time.Now().Add(2 * time.Minute)
	for d.count("SELECT COUNT(*) FROM effects") < want || d.count("SELECT COUNT(*) FROM mq_dead_letter") < steps-2 {
		if time.Now().After(deadline) {
			t.Fatalf("effects %d of %d, parked %d", d.count("SELECT COUNT(*) FROM effects"), want, d.count("SELECT COUNT(*) FROM mq_dead_letter"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	outOfOrder := d.count("SELECT COUNT(*) FROM effects a JOIN effects b ON a.order_id = b.order_id AND a.seq < b.seq AND a.step > b.step")
	double := d.count("SELECT COUNT(*) FROM (SELECT order_id FROM effects GROUP BY order_id, step HAVING COUNT(*) > 1) x")
	applied := d.count("SELECT COUNT(*) FROM effects")
	parked := d.count("SELECT COUNT(*) FROM mq_dead_letter")
	keyParked := d.count("SELECT COUNT(*) FROM mq_dead_letter WHERE cause = 'key-parked' AND sharding_key = 'k-13'")
	t.Logf("ledger: committed %d = applied %d + parked %d; out of order %d, double-applied %d",
		keys*steps, applied, parked, outOfOrder, double)
	if applied+parked != keys*steps || outOfOrder != 0 || double != 0 || keyParked != steps-3 {
		t.Errorf("ledger broken: %d key-parked (want %d)", keyParked, steps-3)
	}
}

// Drill 9: the producer's process dies before the broker learns its local
// commit decision; the check-back resolves every message from the outbox
// table, and the messages match the database.
func TestDrill09TransactionalProducerDies(t *testing.T) {
	t.Parallel()
	d := newDrill(t, 4)
	b := d.env.RequireEmbedded(t)
	group := d.group + "-tx"
	m, err := outbox.NewTxMessenger(d.db, d.env.NameServers(), group)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	b.Inject(rmqtest.EndTransaction, rmqtest.Fault{Times: ops, Code: rmqtest.CodeSystemError})
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range ops {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			id := fmt.Sprint("o-", i)
			err := m.Send(d.ctx, outbox.Message{Topic: d.topic, Key: id, Body: []byte(id)}, func(ctx context.Context, tx *sqlx.Tx) error {
				if i%10 == 3 {
					return errRolledBack
				}
				_, err := tx.ExecContext(ctx, "INSERT INTO orders (id) VALUES (?)", id)
				return err
			})
			if err != nil && !errors.Is(err, errRolledBack) {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := len(b.Messages(d.topic)); n != 0 {
		t.Fatalf("%d messages visible before any check-back", n)
	}
	for b.Producers(group) == 0 {
		time.Sleep(20 * time.Millisecond)
	}
	d.startConsumer(d.applyOnce())
	b.Advance(7 * time.Second)
	deadline := time.Now().Add(time.Minute)
	for b.HalfMessages() > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	d.settle(time.Minute)
	if n := len(b.Messages(d.topic)); n != ops-ops/10 {
		t.Errorf("%d messages committed by check-backs, want %d (one per committed order)", n, ops-ops/10)
	}
	d.ledger(0)
}

// Drill 10: two reconcile instances while the broker flaps: no row stuck,
// none sent by both at once, every committed order applied once.
func TestDrill10TwoReconcilersFlappingBroker(t *testing.T) {
	t.Parallel()
	d := newDrill(t, 4)
	b := d.env.RequireEmbedded(t)
	d.commitUnsent(ops)
	d.startConsumer(d.applyOnce())
	opts := []outbox.Option{outbox.WithBackoff(20*time.Millisecond, 100*time.Millisecond), outbox.WithMaxAttempts(1000)}
	d.reconcile(opts...)
	d.reconcile(opts...)
	for range 5 { // flap: refuse sends, drop acks
		b.Inject(rmqtest.SendMessage, rmqtest.Fault{Times: 40, Code: rmqtest.CodeServiceNotAvailable})
		b.Inject(rmqtest.SendMessage, rmqtest.Fault{Times: 5, DropReply: true})
		time.Sleep(100 * time.Millisecond)
	}
	d.settle(2 * time.Minute)
	d.ledger(0)
}

// Drill 8: the broker refuses the consumer's send-backs, a path on which
// the official client drops the message: the group's retry topic is made
// read-only, which a broker checks on a send-back (NO_PERMISSION) but not
// on a plain send. The consumer stores retry copies itself, so every
// failed first attempt is retried and applied once. Runs on rmqtest and on
// a real broker alike. Reconcile runs, as in production: an outbox row whose
// send timed out on a loaded machine (or whose Sent mark failed) is sent
// again by it, a duplicate the guard absorbs.
func TestDrill08SendBackRejected(t *testing.T) {
	t.Parallel()
	d := newDrill(t, 4)
	d.reconcile()
	for _, b := range remoting.SplitAddrs(d.env.Broker) {
		err := remoting.UpdateTopic(d.ctx, remoting.Credentials{}, b, "%RETRY%"+d.group, 1, 1, remoting.PermRead)
		if err != nil {
			t.Fatal(err)
		}
	}
	apply := d.applyOnce()
	var firstTries sync.Map
	c := d.startConsumer(func(ctx context.Context, m *consumer.Message) error {
		if _, seen := firstTries.LoadOrStore(consumer.Key(m), true); !seen {
			return errors.New("first attempt always fails")
		}
		return apply(ctx, m)
	})
	d.placeOrders(0, ops, nil)
	d.settle(2 * time.Minute)
	t.Logf("retries: %d", c.Stats().Retries)
	if c.Stats().Retries < ops {
		t.Errorf("%d retries, want one per order", c.Stats().Retries)
	}
	d.ledger(0)
}

// Drill 11: two masters, one lost. The topic has 4 queues on each of two
// brokers. Steps 0-1 of 100 keys are sent while no consumer runs, so half
// the keys have unconsumed messages waiting on broker-b when it is
// stopped. Steps 2-3 are then committed: keys on broker-a go through;
// keys on broker-b are held back (never re-hashed onto broker-a's queues,
// where they would overtake their waiting steps) and stay pending in the
// outbox. The orderly consumer applies broker-a's keys; broker-b comes
// back with its store, everything drains, and every key's steps applied in
// order, once. Needs two real brokers run by scripts/rocketmq (-b 2) and
// RMQ_RUNDIR naming its run folder; rmqtest has one broker.
func TestDrill11TwoMastersOneLost(t *testing.T) {
	rundir := os.Getenv("RMQ_RUNDIR")
	if rundir == "" || len(remoting.SplitAddrs(os.Getenv("RMQ_BROKER"))) != 2 {
		t.Skip("needs two real brokers (scripts/rocketmq start -b 2) with RMQ_RUNDIR and both in RMQ_BROKER")
	}
	ctl := func(args ...string) {
		t.Helper()
		cmd := exec.Command("../../scripts/rocketmq", append(args, "-d", rundir)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("scripts/rocketmq %v: %v\n%s", args, err, out)
		}
	}
	t.Cleanup(func() { ctl("restart", "broker-b") }) // later tests need it; a no-op restart if it runs
	var layoutChanges atomic.Int32
	d := newDrill(t, 4, producer.WithQueueLossGrace(time.Hour),
		producer.WithQueueCountChange(func(orderly.QueueCountChange) { layoutChanges.Add(1) }))
	const keys = 100
	var onB []string
	for k := range keys {
		if orderly.QueueIndex(fmt.Sprint("k-", k), 8) >= 4 { // sorted: broker-a's 4 queues, then broker-b's
			onB = append(onB, fmt.Sprint("k-", k))
		}
	}
	send := func(step int) {
		t.Helper()
		err := d.relay.Transact(d.ctx, func(ctx context.Context, tx *outbox.Tx) error {
			for k := range keys {
				key := fmt.Sprint("k-", k)
				_, err := tx.Enqueue(ctx, outbox.Message{Topic: d.topic, Key: fmt.Sprint(key, "-", step),
					Body: []byte(fmt.Sprint(step)), ShardingKey: key})
				if err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	d.reconcile()
	send(0)
	send(1)
	waitFor := func(what string, limit time.Duration, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(limit)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out after %v waiting for %s (effects %d, pending %d)", limit, what,
					d.count("SELECT COUNT(*) FROM effects"), d.count("SELECT COUNT(*) FROM mq_log WHERE status = 0"))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	waitFor("steps 0-1 sent", time.Minute, func() bool { return d.count("SELECT COUNT(*) FROM mq_log WHERE status = 0") == 0 })

	ctl("stop", "broker-b")
	send(2)
	send(3)
	// Past the client's 30 s route refresh: broker-b is out of every route.
	time.Sleep(35 * time.Second)
	guard := d.claimGuard()
	c, err := consumer.NewOrderly(d.env.NameServers(), d.group, d.topic, func(ctx context.Context, m *consumer.Message) error {
		var step int
		fmt.Sscan(string(m.Body), &step)
		_, err := d.db.ExecContext(ctx, "INSERT INTO effects (order_id, step) VALUES (?, ?)", m.ShardingKey, step)
		return err
	}, consumer.ParkKey, consumer.WithGuard(guard), consumer.WithParker(d.dead), consumer.WithConcurrency(8))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	onA := (keys - len(onB)) * 4
	waitFor("broker-a's keys applied", 2*time.Minute, func() bool { return d.count("SELECT COUNT(*) FROM effects") >= onA })
	time.Sleep(2 * time.Second) // a held key re-hashed onto broker-a would show now
	if n := d.count("SELECT COUNT(*) FROM effects"); n != onA {
		t.Fatalf("%d effects while broker-b is down, want %d (only broker-a's keys)", n, onA)
	}
	pending := d.count("SELECT COUNT(*) FROM mq_log WHERE status = 0")
	t.Logf("broker-b down: %d keys on broker-a applied, %d rows of broker-b's %d keys held in the outbox", keys-len(onB), pending, len(onB))
	if pending != 2*len(onB) {
		t.Errorf("%d rows pending, want steps 2-3 of broker-b's %d keys", pending, len(onB))
	}
	if n := layoutChanges.Load(); n != 0 {
		t.Errorf("%d queue count changes reported within the loss grace; the layout must hold", n)
	}

	ctl("restart", "broker-b")
	waitFor("every step applied", 3*time.Minute, func() bool {
		return d.count("SELECT COUNT(*) FROM effects") >= keys*4 && d.count("SELECT COUNT(*) FROM mq_log WHERE status = 0") == 0
	})
	time.Sleep(2 * time.Second)
	outOfOrder := d.count("SELECT COUNT(*) FROM effects a JOIN effects b ON a.order_id = b.order_id AND a.seq < b.seq AND a.step > b.step")
	double := d.count("SELECT COUNT(*) FROM (SELECT order_id FROM effects GROUP BY order_id, step HAVING COUNT(*) > 1) x")
	applied := d.count("SELECT COUNT(*) FROM effects")
	parked := d.count("SELECT COUNT(*) FROM mq_dead_letter")
	t.Logf("ledger: committed %d = applied %d + parked %d; out of order %d, double-applied %d", keys*4, applied, parked, outOfOrder, double)
	if applied != keys*4 || parked != 0 || outOfOrder != 0 || double != 0 {
		t.Errorf("ledger broken")
	}
}
