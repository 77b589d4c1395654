package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/observe"
	"github.com/seed157d4c4d/reliablemq/producer"
	"github.com/seed157d4c4d/reliablemq/rmqtest"
)

// TestHostile2HandleHookNilEndStallsMessage: a Handle hook that returns
// a nil end func (e.g. a tracing adapter with nothing to finish when no
// tracer is configured) makes handle's `defer end(err)` panic after the
// handler returned. observe.Hooks.Begin substitutes a no-op for a nil
// Handle, not for a nil end. The panic unwinds consumeConcurrently; the
// official client recovers it and drops the batch's result: a failed
// message never gets its retry copy nor an ack, so it is neither retried
// nor parked (it sits in the process queue, pinning the queue's offset),
// and Stats/events say nothing.
func TestHostile2HandleHookNilEndStallsMessage(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	var calls atomic.Int32
	h := func(ctx context.Context, m *consumer.Message) error {
		if calls.Add(1) == 1 {
			return errors.New("first attempt fails")
		}
		return nil
	}
	hooks := observe.Hooks{Handle: func(ctx context.Context, m observe.Message) (context.Context, func(error)) {
		return ctx, nil
	}}
	c := f.start(consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithGuard(f.guard()),
		consumer.WithParker(f.dead), consumer.WithHooks(hooks), consumer.WithRetryDelay(time.Second)))
	f.send(producer.Message{Body: []byte("x"), Keys: []string{"k-nil-end"}})
	deadline := time.Now().Add(waitFor)
	for time.Now().Before(deadline) && c.Stats().Handled == 0 {
		if b := f.env.Embedded; b != nil {
			b.Advance(5 * time.Second)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st := c.Stats(); st.Handled != 1 {
		t.Fatalf("a message whose first attempt failed was never retried (calls %d, stats %+v, parked %d): "+
			"the nil end func from the Handle hook panicked out of the delivery path", calls.Load(), st, len(f.parked()))
	}
}

// failCompleteStore is a MySQL-backed store whose Complete fails, as a
// store that goes down right between the handler and the done marker.
type failCompleteStore struct {
	idempotency.Store
	fails atomic.Int32
}

func (s *failCompleteStore) Complete(ctx context.Context, group, key, token string, retain time.Duration) error {
	s.fails.Add(1)
	return errors.New("dial tcp 127.0.0.1:3306: connect: connection refused")
}

// TestHostile2CompleteFailureIsInvisible: when the store fails exactly at
// completion, the message is acknowledged with its key still "processing"
// (after the lease a duplicate runs the effect again). The package
// promises errors are visible: every other store failure counts in
// Stats.StoreErrors, emits an observe event and, after troubleAfter in a
// row, a Trouble alert. A completion failure does none of these: only a
// log line; metrics and alerting see a healthy consumer.
func TestHostile2CompleteFailureIsInvisible(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	ms, err := idempotency.NewMySQLStore(f.db)
	if err != nil {
		t.Fatal(err)
	}
	store := &failCompleteStore{Store: ms}
	g, err := idempotency.NewGuard(f.group, store)
	if err != nil {
		t.Fatal(err)
	}
	var troubles, events atomic.Int32
	hooks := observe.Hooks{Event: func(ctx context.Context, e observe.Event) {
		if e.Err != nil || e.Kind == observe.ClaimLost {
			events.Add(1)
		}
	}}
	h := func(ctx context.Context, m *consumer.Message) error { return nil }
	c := f.start(consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithGuard(g),
		consumer.WithParker(f.dead), consumer.WithHooks(hooks), consumer.WithBatchSize(4),
		consumer.WithTroubleAlert(func(context.Context, consumer.Trouble) { troubles.Add(1) })))
	const n = 6
	for i := range n {
		f.send(producer.Message{Body: []byte("x"), Keys: []string{"k" + string(rune('a'+i))}})
	}
	f.eventually("all handled", func() bool { return c.Stats().Handled == n })
	f.settle()
	st := c.Stats()
	if store.fails.Load() == 0 {
		t.Fatal("Complete never called")
	}
	if st.StoreErrors == 0 || events.Load() == 0 || troubles.Load() == 0 {
		t.Fatalf("%d completions failed (keys acked but not recorded done) yet stats %+v, %d error events, %d trouble alerts: "+
			"the failure is only logged", store.fails.Load(), st, events.Load(), troubles.Load())
	}
}

// TestHostile2CloseReturnsWhileRetryStoreInFlight: a handler fails, and
// the retry copy's SEND_MESSAGE is slow to be answered (broker stalling,
// 2.5 s). Close begins meanwhile: its drain waits only for handlers
// (begin/end), and storeRetry runs after end(), so Close returns while a
// goroutine of this package is still inside retrySender.send, talking to
// the broker after Close returned ("everything that starts goroutines
// stops them in Close").
func TestHostile2CloseReturnsWhileRetryStoreInFlight(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	b := f.env.RequireEmbedded(t)
	failed := make(chan struct{}, 1)
	h := func(ctx context.Context, m *consumer.Message) error {
		select {
		case failed <- struct{}{}:
		default:
		}
		return errors.New("try again")
	}
	c, err := consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithGuard(f.guard()),
		consumer.WithParker(f.dead), consumer.WithBatchSize(2), consumer.WithRetryDelay(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	f.send(producer.Message{Body: []byte("x"), Keys: []string{"k-retry"}})
	b.Inject(rmqtest.SendMessage, rmqtest.Fault{Delay: 2500 * time.Millisecond, Times: 5})
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-failed:
	case <-time.After(30 * time.Second):
		t.Fatal("handler never ran")
	}
	time.Sleep(200 * time.Millisecond) // into storeRetry's send
	start := time.Now()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	// Only this consumer's goroutines count: tests running in parallel
	// store retries of their own. Its storeRetry frames name it as their
	// receiver.
	buf := make([]byte, 4<<20)
	ours := fmt.Sprintf("consumer.(*Consumer).storeRetry(%p", c)
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if strings.Contains(g, ours) {
			t.Fatalf("Close returned after %v with a retry store still running:\n%s", took, g)
		}
	}
}
