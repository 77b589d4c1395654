package observe_test

import (
	"context"
	"errors"
	"testing"

	"github.com/seed157d4c4d/reliablemq/observe"
)

// counting is a Handle hook that counts its begins and ends, as a gauge of
// handlers in flight (observe/prom's) or a span (observe/otel's) does.
type counting struct{ begun, ended int }

func (c *counting) hooks() observe.Hooks {
	return observe.Hooks{Handle: func(ctx context.Context, _ observe.Message) (context.Context, func(error)) {
		c.begun++
		return ctx, func(error) { c.ended++ }
	}}
}

// mustPanic runs f and reports whether it panicked.
func mustPanic(t *testing.T, f func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	f()
}

// A consumer contains a panicking Handle hook (it logs it and retries the
// message), so the process lives on: the hooks joined before the one that
// panicked must not be left begun for ever (a gauge of handlers in flight
// raised for good, a span never ended).
func TestJoinedHandlePanicEndsTheHooksAlreadyBegun(t *testing.T) {
	t.Parallel()
	var outer counting
	boom := observe.Hooks{Handle: func(context.Context, observe.Message) (context.Context, func(error)) {
		panic("tracer bug")
	}}
	h := observe.Join(outer.hooks(), boom)
	mustPanic(t, func() { h.Begin(context.Background(), observe.Message{Topic: "orders"}) })
	if outer.begun != 1 || outer.ended != 1 {
		t.Fatalf("outer hook begun %d, ended %d; want it ended once the inner one panicked", outer.begun, outer.ended)
	}
}

// Likewise for an end function that panics: the outer hooks' ends still run.
func TestJoinedEndPanicStillEndsTheOuterHooks(t *testing.T) {
	t.Parallel()
	var outer counting
	boom := observe.Hooks{Handle: func(ctx context.Context, _ observe.Message) (context.Context, func(error)) {
		return ctx, func(error) { panic("exporter bug") }
	}}
	h := observe.Join(outer.hooks(), boom)
	_, end := h.Begin(context.Background(), observe.Message{Topic: "orders"})
	mustPanic(t, func() { end(errors.New("handler failed")) })
	if outer.ended != 1 {
		t.Fatalf("outer hook ended %d times, want 1", outer.ended)
	}
}

// Join calls each Event hook: one that panics (the program's bug, which
// the consumer contains) must not keep the event from the others, or the
// metrics silently lose what a buggy tracer choked on.
func TestJoinedEventPanicStillReachesTheOtherHooks(t *testing.T) {
	t.Parallel()
	var got []observe.Kind
	boom := observe.Hooks{Event: func(context.Context, observe.Event) { panic("tracer bug") }}
	count := observe.Hooks{Event: func(_ context.Context, e observe.Event) { got = append(got, e.Kind) }}
	for _, order := range [][]observe.Hooks{{boom, count}, {count, boom}} {
		got = nil
		h := observe.Join(order...)
		mustPanic(t, func() { h.Emit(context.Background(), observe.Event{Kind: observe.Parked}) })
		if len(got) != 1 || got[0] != observe.Parked {
			t.Errorf("counting hook got %v, want the parked event once", got)
		}
	}
}
