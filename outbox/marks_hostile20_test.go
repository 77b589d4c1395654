package outbox

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

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
// sent again once their lease ended. The mark now skips the locked row.
func TestAnOpenConfirmDoesNotLoseOtherCallsMarks(t *testing.T) {
	t.Parallel()
	base := testenv.MySQL(t)
	c, err := newConfig([]Option{WithLogger(slog.New(slog.DiscardHandler))})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	store := &gatedMySQL{mysqlStore: newMySQLStore(base, c.table, c.lease), gate: make(chan struct{})}
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
	start := time.Now()
	flushErr := r.Flush(ctx)
	took := time.Since(start)
	var status int
	if err := base.Get(&status, "SELECT status FROM mq_log WHERE biz_key = 'y'"); err != nil {
		t.Fatal(err)
	}
	if status != int(Sent) {
		t.Fatalf("y (never touched by the consumer) is %v after Flush (%v, took %v): its mark failed because the consumer "+
			"holds x's row lock", Status(status), flushErr, took.Round(time.Second))
	}
}

// TestARowLockedForAMomentIsStillMarked: a row another transaction holds
// for a moment (another relay's claim reading past it) is marked once it
// is free, not skipped and sent again after its lease (seen as a row sent
// twice by three reconcile instances).
func TestARowLockedForAMomentIsStillMarked(t *testing.T) {
	t.Parallel()
	base := testenv.MySQL(t)
	c, err := newConfig([]Option{WithLogger(slog.New(slog.DiscardHandler))})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	store := &gatedMySQL{mysqlStore: newMySQLStore(base, c.table, c.lease), gate: make(chan struct{})}
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
