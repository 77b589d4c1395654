package outbox

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// TestFlushReportsAMarkThatFailedBeforeIt: a background mark that fails
// before Flush is called (the usual case: the marker starts at once, the
// caller flushes on shutdown) is returned by that Flush. It was not: Flush
// reported only failures that happened while it waited, and returned nil
// with the row still Pending.
func TestFlushReportsAMarkThatFailedBeforeIt(t *testing.T) {
	t.Parallel()
	refused := errors.New("connection reset")
	s := &failingMarks{fakeStore: newFakeStore(time.Minute), err: refused}
	r := quietRelay(t, s, &pub{})
	if err := transactOne(r, "a"); err != nil {
		t.Fatal(err)
	}
	// Let the marker finish its (failed) statement before Flush is called.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		r.marks.mu.Lock()
		done := r.marks.done
		r.marks.mu.Unlock()
		if done == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	err := r.Flush(context.Background())
	rows, _ := s.find(context.Background(), "a")
	if err == nil && len(rows) == 1 && rows[0].Status != Sent {
		t.Fatalf("Flush returned nil but the row's mark was never written: row status %v", rows[0].Status)
	}
}

// gatedMySQL holds its first batched Sent mark until gate is closed (a
// slow statement), so the marks queued meanwhile share the next one.
type gatedMySQL struct {
	*mysqlStore
	once sync.Once
	gate chan struct{}
}

// newGatedMySQL returns a test database, a gated store over it and the
// config of opts with a quiet logger.
func newGatedMySQL(t *testing.T, opts ...Option) (*sqlx.DB, *gatedMySQL, config) {
	t.Helper()
	db := testenv.MySQL(t)
	c, err := newConfig(append([]Option{WithLogger(slog.New(slog.DiscardHandler))}, opts...))
	if err != nil {
		t.Fatal(err)
	}
	return db, &gatedMySQL{mysqlStore: newMySQLStore(db, c.table, c.lease), gate: make(chan struct{})}, c
}

func (s *gatedMySQL) markSentBatch(ctx context.Context, owners []string, rows []sentRow, resend bool) (int64, error) {
	s.once.Do(func() { <-s.gate })
	return s.mysqlStore.markSentBatch(ctx, owners, rows, resend)
}

// TestAnOpenConfirmDoesNotLoseOtherCallsMarks: a consumer may confirm an
// unordered row before its background Sent mark is written; its
// transaction then holds the row until it commits. The mark statement,
// shared by up to 64 Transact calls, waited for that lock, was cut short
// by its 10 s bound (before the server's lock wait timeout), and failed
// every other call's mark with it: rows the consumer never touched were
// sent again once their lease ended. The others are now marked first.
func TestAnOpenConfirmDoesNotLoseOtherCallsMarks(t *testing.T) {
	t.Parallel()
	base, store, c := newGatedMySQL(t)
	ctx := context.Background()
	consumer := base.MustBegin()
	t.Cleanup(func() { _ = consumer.Rollback() })
	var r *Relay
	p := &pub{onSend: func(m producer.Message) {
		if m.Keys[0] != "x" {
			return
		}
		// The consumer got x at once and confirms it in its transaction,
		// which goes on with its own work.
		if ok, err := r.Confirm(ctx, consumer, "orders", "x"); err != nil || !ok {
			t.Errorf("confirm x: %v, %v", ok, err)
		}
	}}
	r = newRelay(store, p, c)
	one := func(key string) {
		t.Helper()
		if err := r.Transact(ctx, func(ctx context.Context, tx *Tx) error {
			_, err := tx.Enqueue(ctx, Message{Topic: "orders", Key: key, Body: []byte(key)})
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	one("w") // its mark is held: the marker is busy
	one("x")
	one("y")
	close(store.gate)
	// y is marked while the consumer still holds x.
	status := func(key string) Status {
		var st int
		if err := base.Get(&st, "SELECT status FROM mq_log WHERE biz_key = ?", key); err != nil {
			t.Fatal(err)
		}
		return Status(st)
	}
	deadline := time.Now().Add(5 * time.Second)
	for status("y") != Sent && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if st := status("y"); st != Sent {
		t.Fatalf("y (never touched by the consumer) is %v while the consumer holds x, want Sent", st)
	}
	// Once the consumer commits, x's mark finds it Confirmed.
	if err := consumer.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if st := status("x"); st != Confirmed {
		t.Fatalf("x is %v, want Confirmed", st)
	}
}

// TestARowLockedForAMomentIsStillMarked: a row another transaction holds
// for a moment (another relay's claim reading past it) is marked once it
// is free, not skipped and sent again after its lease (seen as a row sent
// twice by three reconcile instances).
func TestARowLockedForAMomentIsStillMarked(t *testing.T) {
	t.Parallel()
	base, store, c := newGatedMySQL(t)
	ctx := context.Background()
	r := newRelay(store, &pub{}, c)
	if err := r.Transact(ctx, func(ctx context.Context, tx *Tx) error {
		_, err := tx.Enqueue(ctx, Message{Topic: "orders", Key: "a", Body: []byte("a")})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	other := base.MustBegin()
	var id int64
	if err := other.Get(&id, "SELECT id FROM mq_log WHERE biz_key = 'a' FOR UPDATE"); err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(20*time.Millisecond, func() { _ = other.Rollback() })
	close(store.gate) // the mark meets the lock
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var status int
	if err := base.Get(&status, "SELECT status FROM mq_log WHERE id = ?", id); err != nil || status != int(Sent) {
		t.Fatalf("row %v (%v), want Sent once the other transaction let it go", Status(status), err)
	}
}

// TestAMarkOutlastsAnotherRelaysSlowClaim: another relay's claim (READ
// COMMITTED, "status = 0 AND next_attempt_at <= now ... FOR UPDATE SKIP
// LOCKED") reads one record past the due range (the leased row with the
// earliest next_attempt_at: a row being sent, about to be marked) and
// keeps it locked until the claim commits. A mark that skipped it, or gave
// up on it after a few short retries, left it Pending with Flush
// returning nil, and it was sent a second time once its lease ended; the
// mark waits for it now, after marking the others.
func TestAMarkOutlastsAnotherRelaysSlowClaim(t *testing.T) {
	t.Parallel()
	base, store, c := newGatedMySQL(t, WithLease(2*time.Second))
	ctx := context.Background()
	p := &pub{}
	r := newRelay(store, p, c)
	if err := r.Transact(ctx, func(ctx context.Context, tx *Tx) error {
		_, err := tx.Enqueue(ctx, Message{Topic: "orders", Key: "a", Body: []byte("a")})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// A row due now, for the other relay's claim to take.
	if _, _, err := r.Enqueue(ctx, base, Message{Topic: "orders", Key: "d", Body: []byte("d")}); err != nil {
		t.Fatal(err)
	}
	// Another relay claims it, as mysqlStore.claim does, its transaction
	// taking 300 ms between the locking read and the commit.
	other, err := base.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	if err := other.Select(&ids, store.q.selectDue, 0, 200); err != nil || len(ids) != 1 {
		t.Fatal(ids, err)
	}
	time.AfterFunc(300*time.Millisecond, func() {
		if _, err := other.Exec(store.q.claimLocked+"'other', next_attempt_at = UTC_TIMESTAMP(6) + INTERVAL 60 SECOND WHERE id = ?", ids[0]); err != nil {
			t.Error(err)
		}
		_ = other.Commit()
	})
	close(store.gate) // the mark meets the claim's lock
	flushErr := r.Flush(ctx)
	var status int
	if err := base.Get(&status, "SELECT status FROM mq_log WHERE biz_key = 'a'"); err != nil {
		t.Fatal(err)
	}
	if status == int(Sent) {
		return
	}
	time.Sleep(c.lease + 200*time.Millisecond)
	if _, err := r.DispatchDue(ctx, 10); err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	sends := 0
	for _, m := range p.sent {
		if m.Keys[0] == "a" {
			sends++
		}
	}
	p.mu.Unlock()
	t.Fatalf("row a is %v after Flush returned %v (another relay's claim, which claimed %d rows, held it 300 ms); "+
		"once the lease ended a was sent %d times", Status(status), flushErr, len(ids), sends)
}
