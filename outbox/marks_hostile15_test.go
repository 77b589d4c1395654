package outbox

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/producer"
)

// gatedMarks is a fake store whose first batched Sent mark waits for gate
// (a slow statement), and which records each batched mark's deadline.
type gatedMarks struct {
	*fakeStore
	once      sync.Once
	entered   chan struct{}
	gate      chan struct{}
	deadlines []time.Time
	onMark    func()
}

func (s *gatedMarks) markSentBatch(ctx context.Context, owners []string, rows []sentRow, resend bool) (int64, error) {
	first := false
	s.once.Do(func() { first = true })
	if dl, ok := ctx.Deadline(); ok {
		s.fakeStore.mu.Lock()
		s.deadlines = append(s.deadlines, dl)
		s.fakeStore.mu.Unlock()
	}
	if s.onMark != nil {
		s.onMark()
	}
	if first && s.gate != nil {
		close(s.entered)
		<-s.gate
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return s.fakeStore.markSentBatch(ctx, owners, rows, resend)
}

func quietRelay(t *testing.T, s rowStore, p Publisher) *Relay {
	t.Helper()
	c, err := newConfig([]Option{WithLogger(slog.New(slog.DiscardHandler))})
	if err != nil {
		t.Fatal(err)
	}
	return newRelay(s, p, c)
}

// TestTransactMarksWhatItSentAfterItsCtxEnds: a Transact whose send the
// broker accepted, and whose caller's ctx ends right after (the HTTP
// client went away), while another Transact's shared mark is in flight.
// Its own mark was dropped from the queue with the ctx, leaving the row
// Pending under Transact's claim: once the lease ended, reconcile sent it
// a second time. A mark after an accepted send outlives ctx, bounded by
// markFlushTimeout, as the relay's own marks do.
func TestTransactMarksWhatItSentAfterItsCtxEnds(t *testing.T) {
	t.Parallel()
	s := &gatedMarks{fakeStore: newFakeStore(time.Minute), entered: make(chan struct{}), gate: make(chan struct{})}
	bCtx, cancelB := context.WithCancel(context.Background())
	defer cancelB()
	bSent := make(chan struct{})
	var once sync.Once
	p := &pub{onSend: func(m producer.Message) {
		if m.Keys[0] == "b" {
			cancelB() // the broker has it; the caller is gone
			once.Do(func() { close(bSent) })
		}
	}}
	r := quietRelay(t, s, p)
	transact := func(ctx context.Context, key string) error {
		return r.Transact(ctx, func(ctx context.Context, tx *Tx) error {
			_, err := tx.Enqueue(ctx, Message{Topic: "t", Key: key, Body: []byte("x")})
			return err
		})
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := transact(context.Background(), "a"); err != nil {
			t.Error(err)
		}
	})
	<-s.entered // a's mark is in flight
	wg.Go(func() {
		if err := transact(bCtx, "b"); err != nil {
			t.Error(err)
		}
	})
	<-bSent
	time.Sleep(50 * time.Millisecond) // b waits behind a's mark, or gave up
	close(s.gate)
	wg.Wait()
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}

	s.advance(2 * time.Minute) // past Transact's lease
	if _, err := r.DispatchDue(context.Background(), 10); err != nil {
		t.Fatal(err)
	}
	if n := p.count("b"); n != 1 {
		t.Fatalf("b sent %d times, want 1: its Sent mark was dropped when its ctx ended", n)
	}
	for _, k := range []string{"a", "b"} {
		rows, _ := s.find(context.Background(), k)
		if len(rows) != 1 || rows[0].Status != Sent {
			t.Fatalf("%s: %+v, want one Sent row", k, rows)
		}
	}
}

// TestMarksAfterCtxEndsShareOneBound: a reconcile run stopped while it
// marks a large batch Sent (a statement per 500 rows) gave each
// statement its own markFlushTimeout, so a stopping job whose database
// hangs outlived its ctx by 10 s per chunk, not by markFlushTimeout. No
// mark may be allowed to run past the ctx's end plus markFlushTimeout.
func TestMarksAfterCtxEndsShareOneBound(t *testing.T) {
	t.Parallel()
	s := &gatedMarks{fakeStore: newFakeStore(time.Minute)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stopped time.Time
	s.onMark = func() {
		if stopped.IsZero() {
			stopped = time.Now()
			cancel() // SIGTERM while the first chunk is marked
			time.Sleep(20 * time.Millisecond)
		}
	}
	r := quietRelay(t, s, &pub{})
	const rows = 2*lockChunk + 1
	for i := range rows {
		if _, _, err := r.Enqueue(context.Background(), nil, Message{Topic: "t", Key: string(rune('a'+i%26)) + "-" + time.Duration(i).String(), Body: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := r.DispatchDue(ctx, rows)
	if err != nil || rep.Sent != rows {
		t.Fatalf("%+v, %v: want all %d rows marked Sent", rep, err, rows)
	}
	if len(s.deadlines) == 0 {
		t.Fatal("no mark")
	}
	for i, dl := range s.deadlines {
		if dl.After(stopped.Add(markFlushTimeout)) {
			t.Fatalf("mark %d may run until %v after ctx ended, past markFlushTimeout (%v)", i, dl.Sub(stopped), markFlushTimeout)
		}
	}
}
