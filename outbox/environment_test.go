package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/outbox"
	"github.com/seed157d4c4d/reliablemq/producer"
)

func relayOn(t *testing.T, db *sqlx.DB, pub outbox.Publisher, opts ...outbox.Option) *outbox.Relay {
	t.Helper()
	r, err := outbox.NewRelay(db, pub, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestRelayUnderEveryDSNVariant enqueues, detects a duplicate, sends,
// reads back and reports through handles opened with each DSN option and
// session setting.
func TestRelayUnderEveryDSNVariant(t *testing.T) {
	t.Parallel()
	db := testenv.MySQL(t)
	ctx := context.Background()
	for _, v := range testenv.MySQLVariants(t, db) {
		t.Run(v.Name, func(t *testing.T) {
			pub := newFake()
			r := relayOn(t, v.DB, pub)
			topic := testenv.Name(t, "T")
			m := outbox.Message{Topic: topic, Key: "k", Body: []byte("first")}
			if _, created, err := r.Enqueue(ctx, v.DB, m); err != nil || !created {
				t.Fatalf("enqueue: created %v, %v", created, err)
			}
			m.Body = []byte("second")
			if _, created, err := r.Enqueue(ctx, v.DB, m); err != nil || created {
				t.Fatalf("duplicate enqueue: created %v, %v", created, err)
			}
			err := r.Transact(ctx, func(ctx context.Context, tx *outbox.Tx) error {
				_, err := tx.Enqueue(ctx, m)
				if !errors.Is(err, outbox.ErrDuplicate) {
					t.Errorf("duplicate Tx.Enqueue: %v, want ErrDuplicate", err)
				}
				_, err = tx.Enqueue(ctx, outbox.Message{Topic: topic, Key: "k2", Body: []byte("x")})
				return err
			})
			if err := errors.Join(err, r.Flush(ctx)); err != nil {
				t.Fatal(err)
			}
			if b, err := r.Backlog(ctx); err != nil || b.Pending != 1 || b.OldestPending < 0 || b.OldestPending > time.Minute {
				t.Fatalf("backlog %+v, %v", b, err)
			}
			rep, err := r.DispatchDue(ctx, 10)
			if err != nil || rep.Sent != 1 || pub.count("k") != 1 {
				t.Fatalf("dispatch: %+v %v; sent %v", rep, err, pub.order())
			}
			for _, s := range pub.sent {
				if s.Keys[0] == "k" && string(s.Body) != "first" {
					t.Fatalf("the duplicate's body was sent: %q", s.Body)
				}
			}
			rows, err := r.List(ctx, outbox.Sent, 0, 100)
			if err != nil {
				t.Fatal(err)
			}
			mine := 0
			for _, row := range rows {
				if row.Topic != topic {
					continue
				}
				mine++
				if row.SentAt == nil || time.Since(*row.SentAt).Abs() > time.Minute || time.Since(row.CreatedAt).Abs() > time.Minute {
					t.Errorf("row %d read back with times sent %v, created %v", row.ID, row.SentAt, row.CreatedAt)
				}
			}
			if mine != 2 {
				t.Fatalf("%d sent rows of %s, want 2", mine, topic)
			}
		})
	}
}

// TestDueTimesHoldAcrossSessionTimeZones: two relays whose sessions run 15
// hours apart. A row one of them backed off is not resent early by the
// other, and a row enqueued by one is due for the other at once.
func TestDueTimesHoldAcrossSessionTimeZones(t *testing.T) {
	t.Parallel()
	db := testenv.MySQL(t)
	east, west := testenv.MySQLSessions(t, db)
	ctx := context.Background()
	for _, tc := range []struct {
		name          string
		first, second *sqlx.DB
	}{{"east then west", east, west}, {"west then east", west, east}} {
		t.Run(tc.name, func(t *testing.T) {
			down := newFake()
			down.fail = func(producer.Message) error { return errors.New("broker down") }
			topic := testenv.Name(t, "T")
			a := relayOn(t, tc.first, down, outbox.WithBackoff(time.Hour, time.Hour))
			if _, _, err := a.Enqueue(ctx, tc.first, outbox.Message{Topic: topic, Key: "backed-off", Body: []byte("x")}); err != nil {
				t.Fatal(err)
			}
			if rep, err := a.DispatchDue(ctx, 10); err != nil || rep.Failed != 1 {
				t.Fatalf("first relay: %+v %v", rep, err)
			}
			up := newFake()
			b := relayOn(t, tc.second, up)
			if rep, err := b.DispatchDue(ctx, 10); err != nil || rep.Sent != 0 {
				t.Fatalf("a row backed off for an hour was resent by the other time zone: %+v %v", rep, err)
			}
			if _, _, err := a.Enqueue(ctx, tc.first, outbox.Message{Topic: topic, Key: "fresh", Body: []byte("x")}); err != nil {
				t.Fatal(err)
			}
			if rep, err := b.DispatchDue(ctx, 10); err != nil || rep.Sent != 1 || up.count("fresh") != 1 {
				t.Fatalf("a fresh row from the other time zone is not due: %+v %v", rep, err)
			}
		})
	}
}

// TestTopicsDifferingOnlyInCaseAreDistinct: RocketMQ topics are
// case-sensitive; the same key on OrderEvents and orderevents is two
// messages.
func TestTopicsDifferingOnlyInCaseAreDistinct(t *testing.T) {
	t.Parallel()
	db := testenv.MySQL(t)
	ctx := context.Background()
	pub := newFake()
	r := relayOn(t, db, pub)
	for _, topic := range []string{"OrderEvents", "orderevents", "ORDEREVENTS"} {
		if _, created, err := r.Enqueue(ctx, db, outbox.Message{Topic: topic, Key: "o-1", Body: []byte(topic)}); err != nil || !created {
			t.Fatalf("topic %s: created %v, %v", topic, created, err)
		}
	}
	if rep, err := r.DispatchDue(ctx, 10); err != nil || rep.Sent != 3 {
		t.Fatalf("dispatch: %+v %v", rep, err)
	}
}

// TestConfirmTimeoutCountsFromTheDueTime: a row delayed 30 minutes is not
// "never confirmed" a few seconds after it was handed to the broker.
func TestConfirmTimeoutCountsFromTheDueTime(t *testing.T) {
	t.Parallel()
	pub := newFake()
	db, r := setup(t, pub)
	ctx := context.Background()
	for _, m := range []outbox.Message{
		{Topic: "t", Key: "delayed", Body: []byte("x"), Delay: 30 * time.Minute},
		{Topic: "t", Key: "plain", Body: []byte("x")},
	} {
		if _, _, err := r.Enqueue(ctx, db, m); err != nil {
			t.Fatal(err)
		}
	}
	if rep, err := r.DispatchDue(ctx, 10); err != nil || rep.Sent != 2 {
		t.Fatalf("dispatch: %+v %v", rep, err)
	}
	time.Sleep(1100 * time.Millisecond)
	rep, err := r.ResendUnconfirmed(ctx, time.Second, 10)
	if err != nil || rep.Sent != 1 || pub.count("delayed") != 1 || pub.count("plain") != 2 {
		t.Fatalf("resend: %+v %v; delayed sent %d, plain %d", rep, err, pub.count("delayed"), pub.count("plain"))
	}
}

// TestTransactLatencyStaysFarBelowTheLease: under steady load, the shared
// mark after commit never keeps one caller flushing the others' rows (the
// structural rule is pinned in internal/combine); the slowest Transact
// stays under the lease its rows are claimed for, so they are never resent
// while it still runs. The bound is the lease, not a speed: the machine
// may be loaded.
func TestTransactLatencyStaysBelowTheLease(t *testing.T) {
	t.Parallel()
	const lease = 5 * time.Second
	_, r := setup(t, newFake(), outbox.WithLease(lease))
	deadline := time.Now().Add(2 * time.Second)
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := 0; time.Now().Before(deadline); i++ {
				start := time.Now()
				err := r.Transact(context.Background(), func(ctx context.Context, tx *outbox.Tx) error {
					_, err := tx.Enqueue(ctx, outbox.Message{Topic: "t", Key: fmt.Sprint(w, "-", i), Body: []byte("x")})
					return err
				})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				lat = append(lat, time.Since(start))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(lat)
	p999, worst := lat[len(lat)*999/1000], lat[len(lat)-1]
	t.Logf("%d Transact calls from 16 goroutines: p99.9 %v, max %v (lease %v)", len(lat), p999, worst, lease)
	if worst >= lease {
		t.Fatalf("slowest Transact took %v, as long as the %v lease", worst, lease)
	}
}

// TestKeyOrderHoldsAcrossConcurrentTransactions: T1 enqueues step 1 of a
// key and stays open; T2 enqueues step 2 of the same key. T2 must not
// commit (and so be sent) first: it waits for T1, and the key's steps
// reach the broker in order.
func TestKeyOrderHoldsAcrossConcurrentTransactions(t *testing.T) {
	t.Parallel()
	pub := newFake()
	db, r := setup(t, pub)
	ctx := context.Background()
	step := func(tx *sqlx.Tx, n int) error {
		_, _, err := r.Enqueue(ctx, tx, outbox.Message{Topic: "t", Key: fmt.Sprint("o-1-", n), Body: []byte(fmt.Sprint(n)), ShardingKey: "o-1"})
		return err
	}
	t1 := db.MustBegin()
	defer t1.Rollback() //nolint:errcheck // a no-op after Commit; on failure it lets T2 and the cleanup finish
	if err := step(t1, 1); err != nil {
		t.Fatal(err)
	}
	t2done := make(chan error, 1)
	go func() {
		t2 := db.MustBegin()
		if err := step(t2, 2); err != nil {
			t2.Rollback()
			t2done <- err
			return
		}
		t2done <- t2.Commit()
	}()
	time.Sleep(300 * time.Millisecond) // T2 commits now unless it waits for T1
	if rep, err := r.DispatchDue(ctx, 10); err != nil || rep.Sent != 0 {
		t.Fatalf("a later step was sent while an earlier one was uncommitted: %+v %v", rep, err)
	}
	if err := t1.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-t2done; err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := r.DispatchDue(ctx, 10); err != nil {
			t.Fatal(err)
		}
	}
	if got := pub.order(); fmt.Sprint(got) != "[o-1-1 o-1-2]" {
		t.Fatalf("sent %v, want step 1 then step 2", got)
	}
}

// TestKeyOrderUnderRandomInterleavings: several relays and many
// transactions that enqueue steps of a few shared keys, hold their
// transactions open for random times and commit in random order; every
// key's steps are sent in the order they were enqueued.
func TestKeyOrderUnderRandomInterleavings(t *testing.T) {
	t.Parallel()
	pub := newFake()
	db, r := setup(t, pub)
	relays := []*outbox.Relay{r, relayOn(t, db, pub), relayOn(t, db, pub)}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, rl := range relays {
		wg.Go(func() {
			for ctx.Err() == nil {
				if _, err := rl.DispatchDue(ctx, 20); err != nil && ctx.Err() == nil {
					t.Error(err)
				}
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	const keys, txs = 4, 120
	var mu sync.Mutex
	next := map[string]int{} // the step each key's next enqueue gets, in lock order
	step := map[string]int{} // event key -> its step
	var writers sync.WaitGroup
	for i := range txs {
		writers.Go(func() {
			key := fmt.Sprint("k", i%keys)
			rl := relays[i%len(relays)]
			err := rl.Transact(context.Background(), func(ctx context.Context, tx *outbox.Tx) error {
				// The first enqueue of the key takes its lock; the step is
				// numbered only then, so numbering follows lock order.
				if _, err := tx.Enqueue(ctx, outbox.Message{Topic: "t", Key: fmt.Sprint("e-", i), Body: []byte("x"), ShardingKey: key}); err != nil {
					return err
				}
				mu.Lock()
				step[fmt.Sprint("e-", i)] = next[key]
				next[key]++
				mu.Unlock()
				time.Sleep(time.Duration(i*7%20) * time.Millisecond)
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	writers.Wait()
	deadline := time.Now().Add(30 * time.Second)
	for count(t, db, "SELECT COUNT(*) FROM mq_log WHERE status = 0") > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	pub.mu.Lock()
	defer pub.mu.Unlock()
	seen := map[string]int{}
	for _, m := range pub.sent {
		key := m.ShardingKey
		mu.Lock()
		n := step[m.Keys[0]]
		mu.Unlock()
		if n != seen[key] {
			t.Fatalf("key %s: step %d sent when step %d was next (%d sent so far)", key, n, seen[key], len(pub.sent))
		}
		seen[key]++
	}
	if len(pub.sent) != txs {
		t.Fatalf("%d sent, want %d", len(pub.sent), txs)
	}
}
