package outbox

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

// failingMarks is a fake store whose batched Sent marks fail: all of
// them, or the first times of them when times is set.
type failingMarks struct {
	*fakeStore
	err   error
	times int32
	calls atomic.Int32
}

func (s *failingMarks) markSentBatch(ctx context.Context, owners []string, rows []sentRow, resend bool) (int64, error) {
	if n := s.calls.Add(1); s.err != nil && (s.times == 0 || n <= s.times) {
		return 0, s.err
	}
	return s.fakeStore.markSentBatch(ctx, owners, rows, resend)
}

func (s *failingMarks) markSent(ctx context.Context, id int64, owner, msgID string) (bool, error) {
	if n := s.calls.Add(1); s.err != nil && (s.times == 0 || n <= s.times) {
		return false, s.err
	}
	return s.fakeStore.markSent(ctx, id, owner, msgID)
}

func transactOne(r *Relay, key string) error {
	return r.Transact(context.Background(), func(ctx context.Context, tx *Tx) error {
		_, err := tx.Enqueue(ctx, Message{Topic: "t", Key: key, Body: []byte("x")})
		return err
	})
}

// TestTransactReturnsBeforeItsMark: an unordered row's Sent mark is
// written in the background; Flush waits for it, or for its ctx. A
// consumer's Confirm that comes before the mark stands.
func TestTransactReturnsBeforeItsMark(t *testing.T) {
	t.Parallel()
	s := &gatedMarks{fakeStore: newFakeStore(time.Minute), entered: make(chan struct{}), gate: make(chan struct{})}
	r := quietRelay(t, s, &pub{})
	if err := transactOne(r, "a"); err != nil {
		t.Fatal(err)
	}
	<-s.entered // Transact returned with its mark still being written
	short, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := r.Flush(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Flush while the mark is held: %v, want its ctx's end", err)
	}
	if ok, err := r.Confirm(context.Background(), nil, "t", "a"); err != nil || !ok {
		t.Fatalf("confirm before the mark: %v, %v", ok, err)
	}
	close(s.gate)
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	rows, _ := s.find(context.Background(), "a")
	if len(rows) != 1 || rows[0].Status != Confirmed {
		t.Fatalf("rows %+v, want the row Confirmed", rows)
	}
}

// TestTransactWaitsForItsMarkWhenMarksFallBehind: while the database does
// not write marks, at most markBacklog calls queue theirs and return; the
// next waits for its own (a row not marked before its lease ends is sent
// again). Once the database answers, every row is marked.
func TestTransactWaitsForItsMarkWhenMarksFallBehind(t *testing.T) {
	t.Parallel()
	s := &gatedMarks{fakeStore: newFakeStore(time.Hour), entered: make(chan struct{}), gate: make(chan struct{})}
	r := quietRelay(t, s, &pub{})
	if err := transactOne(r, "first"); err != nil {
		t.Fatal(err)
	}
	<-s.entered // the first call's mark is held
	const calls = markBacklog + 2
	var returned atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range calls {
			if err := transactOne(r, fmt.Sprint("k-", i)); err != nil {
				t.Error(err)
				return
			}
			returned.Add(1)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for returned.Load() < markBacklog && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // a call that should wait has had time to return
	if n := returned.Load(); n != markBacklog {
		t.Fatalf("%d more calls returned while marks were held, want %d", n, markBacklog)
	}
	close(s.gate)
	wg.Wait()
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if b, err := r.Backlog(context.Background()); err != nil || b.Pending != 0 {
		t.Fatalf("backlog %+v, %v: every row should be Sent", b, err)
	}
}

// TestAFailedMarkIsReportedAndTheRowSentAgain: a mark the database
// refuses is returned by Flush; its row stays Pending under the call's
// claim and reconcile sends it once the lease ends.
func TestAFailedMarkIsReportedAndTheRowSentAgain(t *testing.T) {
	t.Parallel()
	refused := errors.New("connection reset")
	s := &failingMarks{fakeStore: newFakeStore(time.Minute), err: refused}
	p := &pub{}
	r := quietRelay(t, s, p)
	if err := transactOne(r, "a"); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(context.Background()); !errors.Is(err, refused) {
		t.Fatalf("Flush: %v, want the mark's error", err)
	}
	if err := r.Flush(context.Background()); err != nil {
		t.Fatalf("a second Flush, nothing queued: %v", err)
	}
	s.advance(2 * time.Minute)
	s.err = nil
	if rep, err := r.DispatchDue(context.Background(), 10); err != nil || rep.Sent != 1 || p.count("a") != 2 {
		t.Fatalf("dispatch after the lease: %+v, %v; a sent %d times, want 2", rep, err, p.count("a"))
	}
}

// TestADeadlockedMarkIsWrittenOnTheNextTry: InnoDB may pick a mark as a
// deadlock victim (marks and the inserts of concurrent calls touch the same
// indexes); the mark is tried again, not left for reconcile to resend every
// row of its statement. Other errors are not retried.
func TestADeadlockedMarkIsWrittenOnTheNextTry(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		err   error
		calls int32
		state Status
	}{
		{&mysql.MySQLError{Number: 1213, Message: "Deadlock found"}, 3, Sent},
		{&mysql.MySQLError{Number: 1205, Message: "Lock wait timeout exceeded"}, 3, Sent},
		{&mysql.MySQLError{Number: 1146, Message: "Table doesn't exist"}, 1, Pending},
	} {
		// Without a sharding key the mark is written in the background;
		// with one, before Transact returns (the path reconcile's sends
		// take too).
		for _, sharding := range []string{"", "k"} {
			s := &failingMarks{fakeStore: newFakeStore(time.Minute), err: c.err, times: 2}
			r := quietRelay(t, s, &pub{})
			err := r.Transact(context.Background(), func(ctx context.Context, tx *Tx) error {
				_, err := tx.Enqueue(ctx, Message{Topic: "t", Key: "a", ShardingKey: sharding, Body: []byte("x")})
				return err
			})
			if flushed := r.Flush(context.Background()); err == nil {
				err = flushed
			}
			rows, _ := s.find(context.Background(), "a")
			// Flush returns a failed background mark; Transact logs a
			// failed mark of its own (a warning) and returns nil.
			wantErr := c.state != Sent && sharding == ""
			if s.calls.Load() != c.calls || len(rows) != 1 || rows[0].Status != c.state || (err != nil) != wantErr {
				t.Errorf("sharding key %q, mark failing with %v: %d statements, error %v, rows %+v; want %d statements and the row %v",
					sharding, c.err, s.calls.Load(), err, rows, c.calls, c.state)
			}
		}
	}
}

// TestADeadlockedMarkOfAResendIsWrittenOnTheNextTry: reconcile's batched
// marks are tried again too.
func TestADeadlockedMarkOfAResendIsWrittenOnTheNextTry(t *testing.T) {
	t.Parallel()
	s := &failingMarks{fakeStore: newFakeStore(time.Minute), err: &mysql.MySQLError{Number: 1213, Message: "Deadlock found"}}
	p := &pub{}
	r := quietRelay(t, s, p)
	if err := transactOne(r, "a"); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(context.Background()); err == nil || s.calls.Load() != 3 {
		t.Fatalf("Flush: %v after %d statements; want the third deadlock", err, s.calls.Load())
	}
	s.advance(2 * time.Minute) // the Transact's lease ends
	s.times = s.calls.Load() + 2
	rep, err := r.DispatchDue(context.Background(), 10)
	rows, _ := s.find(context.Background(), "a")
	if err != nil || rep.Sent != 1 || s.calls.Load() != 6 || len(rows) != 1 || rows[0].Status != Sent {
		t.Fatalf("dispatch: %+v, %v after %d statements; rows %+v; want the row Sent on the third", rep, err, s.calls.Load(), rows)
	}
}

// TestAPendingRowIsConfirmed: a consumer may confirm a row before its Sent
// mark is written, or after its send timed out; either way it is Pending.
// It moves to Confirmed once, with a sharding key or without.
func TestAPendingRowIsConfirmed(t *testing.T) {
	t.Parallel()
	onStores(t, func(t *testing.T, h *harness) {
		ctx := context.Background()
		r := h.relay(t, &pub{})
		for _, m := range []Message{{Key: "u"}, {Key: "k-1", ShardingKey: "k"}} {
			id := enqueue(t, h, r, m)
			for i, want := range []bool{true, false} {
				if ok, err := r.Confirm(ctx, h.ex(), "orders", m.Key); err != nil || ok != want {
					t.Fatalf("confirm %d of %s: %v, %v; want %v", i+1, m.Key, ok, err, want)
				}
			}
			if row, err := r.Get(ctx, id); err != nil || row.Status != Confirmed {
				t.Fatalf("%s: %+v, %v; want Confirmed", m.Key, row, err)
			}
		}
	})
}
