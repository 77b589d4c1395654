package outbox

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// Hostile tests of the in-flight waits (flights.go, Relay.await): what a
// row blocked by an earlier row of its sharding key waits for, and how
// long.

// slowClaims is a fake store whose claims do not return until gate is
// closed: a claim query the database is slow to answer, or one waiting
// for a pooled connection.
type slowClaims struct {
	*fakeStore
	entered chan struct{}
	gate    chan struct{}
	once    sync.Once
}

func newSlowClaims(fake *fakeStore) *slowClaims {
	return &slowClaims{fakeStore: fake, entered: make(chan struct{}), gate: make(chan struct{})}
}

func (s *slowClaims) hold() {
	s.once.Do(func() { close(s.entered) })
	<-s.gate
}

func (s *slowClaims) claimDue(ctx context.Context, owner string, asOf time.Time, limit int) ([]*Row, error) {
	s.hold()
	return s.fakeStore.claimDue(ctx, owner, asOf, limit)
}

func (s *slowClaims) claimUnconfirmed(ctx context.Context, owner string, asOf time.Time, timeout time.Duration, limit int) ([]*Row, error) {
	s.hold()
	return s.fakeStore.claimUnconfirmed(ctx, owner, asOf, timeout, limit)
}

// claimSlowly starts a claim of r, a dispatch or a resend one, that holds
// until the test ends, and returns once it is being taken.
func claimSlowly(t *testing.T, r *Relay, store *slowClaims, resend bool) {
	t.Helper()
	claimed := make(chan error, 1)
	go func() {
		var err error
		if resend {
			_, err = r.ResendUnconfirmed(context.Background(), time.Minute, 10)
		} else {
			_, err = r.DispatchDue(context.Background(), 10)
		}
		claimed <- err
	}()
	t.Cleanup(func() {
		select {
		case <-store.gate:
		default:
			close(store.gate)
		}
		<-claimed
	})
	<-store.entered
}

func flightsRelay(t *testing.T, s rowStore, fake *fakeStore, p Publisher, opts ...Option) *Relay {
	t.Helper()
	c, err := newConfig(append([]Option{WithLogger(slog.New(slog.DiscardHandler))}, opts...))
	if err != nil {
		t.Fatal(err)
	}
	fake.lease = c.lease
	r := newRelay(s, p, c)
	r.now = fake.clock
	return r
}

// TestABlockedRowIsNotHeldByAnUnrelatedClaim: a row whose earlier row is
// Dead can only be handed back (doc.go: "A row behind a failed or Dead row
// is handed back, due again a second later"). But a blocked row waits for
// every claim its relay has in progress (flights.wait: f.claims > 0),
// whatever the claim: a dispatch claim, which cannot take a Dead (or a
// backing-off) row, or a resend claim, which takes only Sent rows. While
// that claim is slow (a loaded database, a saturated pool, a resend claim
// going through many Sent rows), Transact does not return and its row
// stays claimed; a claim slower than the lease keeps it claimed (and the
// caller waiting) for the whole lease, a minute by default.
func TestABlockedRowIsNotHeldByAnUnrelatedClaim(t *testing.T) {
	t.Parallel()
	for _, resend := range []bool{false, true} {
		t.Run(map[bool]string{false: "dispatch claim", true: "resend claim"}[resend], func(t *testing.T) {
			t.Parallel()
			fake := newFakeStore(time.Minute)
			store := newSlowClaims(fake)
			p := &pub{}
			r := flightsRelay(t, store, fake, p)
			ctx := context.Background()
			dead, _, err := r.Enqueue(ctx, nil, Message{Topic: "orders", Key: "k-1", ShardingKey: "k", Body: []byte("x")})
			if err != nil {
				t.Fatal(err)
			}
			fake.mu.Lock()
			fake.rows[dead].Status = Dead
			fake.mu.Unlock()
			claimSlowly(t, r, store, resend)

			done := make(chan error, 1)
			go func() {
				done <- r.Transact(ctx, func(ctx context.Context, tx *Tx) error {
					_, err := tx.Enqueue(ctx, Message{Topic: "orders", Key: "k-2", ShardingKey: "k", Body: []byte("x")})
					return err
				})
			}()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(3 * time.Second):
				close(store.gate)
				<-done
				t.Fatal("Transact of a row behind a Dead row waited for an unrelated claim in progress (it returned only once that claim ended)")
			}
			if n := p.count("k-2"); n != 0 {
				t.Fatalf("k-2 sent %d times behind a Dead row", n)
			}
			rows, _ := fake.find(ctx, "k-2")
			if len(rows) != 1 || rows[0].Status != Pending || rows[0].Attempts != 0 {
				t.Fatalf("k-2: %+v", rows)
			}
		})
	}
}

// countingPredecessor counts the earlier-row checks of each row.
type countingPredecessor struct {
	*fakeStore
	mu     sync.Mutex
	checks map[int64]int
}

func (s *countingPredecessor) predecessor(ctx context.Context, row *Row) (earlier, time.Duration, error) {
	s.mu.Lock()
	s.checks[row.ID]++
	s.mu.Unlock()
	return s.fakeStore.predecessor(ctx, row)
}

func (s *countingPredecessor) count(id int64) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.checks[id]
}

// TestAWaitingRowChecksOnceItsSiblingHasPassedIt: a row waiting for a
// sibling batch of its relay at an earlier row of its key is woken by
// every move of that sibling and queries the database again each time,
// though it can only go on once no sibling is at an earlier row: one
// check per row the sibling sends. Two claims split a key's backlog (the
// job's two claim loops, batch 500 by default), so the first row of the
// later batch runs the earlier-row check up to 500 times, each reading the
// sibling's still claimed rows: one run over a 1,000-row backlog of one
// key (batch 500) read about 200,000 rows through the server's handlers
// (9,000 for 1,000 keys), 2,000 rows (batch 1,000) about 576,000.
func TestAWaitingRowChecksOnceItsSiblingHasPassedIt(t *testing.T) {
	t.Parallel()
	fake := newFakeStore(time.Minute)
	store := &countingPredecessor{fakeStore: fake, checks: map[int64]int{}}
	started, gate := make(chan struct{}), make(chan struct{})
	var once sync.Once
	var last int64
	p := &pub{onSend: func(m producer.Message) {
		var i int
		fmt.Sscanf(m.Keys[0], "k-%d", &i)
		if i == 1 {
			once.Do(func() { close(started) })
			<-gate
		}
		// A broker's round trip: long enough for the waiting row to look
		// again after each of the sibling's moves (at most 30 ms).
		for end := time.Now().Add(30 * time.Millisecond); store.count(last) < i-1 && time.Now().Before(end); {
			time.Sleep(100 * time.Microsecond)
		}
	}}
	r := flightsRelay(t, store, fake, p)
	ctx := context.Background()
	const ahead = 40
	for i := 1; i <= ahead+1; i++ {
		id, _, err := r.Enqueue(ctx, nil, Message{Topic: "orders", Key: fmt.Sprint("k-", i), ShardingKey: "k", Body: []byte("x")})
		if err != nil {
			t.Fatal(err)
		}
		last = id
	}
	var wg sync.WaitGroup
	var first, second BatchReport
	var firstErr, secondErr error
	wg.Go(func() { first, firstErr = r.DispatchDue(ctx, ahead) })
	<-started
	wg.Go(func() { second, secondErr = r.DispatchDue(ctx, 10) })
	for store.count(last) == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // the later row is waiting now
	close(gate)
	wg.Wait()
	if firstErr != nil || secondErr != nil || first.Sent+second.Sent != ahead+1 {
		t.Fatalf("batches %+v %v, %+v %v", first, firstErr, second, secondErr)
	}
	if got := p.keys(); len(got) != ahead+1 || got[ahead] != fmt.Sprint("k-", ahead+1) {
		t.Fatalf("sent %v", got)
	}
	t.Logf("checks of the last row: %d; reports %+v %+v", store.count(last), first, second)
	if n := store.count(last); n > 5 {
		t.Fatalf("the row behind a %d-row sibling batch checked its earlier rows %d times while it waited (once per row the sibling sent)", ahead, n)
	}
}

// TestARowPollsForAnotherProcessWhileItsRelayClaims: a row whose earlier
// row another process has claimed polls for it, up to 5 s (inFlightWait),
// and is sent as soon as that row is Sent. While its own relay has a claim
// in progress, flights.wait takes the claim's idle channel and drops the
// nap: the row stops polling and waits for that claim instead. The earlier
// row is Sent, and the row is not sent until the unrelated claim ends,
// however long past the documented 5 s that is (up to the lease).
func TestARowPollsForAnotherProcessWhileItsRelayClaims(t *testing.T) {
	t.Parallel()
	for _, resend := range []bool{false, true} {
		t.Run(map[bool]string{false: "dispatch claim", true: "resend claim"}[resend], func(t *testing.T) {
			t.Parallel()
			fake := newFakeStore(time.Minute)
			store := newSlowClaims(fake)
			p := &pub{}
			r := flightsRelay(t, store, fake, p)
			ctx := context.Background()
			earlier, _, err := r.Enqueue(ctx, nil, Message{Topic: "orders", Key: "k-1", ShardingKey: "k", Body: []byte("x")})
			if err != nil {
				t.Fatal(err)
			}
			// Another process claims the earlier row.
			if rows, err := fake.claimDue(ctx, "another-process", time.Time{}, 10); err != nil || len(rows) != 1 {
				t.Fatalf("claim %v %v", rows, err)
			}
			claimSlowly(t, r, store, resend)

			done := make(chan error, 1)
			go func() {
				done <- r.Transact(ctx, func(ctx context.Context, tx *Tx) error {
					_, err := tx.Enqueue(ctx, Message{Topic: "orders", Key: "k-2", ShardingKey: "k", Body: []byte("x")})
					return err
				})
			}()
			time.Sleep(100 * time.Millisecond) // k-2 waits for k-1
			// The other process sends k-1.
			if held, err := fake.markSent(ctx, earlier, "another-process", "m-1"); err != nil || !held {
				t.Fatalf("mark k-1: %v %v", held, err)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(2 * time.Second): // polling notices within 50 ms (maxNap)
				close(store.gate)
				<-done
				t.Fatal("k-2 was not sent within 2s of k-1 being Sent by another process: it stopped polling to wait for an unrelated claim of its relay")
			}
			if n := p.count("k-2"); n != 1 {
				t.Fatalf("k-2 sent %d times after k-1 was Sent", n)
			}
		})
	}
}

// TestAnAlertThatEnqueuesOnItsKeyDoesNotStallTheRelay: the alert runs in
// the group that made its row Dead, while that group is still in flight
// at the row. An alert that records the failure through the outbox on the
// same sharding key (a compensating "order o-1 failed" event, keyed by the
// order like its other events) runs Transact, whose row is behind the Dead
// row: it was handed back at once; now it waits for the group at the
// earlier row, which is the group running the alert, so both wait until
// the Transact's lease ends (a minute by default) and the batch with them.
func TestAnAlertThatEnqueuesOnItsKeyDoesNotStallTheRelay(t *testing.T) {
	t.Parallel()
	fake := newFakeStore(time.Minute)
	p := &pub{fail: func(m producer.Message) error {
		if m.Keys[0] == "o-1-paid" {
			return sendErr(producer.Permanent, "topic not allowed")
		}
		return nil
	}}
	var r *Relay
	alerted := make(chan error, 1)
	r = flightsRelay(t, fake, fake, p, WithAlert(func(ctx context.Context, row *Row) {
		alerted <- r.Transact(ctx, func(ctx context.Context, tx *Tx) error {
			_, err := tx.Enqueue(ctx, Message{Topic: "orders", Key: "o-1-failed", ShardingKey: row.ShardingKey, Body: []byte("x")})
			return err
		})
	}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, _, err := r.Enqueue(ctx, nil, Message{Topic: "orders", Key: "o-1-paid", ShardingKey: "o-1", Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	done := make(chan BatchReport, 1)
	go func() {
		rep, _ := r.DispatchDue(ctx, 10)
		done <- rep
	}()
	select {
	case rep := <-done:
		if rep.Dead != 1 {
			t.Fatalf("report %+v, want the row Dead", rep)
		}
	case <-time.After(3 * time.Second):
		cancel()
		<-done
		t.Fatal("the batch whose row went Dead stalled: its alert's Transact on the same key waits for the group running the alert")
	}
	if err := <-alerted; err != nil {
		t.Fatal(err)
	}
	if n := p.count("o-1-failed"); n != 0 {
		t.Fatalf("o-1-failed sent %d times behind a Dead row", n)
	}
}

// TestARowBehindABackingOffRowIsDueWithIt: a row behind an earlier row of
// its key that failed and backs off was handed back for a second, again
// and again until that row was due: with a backlog of such keys, most of
// every claim was rows handed straight back (one run with a sustained
// per-key backlog claimed 4,986 rows, sent 229 and handed back 4,720).
// Such a row is due again when the row before it is; behind a Dead row,
// a second later, as before.
func TestARowBehindABackingOffRowIsDueWithIt(t *testing.T) {
	t.Parallel()
	fake := newFakeStore(time.Minute)
	p := &pub{fail: func(m producer.Message) error {
		if m.Keys[0] == "k-1" {
			return sendErr(producer.Transient, "broker busy")
		}
		return nil
	}}
	r := flightsRelay(t, fake, fake, p, WithBackoff(time.Minute, time.Hour))
	ctx := context.Background()
	var ids []int64
	for _, k := range []string{"k-1", "k-2", "k-3"} {
		id, _, err := r.Enqueue(ctx, nil, Message{Topic: "orders", Key: k, ShardingKey: "k", Body: []byte("x")})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	due := func(id int64) time.Time {
		fake.mu.Lock()
		defer fake.mu.Unlock()
		return fake.rows[id].NextAttemptAt
	}
	// k-2 and k-3, in k-1's claim, are handed back with its failure, due
	// when it is (they were due a second later).
	if rep, err := r.DispatchDue(ctx, 10); err != nil || rep.Failed != 1 || rep.Blocked != 2 {
		t.Fatalf("first dispatch: %+v, %v", rep, err)
	}
	checkDue := func() {
		t.Helper()
		for _, id := range ids[1:] {
			if got, want := due(id), due(ids[0]); !got.Equal(want) {
				t.Fatalf("row %d due at %v, want with the row before it, at %v (now %v)", id, got, want, fake.clock())
			}
		}
	}
	checkDue()
	// Claimed with a row of another key before k-1 failed, they are handed
	// back in a later claim: due with k-1 too.
	fake.mu.Lock()
	for _, id := range ids[1:] {
		fake.rows[id].NextAttemptAt = fake.now
	}
	fake.mu.Unlock()
	if rep, err := r.DispatchDue(ctx, 10); err != nil || rep.Blocked != 2 || p.count("k-2") != 0 {
		t.Fatalf("second dispatch: %+v, %v", rep, err)
	}
	checkDue()
	// Made Dead, k-1 holds its key until a replay: the rows behind it are
	// due again a second later, to be sent soon after the replay.
	next := due(ids[1])
	fake.mu.Lock()
	fake.rows[ids[0]].Status = Dead
	fake.now = next
	fake.mu.Unlock()
	if rep, err := r.DispatchDue(ctx, 10); err != nil || rep.Blocked != 2 {
		t.Fatalf("dispatch behind a dead row: %+v, %v", rep, err)
	}
	if got, want := due(ids[1]), fake.clock().Add(blockedRetry); !got.Equal(want) {
		t.Fatalf("behind a dead row, due at %v, want %v", got, want)
	}
}

// TestAConfirmedBackingOffRowFreesItsKey: a send that timed out often
// reached the broker; the consumer confirms the message while its row is
// still Pending, backing off. The key's later rows, handed back until that
// row was due (up to the longest backoff, an hour here), are due at once:
// nothing before them is left to send. A confirmation rolled back frees
// nothing.
func TestAConfirmedBackingOffRowFreesItsKey(t *testing.T) {
	t.Parallel()
	onStores(t, func(t *testing.T, h *harness) {
		ctx := context.Background()
		p := &pub{fail: func(m producer.Message) error {
			if m.Keys[0] == "k-1" || m.Keys[0] == "j-1" {
				return sendErr(producer.OutcomeUnknown, "send timed out")
			}
			return nil
		}}
		r := h.relay(t, p, WithBackoff(time.Minute, time.Hour))
		for _, k := range []string{"k-1", "k-2", "j-1", "j-2"} {
			enqueue(t, h, r, Message{Key: k, ShardingKey: k[:1]})
		}
		// passes lets d pass for what is due: on MySQL every due time
		// moves back by d.
		passes := func(d time.Duration) {
			if h.fake != nil {
				h.fake.advance(d)
				return
			}
			h.db.MustExec(fmt.Sprintf("UPDATE mq_log SET next_attempt_at = next_attempt_at - INTERVAL %d MICROSECOND",
				d.Microseconds()))
		}
		if rep := dispatch(t, r); rep.Failed != 2 || rep.Blocked != 2 {
			t.Fatalf("first dispatch %+v", rep)
		}
		// The consumer got k-1 after all and confirms it; j-1's
		// confirmation is rolled back (on the fake store, never made).
		if ok, err := r.Confirm(ctx, h.ex(), "orders", "k-1"); err != nil || !ok {
			t.Fatalf("confirm k-1: %v, %v", ok, err)
		}
		if h.db != nil {
			tx := h.db.MustBegin()
			if ok, err := r.Confirm(ctx, tx, "orders", "j-1"); err != nil || !ok {
				t.Fatalf("confirm j-1: %v, %v", ok, err)
			}
			if err := tx.Rollback(); err != nil {
				t.Fatal(err)
			}
		}
		passes(2 * time.Second)
		rep := dispatch(t, r)
		if p.count("k-2") != 1 {
			t.Fatalf("2 s after k-1 was confirmed, k-2 is unsent (dispatch %+v): it waits for the due time of a "+
				"Confirmed row", rep)
		}
		if n := p.count("j-2"); n != 0 || rep.Sent != 1 {
			t.Fatalf("j-2 sent %d times (dispatch %+v) while j-1 backs off, not confirmed", n, rep)
		}
	})
}

// lockingPredecessor runs lock on its first predecessor check: another
// transaction takes a row lock while the relay holds the row.
type lockingPredecessor struct {
	*mysqlStore
	lock func()
	once sync.Once
}

func (s *lockingPredecessor) predecessor(ctx context.Context, row *Row) (earlier, time.Duration, error) {
	s.once.Do(s.lock)
	return s.mysqlStore.predecessor(ctx, row)
}

// TestOneLockedRowDoesNotKeepTheGroupClaimed: a group's rows are handed
// back first skipping a row another transaction has locked (a business
// transaction reading it FOR UPDATE), then waiting for that row. At the
// servers' default lock wait timeout (50 s) one UPDATE waiting behind it
// was cut short by the hand-back's own 10 s bound, and no row of the group
// was handed back. Now every other row is handed back while the lock is
// held, and the locked row once it is let go.
func TestOneLockedRowDoesNotKeepTheGroupClaimed(t *testing.T) {
	t.Parallel()
	base := testenv.MySQL(t)
	db := testenv.MySQLWith(t, base, func(c *mysql.Config) {
		c.Params = map[string]string{"innodb_lock_wait_timeout": "50"} // the servers' default
	})
	c, err := newConfig([]Option{WithLogger(slog.New(slog.DiscardHandler))})
	if err != nil {
		t.Fatal(err)
	}
	const n = lockChunk + 101 // rows behind a Dead row: two chunks
	ctx := context.Background()
	store := &lockingPredecessor{mysqlStore: newMySQLStore(db, c.table, c.lease)}
	r := newRelay(store, &pub{}, c)
	h := &harness{db: base}
	dead := enqueue(t, h, r, Message{Key: "k-0", ShardingKey: "k"})
	base.MustExec("UPDATE mq_log SET status = 3 WHERE id = ?", dead)
	var locked int64
	for i := 1; i <= n; i++ {
		id := enqueue(t, h, r, Message{Key: fmt.Sprint("k-", i), ShardingKey: "k"})
		if i == 2 {
			locked = id
		}
	}
	lockTx := base.MustBegin()
	t.Cleanup(func() { _ = lockTx.Rollback() })
	store.lock = func() {
		var id int64
		if err := lockTx.Get(&id, "SELECT id FROM mq_log WHERE id = ? FOR UPDATE", locked); err != nil {
			t.Errorf("lock row %d: %v", locked, err)
		}
	}
	type result struct {
		rep BatchReport
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := r.DispatchDue(ctx, 1000)
		done <- result{rep, err}
	}()
	claimed := func() []int64 {
		var held []int64
		if err := base.Select(&held, "SELECT id FROM mq_log WHERE lease_owner <> ''"); err != nil {
			t.Fatal(err)
		}
		return held
	}
	// While the lock is held, every other row is handed back.
	deadline := time.Now().Add(5 * time.Second)
	held := claimed()
	for (len(held) != 1 || held[0] != locked) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
		held = claimed()
	}
	if len(held) != 1 || held[0] != locked {
		t.Fatalf("rows %v claimed while row %d is locked, want only that row", held, locked)
	}
	_ = lockTx.Rollback()
	res := <-done
	if res.rep.Claimed != n || res.rep.Blocked != n || res.err != nil {
		t.Fatalf("dispatch %+v, %v; want %d rows claimed and handed back", res.rep, res.err, n)
	}
	if held := claimed(); len(held) != 0 {
		t.Fatalf("rows %v still claimed after the lock was let go", held)
	}
}

// TestAnUncappedBackoffNeverPanics: WithBackoff(first, math.MaxInt64)
// reads as no cap. Doubling the wait overflowed at attempt 35 from 1 s,
// and rand.N panicked on a send goroutine, where nothing recovers it.
func TestAnUncappedBackoffNeverPanics(t *testing.T) {
	t.Parallel()
	c, err := newConfig([]Option{WithBackoff(time.Second, math.MaxInt64), WithLogger(slog.New(slog.DiscardHandler))})
	if err != nil {
		t.Fatal(err)
	}
	r := newRelay(newFakeStore(time.Minute), &pub{}, c)
	prev := time.Duration(0)
	for attempts := 1; attempts < 100; attempts++ {
		d := r.backoff(attempts)
		if d < time.Second/2 || (attempts > 2 && d < prev/4) {
			t.Fatalf("backoff(%d) = %v after %v", attempts, d, prev)
		}
		prev = d
	}
}
