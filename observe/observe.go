// Package observe is the one hook seam of reliablemq: every package that
// sends, consumes, parks or gives up on a message reports it here, and a
// message's trace context travels through it from the producer (or the
// outbox row) to the consumer's handler.
//
// The core depends on nothing but this small package. Adapters live in
// subpackages, so their dependencies stay out of programs that do not use
// them: observe/prom counts events and times sends and handlers with the
// Prometheus client; observe/otel propagates W3C trace context in message
// properties and puts a span around each handler (a send is an event on
// the sender's span).
//
// Pass [Hooks] with producer.WithHooks, outbox.WithHooks and
// consumer.WithHooks (the reconcile job and the DLQ drain use their
// relay's and consumer's). [Join] combines several. A hook runs on the
// goroutine that did the work, so it must be quick and must not block; a
// hook that panics is the program's bug, as any callback's (the consumer
// logs it at Error and retries the messages it left unsettled; the outbox
// relay logs a panicking Event hook and changes nothing).
package observe

import (
	"context"
	"errors"
	"time"
)

// Kind names what happened.
type Kind string

// Kinds of [Event].
const (
	// SendDone: a send ended. Err is nil on success; Reason is the
	// producer's outcome for a failure ("transient", "permanent",
	// "outcome unknown", "not durable").
	SendDone Kind = "send_done"
	// SendRetry: the producer retries a transient failure.
	SendRetry Kind = "send_retry"
	// Handled: a handler succeeded and the message is acknowledged.
	Handled Kind = "handled"
	// Duplicate: the guard said the key was done; acknowledged unrun.
	Duplicate Kind = "duplicate"
	// Retry: a delivery failed and the message comes back later. Reason
	// is "handler", "busy", "store" or "panic" (a hook's, the key func's
	// or a store's: a bug outside the handler). A retry copy the broker
	// then refuses is parked: Parked with "retry-refused" follows.
	Retry Kind = "retry"
	// Parked: the consumer gave up on the message and parked it. Reason
	// is its cause ("retries", "permanent", "dlq", "key-parked",
	// "retry-refused").
	Parked Kind = "parked"
	// LeaseExpired: a handler was still running when its claim's lease
	// ended; another delivery may have run the same key.
	LeaseExpired Kind = "lease_expired"
	// NotRecorded: a message was handled and acknowledged, but the guard's
	// store failed to record it done; a redelivery after the lease may
	// run it again.
	NotRecorded Kind = "not_recorded"
	// ClaimLost: work finished after its claim was taken over: a guard
	// claim completed too late, or outbox rows another relay took over.
	ClaimLost Kind = "claim_lost"
	// RowRetry: an outbox send failed; the row is due again later.
	RowRetry Kind = "row_retry"
	// RowDead: an outbox row was given up on (Dead, or unconfirmed after
	// its resends). Reason says why: "attempts", "permanent" (refused for
	// good, a first send or a resend) or "unconfirmed".
	RowDead Kind = "row_dead"
)

// Event is one thing that happened to one message.
type Event struct {
	Kind  Kind
	Topic string
	// Group is the consumer group, for consumer events.
	Group string
	// Key is the business key (the message keys joined by spaces).
	Key   string
	MsgID string
	// Attempt is the delivery or send attempt, when known.
	Attempt int
	// Duration is the send's or the handler's time, when measured.
	Duration time.Duration
	Reason   string
	Err      error
}

// Message is what a consumer hands [Hooks.Handle]: the delivery's
// identity and user properties (where the trace context travels).
type Message struct {
	Topic      string
	Group      string
	MsgID      string
	Key        string
	Properties map[string]string
}

// Hooks are the callbacks; any may be nil.
type Hooks struct {
	// Event receives every [Event].
	Event func(ctx context.Context, e Event)
	// Inject adds the trace context of ctx to an outgoing message's user
	// properties. It runs where the message is created (producer.Send, or
	// outbox enqueue, so a row sent later by reconcile keeps the trace of
	// the transaction that wrote it), and must leave properties already
	// present as they are.
	Inject func(ctx context.Context, properties map[string]string)
	// Handle starts the handling of one delivery: it returns the handler's
	// ctx (carrying the trace context found in the message) and a function
	// the consumer calls with the handler's result. The consumer ends the
	// handler's ctx no later than the ctx it gave Handle (the claim's
	// lease, Close) whatever ctx Handle returns, so return one derived
	// from it.
	Handle func(ctx context.Context, m Message) (context.Context, func(err error))
}

// errHandlePanicked ends the Handle hooks [Join] began before one that
// panicked: the handler never ran.
var errHandlePanicked = errors.New("observe: a joined Handle hook panicked; the handler did not run")

// Emit reports e, if an Event hook is set.
func (h Hooks) Emit(ctx context.Context, e Event) {
	if h.Event != nil {
		h.Event(ctx, e)
	}
}

// InjectInto returns props with the trace context of ctx added, copying
// props first so the caller's map is never modified; props itself when no
// Inject hook is set.
func (h Hooks) InjectInto(ctx context.Context, props map[string]string) map[string]string {
	if h.Inject == nil {
		return props
	}
	out := make(map[string]string, len(props)+2)
	for k, v := range props {
		out[k] = v
	}
	h.Inject(ctx, out)
	return out
}

// Begin calls Handle if set; otherwise it returns ctx and a no-op. A
// Handle that returns a nil ctx or a nil end is taken as ctx and a no-op.
func (h Hooks) Begin(ctx context.Context, m Message) (context.Context, func(error)) {
	if h.Handle == nil {
		return ctx, func(error) {}
	}
	hctx, end := h.Handle(ctx, m)
	if hctx == nil {
		hctx = ctx
	}
	if end == nil {
		end = func(error) {}
	}
	return hctx, end
}

// Join returns hooks that call each of hs in order: every Event hook,
// every Inject hook, and every Handle hook nested (the first outermost).
//
// A hook that panics (the program's bug, which the consumer contains) does
// not keep the others from their work: every Event hook still gets the
// event, and the Handle hooks begun before one that panicked in Handle or
// in its end are still ended (with an error when the handler never ran);
// then the panic goes on.
func Join(hs ...Hooks) Hooks {
	var out Hooks
	for _, h := range hs {
		if h.Event != nil {
			prev, next := out.Event, h.Event
			out.Event = func(ctx context.Context, e Event) {
				if prev != nil {
					defer next(ctx, e) // also when prev panics
					prev(ctx, e)
					return
				}
				next(ctx, e)
			}
		}
		if h.Inject != nil {
			prev, next := out.Inject, h.Inject
			out.Inject = func(ctx context.Context, p map[string]string) {
				if prev != nil {
					prev(ctx, p)
				}
				next(ctx, p)
			}
		}
		if h.Handle != nil {
			prev, next := out.Handle, h.Handle
			out.Handle = func(ctx context.Context, m Message) (context.Context, func(error)) {
				ctx, endPrev := Hooks{Handle: prev}.Begin(ctx, m)
				begun := false
				defer func() {
					if !begun { // next panicked: the handler will not run
						endPrev(errHandlePanicked)
					}
				}()
				ctx, endNext := Hooks{Handle: next}.Begin(ctx, m)
				begun = true
				return ctx, func(err error) {
					defer endPrev(err) // also when endNext panics
					endNext(err)
				}
			}
		}
	}
	return out
}
