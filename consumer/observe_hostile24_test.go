package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/observe"
	rmqotel "github.com/seed157d4c4d/reliablemq/observe/otel"
	"github.com/seed157d4c4d/reliablemq/producer"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

const hostile24 = "h24"

// spanKey is the key of the value a Handle hook puts in the handler's
// ctx, as a tracer's span.
type spanKey struct{}

// detachedHooks returns hooks whose Handle gives the handler the ctx
// detach makes of the one it was given (not derived from it, as a hook
// that starts a span on context.Background() would), with a value.
func detachedHooks(t *testing.T, detach func(context.Context) context.Context) observe.Hooks {
	return observe.Hooks{Handle: func(ctx context.Context, m observe.Message) (context.Context, func(error)) {
		return context.WithValue(detach(ctx), spanKey{}, "span"), nil
	}}
}

// detachments are the ways a Handle hook can return a ctx that is not
// the one it was given, nor derived from it.
func detachments(t *testing.T) []struct {
	name   string
	detach func(context.Context) context.Context
} {
	return []struct {
		name   string
		detach func(context.Context) context.Context
	}{
		{"background", func(context.Context) context.Context { return context.Background() }},
		{"own far deadline", func(context.Context) context.Context {
			ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
			t.Cleanup(cancel)
			return ctx
		}},
		{"without cancel", context.WithoutCancel},
	}
}

// TestHandleHookCtxNotDerivedStillEndsWithTheLease: a Handle hook returns
// a ctx that is not derived from the one it was given. The handler's ctx
// must still end with its claim's lease (README: "The handler's ctx ends
// with the claim's lease, after which a redelivery may take the key
// over"): a handler that outlives its lease is a double-apply.
func TestHandleHookCtxNotDerivedStillEndsWithTheLease(t *testing.T) {
	t.Parallel()
	for _, tc := range detachments(t) {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixtureNamed(t, 1, hostile24)
			const lease, fallback = 2 * time.Second, 20 * time.Second
			type run struct {
				ended bool
				after time.Duration
				span  any
			}
			runs := make(chan run, 16)
			h := func(ctx context.Context, m *consumer.Message) error {
				start := time.Now()
				select {
				case <-ctx.Done():
					runs <- run{true, time.Since(start), ctx.Value(spanKey{})}
				case <-time.After(fallback):
					runs <- run{false, time.Since(start), ctx.Value(spanKey{})}
				}
				return nil
			}
			f.start(consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithGuard(f.guard(idempotency.WithLease(lease))),
				consumer.WithParker(f.dead), consumer.WithRetryDelay(time.Second), consumer.WithHooks(detachedHooks(t, tc.detach)), hostile6Quiet))
			f.send(producer.Message{Body: []byte("x"), Keys: []string{"k-lease"}})
			select {
			case r := <-runs:
				if !r.ended {
					t.Fatalf("the handler's ctx was still live %v after a %v lease began: a redelivery may run the key meanwhile", r.after, lease)
				}
				if r.span != "span" {
					t.Fatalf("the handler's ctx lost the hook's value (got %v)", r.span)
				}
			case <-time.After(waitFor):
				t.Fatal("the handler never ran")
			}
		})
	}
}

// TestHandleHookCtxNotDerivedStillEndsOnClose: with a Handle hook that
// returns a ctx not derived from the one it was given, Close must still
// cancel a handler that waits for its ctx once the shutdown timeout is
// over, and return; the message, not handled, is left for the next
// consumer (never acknowledged).
func TestHandleHookCtxNotDerivedStillEndsOnClose(t *testing.T) {
	t.Parallel()
	for _, tc := range detachments(t) {
		for _, guarded := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s guarded %v", tc.name, guarded), func(t *testing.T) {
				t.Parallel()
				f := newFixtureNamed(t, 1, hostile24)
				started := make(chan struct{}, 1)
				release := make(chan struct{})
				var closing atomic.Bool
				eff := newEffects()
				h := func(ctx context.Context, m *consumer.Message) error {
					if closing.Load() {
						eff.apply(m.Keys[0], string(m.Body))
						return nil
					}
					select {
					case started <- struct{}{}:
					default:
					}
					select {
					case <-ctx.Done():
						return ctx.Err()
					case <-release:
						return errors.New("released by the test")
					}
				}
				opts := []consumer.Option{consumer.WithParker(f.dead), consumer.WithMaxAttempts(1),
					consumer.WithShutdownTimeout(500 * time.Millisecond), consumer.WithHooks(detachedHooks(t, tc.detach)), hostile6Quiet}
				if guarded {
					opts = append(opts, consumer.WithGuard(f.guard()))
				}
				first, err := consumer.New(f.env.NameServers(), f.group, f.topic, h, opts...)
				if err != nil {
					t.Fatal(err)
				}
				if err := first.Start(); err != nil {
					t.Fatal(err)
				}
				f.send(producer.Message{Body: []byte("x"), Keys: []string{"k-close"}})
				select {
				case <-started:
				case <-time.After(waitFor):
					t.Fatal("the handler never ran")
				}
				closing.Store(true)
				closed := make(chan error, 1)
				go func() { closed <- first.Close() }()
				select {
				case err := <-closed:
					if err != nil {
						t.Fatal(err)
					}
				case <-time.After(30 * time.Second):
					t.Errorf("Close has not returned 30 s after its 500 ms shutdown timeout: the handler's ctx was never cancelled")
					close(release)
					<-closed
				}
				if dls := f.parked(); len(dls) != 0 {
					t.Fatalf("the interrupted message was parked (%s: %s); want it left for redelivery", dls[0].Cause, dls[0].LastError)
				}
				f.start(consumer.New(f.env.NameServers(), f.group, f.topic, h, opts...))
				f.eventually("the next consumer handled it", func() bool { return eff.count("k-close") == 1 })
			})
		}
	}
}

// TestBlockingHandleHookHonouringCtxLetsCloseReturn: a Handle hook that
// blocks (a tracer exporting synchronously to a collector that hangs)
// until its ctx ends, and an end that does the same. Close gives up
// waiting after its shutdown timeout and cancels the ctx the hook was
// given, so it returns; a message whose handler saw the cancellation is
// not acknowledged, and the next consumer handles it once.
func TestBlockingHandleHookHonouringCtxLetsCloseReturn(t *testing.T) {
	t.Parallel()
	for _, where := range []string{"handle", "end"} {
		t.Run(where, func(t *testing.T) {
			t.Parallel()
			f := newFixtureNamed(t, 1, hostile24)
			var blocking atomic.Bool
			blocking.Store(true)
			began := make(chan struct{}, 1)
			hooks := observe.Hooks{Handle: func(ctx context.Context, m observe.Message) (context.Context, func(error)) {
				if !blocking.Load() {
					return ctx, nil
				}
				if where == "handle" {
					select {
					case began <- struct{}{}:
					default:
					}
					<-ctx.Done()
					return ctx, nil
				}
				return ctx, func(error) {
					select {
					case began <- struct{}{}:
					default:
					}
					<-ctx.Done()
				}
			}}
			eff := newEffects()
			h := func(ctx context.Context, m *consumer.Message) error {
				if err := ctx.Err(); err != nil {
					return err // cancelled before it began: not applied
				}
				eff.apply(m.Keys[0], string(m.Body))
				return nil
			}
			opts := []consumer.Option{consumer.WithGuard(f.guard()), consumer.WithParker(f.dead), consumer.WithMaxAttempts(1),
				consumer.WithShutdownTimeout(500 * time.Millisecond), consumer.WithHooks(hooks), hostile6Quiet}
			first, err := consumer.New(f.env.NameServers(), f.group, f.topic, h, opts...)
			if err != nil {
				t.Fatal(err)
			}
			if err := first.Start(); err != nil {
				t.Fatal(err)
			}
			f.send(producer.Message{Body: []byte("x"), Keys: []string{"k-block"}})
			select {
			case <-began:
			case <-time.After(waitFor):
				t.Fatal("the hook never ran")
			}
			closed := make(chan error, 1)
			go func() { closed <- first.Close() }()
			select {
			case err := <-closed:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("Close has not returned 30 s after its 500 ms shutdown timeout")
			}
			blocking.Store(false)
			if dls := f.parked(); len(dls) != 0 {
				t.Fatalf("parked (%s: %s); want it handled once or left for redelivery", dls[0].Cause, dls[0].LastError)
			}
			second := f.start(consumer.New(f.env.NameServers(), f.group, f.topic, h, opts...))
			if where == "handle" {
				// The handler saw a cancelled ctx: not applied, not acknowledged.
				f.eventually("the next consumer handled it", func() bool { return eff.count("k-block") == 1 })
			} else {
				// Applied before the end blocked: acknowledged, or a duplicate.
				f.settle()
			}
			f.settle()
			if n := eff.count("k-block"); n != 1 {
				t.Fatalf("applied %d times across the restart (second consumer %+v); want once", n, second.Stats())
			}
		})
	}
}

// tally counts, per business key, the events and the Handle calls and
// ends the hooks get.
type tally struct {
	mu     sync.Mutex
	events map[string]map[observe.Kind][]observe.Event
	begun  map[string]int
	ended  map[string]int
}

func newTally() *tally {
	return &tally{events: map[string]map[observe.Kind][]observe.Event{}, begun: map[string]int{}, ended: map[string]int{}}
}

func (ta *tally) hooks() observe.Hooks {
	return observe.Hooks{
		Event: func(_ context.Context, e observe.Event) {
			ta.mu.Lock()
			defer ta.mu.Unlock()
			if ta.events[e.Key] == nil {
				ta.events[e.Key] = map[observe.Kind][]observe.Event{}
			}
			ta.events[e.Key][e.Kind] = append(ta.events[e.Key][e.Kind], e)
		},
		Handle: func(ctx context.Context, m observe.Message) (context.Context, func(error)) {
			ta.mu.Lock()
			ta.begun[m.Key]++
			ta.mu.Unlock()
			return ctx, func(error) {
				ta.mu.Lock()
				ta.ended[m.Key]++
				ta.mu.Unlock()
			}
		},
	}
}

// kinds returns how many events of each kind key got, as "kind:n" sorted
// by kind name, reasons in brackets.
func (ta *tally) kinds(key string, busyOK bool) string {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	var parts []string
	for _, k := range []observe.Kind{observe.Handled, observe.Duplicate, observe.Retry, observe.Parked,
		observe.LeaseExpired, observe.NotRecorded, observe.ClaimLost} {
		es := ta.events[key][k]
		if len(es) == 0 {
			continue
		}
		var reasons []string
		n := 0
		for _, e := range es {
			if busyOK && e.Kind == observe.Retry && e.Reason == "busy" {
				continue
			}
			n++
			if e.Reason != "" {
				reasons = append(reasons, e.Reason)
			}
		}
		if n == 0 {
			continue
		}
		p := fmt.Sprintf("%s:%d", k, n)
		if len(reasons) > 0 {
			p += "[" + strings.Join(reasons, ",") + "]"
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, " ")
}

func (ta *tally) total(kind observe.Kind) int64 {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	n := 0
	for _, m := range ta.events {
		n += len(m[kind])
	}
	return int64(n)
}

// outcomeCase is a key's messages and the events it must get.
type outcomeCase struct {
	key   string
	sends int    // messages sent with the key
	want  string // tally.kinds
	runs  int    // handler runs, each in one Handle begun and ended
	// busyOK: the key's messages may come in two concurrent batches, one
	// of them then busy (Retry "busy" events, not compared).
	busyOK bool
}

// checkTally compares each case's events and Handle calls with what it
// must get, and the stats with the events.
func checkTally(t *testing.T, ta *tally, cases []outcomeCase, st consumer.Stats) {
	t.Helper()
	for _, c := range cases {
		got := ta.kinds(c.key, c.busyOK)
		ta.mu.Lock()
		begun, ended := ta.begun[c.key], ta.ended[c.key]
		ta.mu.Unlock()
		if got != c.want || begun != c.runs || ended != c.runs {
			t.Errorf("%s: events %q, Handle begun %d ended %d; want %q, %d and %d", c.key, got, begun, ended, c.want, c.runs, c.runs)
		}
	}
	if st.Handled != ta.total(observe.Handled) || st.Duplicates != ta.total(observe.Duplicate) || st.Parked != ta.total(observe.Parked) ||
		st.Retries+st.Busy+st.StoreErrors != ta.total(observe.Retry)+ta.total(observe.NotRecorded) {
		t.Errorf("stats %+v disagree with the events: handled %d, duplicate %d, parked %d, retry %d, not recorded %d", st,
			ta.total(observe.Handled), ta.total(observe.Duplicate), ta.total(observe.Parked), ta.total(observe.Retry), ta.total(observe.NotRecorded))
	}
}

// TestBatchEventsOnePerOutcome: a batched, guarded consumer (MySQL and
// Redis stores) gets messages that succeed, fail once then succeed, are
// sent twice (one delivery a duplicate, in the same batch), fail for good
// or at the cap. Each key gets one event per outcome of each delivery:
// Handled once, a Retry per failed run, Duplicate per duplicate, Parked
// once; a Handle begun and ended per handler run; the stats agree.
func TestBatchEventsOnePerOutcome(t *testing.T) {
	t.Parallel()
	for _, store := range []string{"mysql", "redis"} {
		t.Run(store, func(t *testing.T) {
			t.Parallel()
			f := newFixtureNamed(t, 1, hostile24)
			var s idempotency.Store
			var err error
			if store == "mysql" {
				s, err = idempotency.NewMySQLStore(f.db)
			} else {
				s, err = idempotency.NewRedisStore(testenv.Redis(t), idempotency.WithPrefix(testenv.Name(t, "h24")+":"))
			}
			if err != nil {
				t.Fatal(err)
			}
			g, err := idempotency.NewGuard(f.group, s)
			if err != nil {
				t.Fatal(err)
			}
			// The duplicates first, so that each key's two messages come in
			// the first batch, mostly (a key in two concurrent batches is
			// also busy for one of them: a Retry event of its own).
			var cases []outcomeCase
			for i := range 3 {
				cases = append(cases, outcomeCase{fmt.Sprint("dup-", i), 2, "handled:1 duplicate:1", 1, true})
			}
			for i := range 6 {
				cases = append(cases, outcomeCase{fmt.Sprint("ok-", i), 1, "handled:1", 1, false})
			}
			for i := range 3 {
				cases = append(cases, outcomeCase{fmt.Sprint("flaky-", i), 1, "handled:1 retry:1[handler]", 2, false})
			}
			for i := range 2 {
				cases = append(cases, outcomeCase{fmt.Sprint("bad-", i), 1, "parked:1[permanent]", 1, false})
				cases = append(cases, outcomeCase{fmt.Sprint("cap-", i), 1, "retry:1[handler] parked:1[retries]", 2, false})
			}
			var mu sync.Mutex
			runs := map[string]int{}
			h := func(ctx context.Context, m *consumer.Message) error {
				key := m.Keys[0]
				mu.Lock()
				runs[key]++
				n := runs[key]
				mu.Unlock()
				switch {
				case strings.HasPrefix(key, "flaky-") && n == 1, strings.HasPrefix(key, "cap-"):
					return errors.New("transient")
				case strings.HasPrefix(key, "bad-"):
					return consumer.Permanent(errors.New("bad"))
				}
				return nil
			}
			// Everything is sent before the consumer starts, so that the
			// client hands it over in batches.
			for _, c := range cases {
				for range c.sends {
					f.send(producer.Message{Body: []byte(c.key), Keys: []string{c.key}})
				}
			}
			ta := newTally()
			c := f.start(consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithGuard(g), consumer.WithParker(f.dead),
				consumer.WithBatchSize(8), consumer.WithMaxAttempts(2), consumer.WithRetryDelay(time.Second),
				consumer.WithHooks(ta.hooks()), hostile6Quiet))
			f.eventually("every key settled", func() bool {
				st := c.Stats()
				return st.Handled == 12 && st.Duplicates == 3 && st.Parked == 4
			})
			f.settle()
			// A park is counted before its event, and a message's Handle
			// ends after its count and event: Close waits for the
			// deliveries still running.
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			checkTally(t, ta, cases, c.Stats())
		})
	}
}

// TestOrderlyEventsOnePerOutcome: the orderly consumer under ParkKey with
// messages that succeed, fail once then succeed, are sent twice, and a
// key whose first message fails for good (its later messages parked
// behind it). One event per outcome of each delivery, a Handle begun and
// ended per handler run, and the stats agree.
func TestOrderlyEventsOnePerOutcome(t *testing.T) {
	t.Parallel()
	f := newFixtureNamed(t, 2, hostile24)
	cases := []outcomeCase{
		{"a-0", 1, "handled:1", 1, false},
		{"a-1", 1, "handled:1 retry:1[handler]", 2, false},
		{"a-2", 2, "handled:1 duplicate:1", 1, false},
		{"b-0", 1, "parked:1[permanent]", 1, false},
		{"b-1", 1, "parked:1[key-parked]", 0, false},
		// Sent twice: two messages, each parked behind the key.
		{"b-2", 2, "parked:2[key-parked,key-parked]", 0, false},
	}
	var mu sync.Mutex
	runs := map[string]int{}
	h := func(ctx context.Context, m *consumer.Message) error {
		key := m.Keys[0]
		mu.Lock()
		runs[key]++
		n := runs[key]
		mu.Unlock()
		switch {
		case key == "a-1" && n == 1:
			return errors.New("transient")
		case key == "b-0":
			return consumer.Permanent(errors.New("bad"))
		}
		return nil
	}
	for _, c := range cases {
		for range c.sends {
			f.send(producer.Message{Body: []byte(c.key), Keys: []string{c.key}, ShardingKey: c.key[:1]})
		}
	}
	ta := newTally()
	c := f.start(consumer.NewOrderly(f.env.NameServers(), f.group, f.topic, h, consumer.ParkKey, consumer.WithGuard(f.guard()),
		consumer.WithParker(f.dead), consumer.WithMaxAttempts(3), consumer.WithRetryDelay(100*time.Millisecond),
		consumer.WithHooks(ta.hooks()), hostile6Quiet))
	f.eventually("every key settled", func() bool {
		st := c.Stats()
		return st.Handled == 3 && st.Duplicates == 1 && st.Parked >= 4
	})
	f.settle()
	// A park is counted before its event, and a message's Handle ends
	// after its count and event: Close waits for the deliveries still
	// running.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	checkTally(t, ta, cases, c.Stats())
}

// TestUntrustedTraceHeadersStillHandled: a producer outside our control
// sets trace headers: an invalid traceparent, a tracestate and a baggage
// that fill what a message's properties can carry. The consumer with the
// OpenTelemetry hooks still runs the handler (the span a new root), also
// on the retry of a first failure, and handles the message once.
func TestUntrustedTraceHeadersStillHandled(t *testing.T) {
	t.Parallel()
	f := newFixtureNamed(t, 1, hostile24)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) }) // an in-memory provider: nothing to report
	hooks := rmqotel.New(rmqotel.WithTracerProvider(tp),
		rmqotel.WithPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})))
	// As large as the producer lets properties be, shrunk until it sends.
	props := map[string]string{
		"traceparent": "00-" + strings.Repeat("z", 32) + "-" + strings.Repeat("0", 16) + "-01",
		"baggage":     strings.Repeat("k=v,", 2000),
	}
	var sent bool
	for n := 32 * 1024; n > 0 && !sent; n -= 256 {
		props["tracestate"] = strings.Repeat("a", n)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := f.prod.Send(ctx, producer.Message{Topic: f.topic, Body: []byte("x"), Keys: []string{"k-trace"}, Properties: props})
		cancel()
		switch {
		case err == nil:
			sent = true
		case !errors.Is(err, producer.ErrInvalidMessage):
			t.Fatalf("send: %v", err)
		}
	}
	if !sent {
		t.Fatal("no size was sent")
	}
	var calls atomic.Int32
	h := func(ctx context.Context, m *consumer.Message) error {
		if calls.Add(1) == 1 {
			return errors.New("first try fails")
		}
		return nil
	}
	c := f.start(consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithGuard(f.guard()), consumer.WithParker(f.dead),
		consumer.WithRetryDelay(time.Second), consumer.WithHooks(hooks), hostile6Quiet))
	f.eventually("handled, or parked", func() bool { st := c.Stats(); return st.Handled+st.Parked > 0 })
	f.settle()
	// The span ends after the message is counted: Close waits for the
	// delivery still running.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if st := c.Stats(); st.Handled != 1 || st.Parked != 0 || calls.Load() != 2 {
		var cause string
		if dls := f.parked(); len(dls) > 0 {
			cause = fmt.Sprintf("%s: %s", dls[0].Cause, dls[0].LastError)
		}
		t.Fatalf("stats %+v, handler ran %d times, parked %q; want a retry, then handled once", st, calls.Load(), cause)
	}
	for _, s := range rec.Ended() {
		if s.Parent().IsValid() {
			t.Errorf("span %s has parent %v from an invalid traceparent; want a new root", s.Name(), s.Parent().TraceID())
		}
	}
	if n := len(rec.Ended()); n != 2 {
		t.Errorf("%d spans ended; want one per handler run (2)", n)
	}
}

// TestARefusedRetryIsReportedParkedAfterItsRetry: a message whose retry
// copy the broker refuses (properties near its limit, from another
// client) fails once and is parked (retry-refused). The Retry is reported
// with the handler's failure, before the copy is sent; the Parked that
// follows says it did not come back (observe.Retry says so).
func TestARefusedRetryIsReportedParkedAfterItsRetry(t *testing.T) {
	t.Parallel()
	f := newFixtureNamed(t, 1, hostile24)
	sendNearLimit(t, f, "big")
	ta := newTally()
	h := func(context.Context, *consumer.Message) error { return errors.New("fails; its retry copy is refused") }
	c := f.start(consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithParker(f.dead),
		consumer.WithHooks(ta.hooks()), hostile6Quiet))
	f.eventually("parked", func() bool { return c.Stats().Parked == 1 })
	f.settle()
	// The park is counted before its event: Close waits for the delivery
	// still running.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if got, want := ta.kinds("big", false), "retry:1[handler] parked:1[retry-refused]"; got != want {
		t.Errorf("events %q (stats %+v); want %q", got, c.Stats(), want)
	}
}

// TestAHookPanicRetryIsReported: a Handle hook panics on the first
// delivery (a tracer not yet initialised); the consumer retries the
// message, and counts the retry in its stats. The hooks' Event must hear
// of it too (observe.Retry: "a delivery failed ... and the message comes
// back later"), or a metric built on events disagrees with Stats and a
// delivery has no outcome at all.
func TestAHookPanicRetryIsReported(t *testing.T) {
	t.Parallel()
	f := newFixtureNamed(t, 1, hostile24)
	ta := newTally()
	hooks := ta.hooks()
	handle := hooks.Handle
	var panicked atomic.Bool
	hooks.Handle = func(ctx context.Context, m observe.Message) (context.Context, func(error)) {
		if panicked.CompareAndSwap(false, true) {
			panic("tracer not initialised")
		}
		return handle(ctx, m)
	}
	c := f.start(consumer.New(f.env.NameServers(), f.group, f.topic, func(context.Context, *consumer.Message) error { return nil },
		consumer.WithGuard(f.guard()), consumer.WithParker(f.dead), consumer.WithRetryDelay(time.Second),
		consumer.WithHooks(hooks), hostile6Quiet))
	f.send(producer.Message{Body: []byte("x"), Keys: []string{"k-panic"}})
	f.eventually("handled after the hook's panic", func() bool { return c.Stats().Handled == 1 })
	f.settle()
	if st := c.Stats(); st.Retries != 1 || ta.total(observe.Retry) != st.Retries {
		t.Errorf("stats %+v, events %q; want one retry, reported as a Retry event", st, ta.kinds("k-panic", false))
	}
}
