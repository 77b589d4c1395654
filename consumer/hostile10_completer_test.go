package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	rmqconsumer "github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/observe"
)

// dyingStore records completions like strictBatchStore and then, now and
// then, dies before it answers: an error for some keys, or a panic for
// the whole round trip. The keys are done either way (the reply was
// lost), so their redeliveries are duplicates.
type dyingStore struct {
	strictBatchStore
	lost atomic.Int32 // completions answered with an error or a panic
}

var errReplyLost = errors.New("connection reset after commit")

func (s *dyingStore) CompleteBatch(ctx context.Context, group string, items []idempotency.KeyToken, retain time.Duration) []error {
	errs := s.strictBatchStore.CompleteBatch(ctx, group, items, retain)
	switch rand.IntN(8) {
	case 0:
		s.lost.Add(int32(len(items)))
		panic("store died mid-round-trip")
	case 1:
		for i := range errs {
			if errs[i] == nil && rand.IntN(2) == 0 {
				errs[i] = errReplyLost
				s.lost.Add(1)
			}
		}
	}
	return errs
}

func (s *dyingStore) Complete(ctx context.Context, group, key, token string, retain time.Duration) error {
	return s.CompleteBatch(ctx, group, []idempotency.KeyToken{{Key: key, Token: token}}, retain)[0]
}

// TestCompleterUnderLoadSettlesEachHandledMessageOnce: many concurrent
// batches, keys repeated within and across them, completions recorded by
// the completer while the store dies now and then mid-round-trip, and
// hooks whose end panics now and then. Every handler's hooks' Handle ends
// exactly once; Stats.Handled counts each handler run once (every one
// succeeds), and each completion the store did not confirm is a store
// error; every message is acknowledged only once its key is done; and
// Close stops the completer goroutine.
func TestCompleterUnderLoadSettlesEachHandledMessageOnce(t *testing.T) {
	ss := newStrictStore()
	store := &dyingStore{strictBatchStore: strictBatchStore{ss}}
	g, err := idempotency.NewGuard("g", store, idempotency.WithLease(10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	var begins, ends, doubleEnds, runs atomic.Int32
	hooks := observe.Hooks{Handle: func(ctx context.Context, m observe.Message) (context.Context, func(error)) {
		begins.Add(1)
		var once atomic.Int32
		return ctx, func(err error) {
			ends.Add(1)
			if once.Add(1) > 1 {
				doubleEnds.Add(1)
			}
			if rand.IntN(6) == 0 {
				panic("span exporter closed")
			}
		}
	}}
	h := func(context.Context, *Message) error {
		runs.Add(1)
		if rand.IntN(4) == 0 {
			time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
		}
		return nil
	}
	c := fakeStarted(t, h, WithParker(nopParker{}), WithGuard(g), WithBatchSize(16),
		WithHooks(hooks), WithLogger(slog.New(slog.DiscardHandler)))
	const keys, copies = 200, 3
	acked, early := redeliverUntilAcked(t, c, keys, copies, ss.isDone)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.completer.done:
	default:
		t.Error("the completer goroutine outlived Close")
	}
	st := c.Stats()
	if acked != keys*copies || len(early) != 0 {
		t.Errorf("%d of %d acknowledged, %d before their key was done", acked, keys*copies, len(early))
	}
	if begins.Load() != runs.Load() || ends.Load() != begins.Load() || doubleEnds.Load() != 0 {
		t.Errorf("%d handler runs, %d hooks begun, %d ended, %d ended twice; want each begun and ended once",
			runs.Load(), begins.Load(), ends.Load(), doubleEnds.Load())
	}
	if st.Handled != int64(runs.Load()) || st.Handled+st.Duplicates != keys*copies {
		t.Errorf("stats %+v after %d handler runs; want each run handled once, the rest duplicates", st, runs.Load())
	}
	if lost := int64(store.lost.Load()); st.StoreErrors < lost {
		t.Errorf("%d store errors; the store failed %d completions", st.StoreErrors, lost)
	}
	if store.lost.Load() == 0 {
		t.Error("no completion failed: the test did not cover a dying store")
	}
}

// A completion submitted after close (not expected: Close waits for every
// wave) is still recorded and its wave released; close twice is a no-op;
// a completer never started stops at once.
func TestCompleterSubmitAfterClose(t *testing.T) {
	var flushed atomic.Int32
	q := newCompleter(func(_ context.Context, batch []*completion) {
		for _, r := range batch {
			r.err = errReplyLost
			flushed.Add(1)
		}
	})
	q.close()
	q.close()
	var wave sync.WaitGroup
	r := &completion{wave: &wave}
	wave.Add(1)
	q.submit(r)
	wave.Wait()
	if flushed.Load() != 1 || r.err != errReplyLost {
		t.Fatalf("flushed %d, err %v; want recorded once", flushed.Load(), r.err)
	}
	select {
	case <-q.done:
		t.Fatal("a completer that never started has a finished goroutine")
	default:
	}
}

// The orderly consumer hands its completions to the completer too: a
// message is acknowledged (ConsumeSuccess) only once its key is done,
// even when the store's reply is lost and the hooks' end panics; the
// hooks' end runs once, the redelivery is a duplicate, and Close stops
// the completer.
func TestOrderlyCompletionThroughTheCompleter(t *testing.T) {
	ss := newStrictStore()
	store := &replyLostStore{strictBatchStore{ss}}
	g, err := idempotency.NewGuard("g", store, idempotency.WithLease(10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	var ends, runs atomic.Int32
	hooks := observe.Hooks{Handle: func(ctx context.Context, m observe.Message) (context.Context, func(error)) {
		return ctx, func(error) {
			ends.Add(1)
			panic("span exporter closed")
		}
	}}
	c, err := NewOrderly([]string{"127.0.0.1:1"}, "g", "T", func(context.Context, *Message) error { runs.Add(1); return nil },
		ParkMessage, WithParker(nopParker{}), WithGuard(g), WithHooks(hooks), WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	c.client, c.started = fakeClient{}, true
	for i := range 3 {
		m := &primitive.MessageExt{Message: primitive.Message{Topic: "T"}, MsgId: fmt.Sprint("id", i)}
		m.WithKeys([]string{"order-1"})
		// The strict store refuses a claim now and then: the queue is
		// suspended and the message comes again.
		res, err := c.consumeOrderly(context.Background(), m)
		for try := 0; res == rmqconsumer.SuspendCurrentQueueAMoment && try < 50; try++ {
			res, err = c.consumeOrderly(context.Background(), m)
		}
		if err != nil || res != rmqconsumer.ConsumeSuccess {
			t.Fatalf("delivery %d: %v, %v; want ConsumeSuccess", i, res, err)
		}
		if !ss.isDone("order-1") {
			t.Fatalf("delivery %d acknowledged before its key was done", i)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	<-c.completer.done
	if st := c.Stats(); runs.Load() != 1 || ends.Load() != 1 || st.Handled != 1 || st.Duplicates != 2 || st.StoreErrors != 1+ss.claimErrs.Load() {
		t.Errorf("ran %d, hooks ended %d, stats %+v; want one run ended once, handled (a store error), then two duplicates",
			runs.Load(), ends.Load(), st)
	}
}

// replyLostStore records every completion and answers each with an error.
type replyLostStore struct{ strictBatchStore }

func (s *replyLostStore) CompleteBatch(ctx context.Context, group string, items []idempotency.KeyToken, retain time.Duration) []error {
	errs := s.strictBatchStore.CompleteBatch(ctx, group, items, retain)
	for i := range errs {
		errs[i] = errReplyLost
	}
	return errs
}

func (s *replyLostStore) Complete(ctx context.Context, group, key, token string, retain time.Duration) error {
	return s.CompleteBatch(ctx, group, []idempotency.KeyToken{{Key: key, Token: token}}, retain)[0]
}

// Completions queued while a round trip runs are recorded by the next,
// up to maxCompletions at once, oldest first; the rest by the one after.
func TestCompleterRecordsWhatQueuedUpToTheBound(t *testing.T) {
	first := make(chan struct{})
	release := make(chan struct{})
	var sizes []int
	var order []*completion
	q := newCompleter(func(_ context.Context, batch []*completion) {
		sizes = append(sizes, len(batch)) // one flush at a time
		order = append(order, batch...)
		if len(sizes) == 1 {
			close(first)
			<-release
		}
	})
	defer q.close()
	var wave sync.WaitGroup
	submitted := make([]*completion, 1+maxCompletions+10)
	for i := range submitted {
		submitted[i] = &completion{wave: &wave}
	}
	wave.Add(len(submitted))
	q.submit(submitted[0])
	<-first
	for _, r := range submitted[1:] {
		q.submit(r)
	}
	close(release)
	wave.Wait()
	if want := []int{1, maxCompletions, 10}; !slices.Equal(sizes, want) {
		t.Fatalf("round trips of %v completions; want %v", sizes, want)
	}
	if !slices.Equal(order, submitted) {
		t.Fatal("completions recorded out of the order they were submitted in")
	}
}
