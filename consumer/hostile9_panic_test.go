package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	rmqconsumer "github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/observe"
)

// clientCall runs the listener the way the v2.1.2 client does: on a
// goroutine of its own, swallowing a panic (primitive.WithRecover and the
// consume goroutine's own recover). It reports the result and whether the
// call panicked.
func clientCall(listener func(context.Context, ...*primitive.MessageExt) (rmqconsumer.ConsumeResult, error),
	msgs ...*primitive.MessageExt) <-chan any {
	out := make(chan any, 1)
	go func() {
		defer func() {
			if v := recover(); v != nil {
				out <- v
			}
		}()
		r, _ := listener(context.Background(), msgs...)
		out <- r
	}()
	return out
}

// TestTroubleAlertPanicInRetryStoreLeavesCloseWorking: the trouble alert
// (WithTroubleAlert) runs on the client's goroutine when the retry store
// keeps failing, after consumeConcurrently registered its retry sends with
// Close. A panic in it must not escape (the client would swallow it and
// hold the message) nor leave that registration open: Close would then
// wait for it for ever, past its shutdown timeout. The failed message
// stays unacknowledged: its copy was never stored.
func TestTroubleAlertPanicInRetryStoreLeavesCloseWorking(t *testing.T) {
	alerted := make(chan struct{})
	var alerts atomic.Int32
	var buf testenv.Logs
	c := fakeStarted(t, func(context.Context, *Message) error { return errors.New("fails") },
		WithParker(nopParker{}), WithShutdownTimeout(100*time.Millisecond),
		WithLogger(buf.Logger()),
		WithTroubleAlert(func(context.Context, Trouble) {
			if alerts.Add(1) == 1 {
				close(alerted)
			}
			panic("trouble alert exploded")
		}))
	// Nothing listens on port 1: every retry send fails at once.
	m := &primitive.MessageExt{Message: primitive.Message{Topic: "T", Body: []byte("b")}, MsgId: "id0", StoreHost: "127.0.0.1:1"}
	m.WithKeys([]string{"k0"})
	res := clientCall(c.consumeConcurrently, m)
	select {
	case <-alerted:
	case <-time.After(time.Minute):
		t.Fatal("the retry store's failures were never reported")
	}
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("Close still waiting for the retry sends of a batch whose trouble alert panicked")
	}
	select {
	case r := <-res:
		if r != rmqconsumer.ConsumeRetryLater {
			t.Fatalf("the listener gave %v; want ConsumeRetryLater (the copy was never stored), without a panic", r)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the listener never returned")
	}
	checkPanicLogged(t, buf.String(), "trouble alert exploded")
}

// countingParker records every park, each one new.
type countingParker struct{ parks atomic.Int32 }

func (p *countingParker) Park(context.Context, *DeadLetter) (bool, error) {
	p.parks.Add(1)
	return true, nil
}

// TestAlertPanicKeepsAParkedMessageParked: a message parked (here on a
// Permanent error) is settled when the alert (WithAlert) runs. A panic in
// the alert must leave it acknowledged: made a retry, it would be parked
// and run again (with a guard its key was forgotten when it was parked,
// so the handler would run again however the guard stands).
func TestAlertPanicKeepsAParkedMessageParked(t *testing.T) {
	for _, size := range []int{1, 3} {
		var ran atomic.Int32
		parker := &countingParker{}
		var buf testenv.Logs
		c := fakeStarted(t, func(context.Context, *Message) error {
			ran.Add(1)
			return Permanent(errors.New("never works"))
		}, WithParker(parker), WithBatchSize(size), WithLogger(buf.Logger()),
			WithAlert(func(context.Context, *DeadLetter) { panic("alert exploded") }))
		msgs := make([]*primitive.MessageExt, size)
		for i := range msgs {
			msgs[i] = &primitive.MessageExt{Message: primitive.Message{Topic: "T"}, MsgId: "id" + string(rune('0'+i)), StoreHost: "127.0.0.1:1"}
			msgs[i].WithKeys([]string{"k" + string(rune('0'+i))})
		}
		select {
		case r := <-clientCall(c.consumeConcurrently, msgs...):
			if r != rmqconsumer.ConsumeSuccess {
				t.Errorf("batch of %d: the listener gave %v; want ConsumeSuccess (every message parked)", size, r)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("batch of %d: parked messages made retries (their copies cannot be stored here)", size)
		}
		if ran.Load() != int32(size) || parker.parks.Load() != int32(size) {
			t.Errorf("batch of %d: ran %d, parked %d; want each once", size, ran.Load(), parker.parks.Load())
		}
		if c.Stats().Retries != 0 {
			t.Errorf("batch of %d: %d retries; want none", size, c.Stats().Retries)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		checkPanicLogged(t, buf.String(), "alert exploded")
	}
}

// TestPanicCountsARetryPerMessageRetried: Stats.Retries counts the
// messages a panic outside the handler made retries, not the panics: a
// panic in the hook's end after a success retries nothing (the message
// stays handled), and one in the key func retries the whole batch.
func TestPanicCountsARetryPerMessageRetried(t *testing.T) {
	for _, size := range []int{1, 4} {
		c := fakeStarted(t, func(context.Context, *Message) error { return nil },
			WithParker(nopParker{}), WithBatchSize(size), WithLogger(slog.New(slog.DiscardHandler)),
			WithHooks(observe.Hooks{Handle: func(ctx context.Context, m observe.Message) (context.Context, func(error)) {
				return ctx, func(error) { panic("end exploded") }
			}}))
		c.handleBatch(context.Background(), newItems(testMsgs(size), "", ""))
		if s := c.Stats(); s.Handled != int64(size) || s.Retries != 0 {
			t.Errorf("batch of %d, end hook panics: handled %d, retries %d; want %d handled, no retry", size, s.Handled, s.Retries, size)
		}
		c.Close()

		g, err := idempotency.NewGuard("g", freeStore{})
		if err != nil {
			t.Fatal(err)
		}
		c, err = New([]string{"127.0.0.1:1"}, "g", "T", func(context.Context, *Message) error { return nil },
			WithParker(nopParker{}), WithBatchSize(size), WithLogger(slog.New(slog.DiscardHandler)), WithGuard(g),
			WithKeyFunc(func(m *Message) string {
				if m.MsgID == fmt.Sprint("id", size-1) {
					panic("key func exploded")
				}
				return m.Keys[0]
			}))
		if err != nil {
			t.Fatal(err)
		}
		c.client, c.started = fakeClient{}, true
		c.handleBatch(context.Background(), newItems(testMsgs(size), "", ""))
		if s := c.Stats(); s.Handled != 0 || s.Retries != int64(size) {
			t.Errorf("batch of %d, key func panics: handled %d, retries %d; want none handled, %d retries", size, s.Handled, s.Retries, size)
		}
		c.Close()
	}
}

func testMsgs(n int) []*primitive.MessageExt {
	msgs := make([]*primitive.MessageExt, n)
	for i := range msgs {
		msgs[i] = &primitive.MessageExt{Message: primitive.Message{Topic: "T"}, MsgId: fmt.Sprint("id", i), StoreHost: "127.0.0.1:1"}
		msgs[i].WithKeys([]string{fmt.Sprint("k", i)})
	}
	return msgs
}

// TestEventHookPanicKeepsAParkedMessageParked: the Parked event reports a
// message already recorded by the parker (and, with a guard, its key
// forgotten so that a replay runs). A panic in the Event hook then must
// leave it parked and acknowledged: made a retry it would run again, and
// its dead letter, replayed later, would apply it once more.
func TestEventHookPanicKeepsAParkedMessageParked(t *testing.T) {
	for _, guarded := range []bool{false, true} {
		for _, size := range []int{1, 3} {
			var ran atomic.Int32
			parker := &countingParker{}
			var buf testenv.Logs
			opts := []Option{WithParker(parker), WithBatchSize(size), WithLogger(buf.Logger()),
				WithHooks(observe.Hooks{Event: func(_ context.Context, e observe.Event) {
					if e.Kind == observe.Parked {
						panic("parked event exploded")
					}
				}})}
			if guarded {
				g, err := idempotency.NewGuard("g", freeStore{})
				if err != nil {
					t.Fatal(err)
				}
				opts = append(opts, WithGuard(g))
			}
			c := fakeStarted(t, func(context.Context, *Message) error {
				ran.Add(1)
				return Permanent(errors.New("never works"))
			}, opts...)
			select {
			case r := <-clientCall(c.consumeConcurrently, testMsgs(size)...):
				if r != rmqconsumer.ConsumeSuccess {
					t.Errorf("guarded %v, batch of %d: the listener gave %v; want ConsumeSuccess (every message parked)", guarded, size, r)
				}
			case <-time.After(20 * time.Second):
				c.Close()
				t.Fatalf("guarded %v, batch of %d: parked messages made retries (their copies cannot be stored here)", guarded, size)
			}
			if ran.Load() != int32(size) || parker.parks.Load() != int32(size) || c.Stats().Retries != 0 {
				t.Errorf("guarded %v, batch of %d: ran %d, parked %d, retries %d; want each once, no retry",
					guarded, size, ran.Load(), parker.parks.Load(), c.Stats().Retries)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			checkPanicLogged(t, buf.String(), "parked event exploded")
		}
	}
}

// plainStore hides the batch methods of the store it holds: the guard
// claims and completes one key at a time.
type plainStore struct{ s idempotency.Store }

func (p plainStore) Claim(ctx context.Context, group, key, token string, lease time.Duration) (idempotency.Outcome, int, error) {
	return p.s.Claim(ctx, group, key, token, lease)
}

func (p plainStore) Complete(ctx context.Context, group, key, token string, retain time.Duration) error {
	return p.s.Complete(ctx, group, key, token, retain)
}

func (p plainStore) Release(ctx context.Context, group, key, token string, forget bool) error {
	return p.s.Release(ctx, group, key, token, forget)
}

// TestPanicAfterASuccessKeepsTheMessageHandled: once its handler
// succeeded, a message is settled (its effect applied). A panic after that
// (the guard's store completing it one key at a time, or the Event hook on
// Handled) must leave it acknowledged, as a store that fails or panics in
// a combined completion does. Made a retry, its key is neither done nor
// released: the retry comes back busy until the lease ends, then runs the
// handler again.
func TestPanicAfterASuccessKeepsTheMessageHandled(t *testing.T) {
	t.Run("plain store completes", func(t *testing.T) {
		g, err := idempotency.NewGuard("g", plainStore{panickingStore{freeStore{}, "complete"}})
		if err != nil {
			t.Fatal(err)
		}
		if g.Batched() {
			t.Fatal("the store has batch methods")
		}
		for _, size := range []int{1, 4} {
			v, ran, log := panicky(t, size, WithGuard(g))
			for k, got := range v {
				if got != ack || ran[k] != 1 {
					t.Errorf("batch of %d, %s: verdict %d, ran %d times; want acknowledged after one run", size, k, got, ran[k])
				}
			}
			if !strings.Contains(log, "handled but not recorded as done") || !strings.Contains(log, "complete exploded") {
				t.Errorf("the store's panic is not reported as a failed completion:\n%s", log)
			}
		}
	})
	t.Run("Handled event", func(t *testing.T) {
		g, err := idempotency.NewGuard("g", freeStore{})
		if err != nil {
			t.Fatal(err)
		}
		for _, opts := range [][]Option{nil, {WithGuard(g)}} {
			for _, size := range []int{1, 4} {
				v, ran, log := panicky(t, size, append(opts, WithHooks(observe.Hooks{Event: func(_ context.Context, e observe.Event) {
					if e.Kind == observe.Handled {
						panic("handled event exploded")
					}
				}}))...)
				for k, got := range v {
					if got != ack || ran[k] != 1 {
						t.Errorf("guarded %v, batch of %d, %s: verdict %d, ran %d times; want acknowledged after one run", opts != nil, size, k, got, ran[k])
					}
				}
				checkPanicLogged(t, log, "handled event exploded")
			}
		}
	})
}
