package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/redis/go-redis/v9"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/observe"
)

// panicky runs batches of size messages (keys k0, k1, ...) through a
// consumer built with opts, straight into handleBatch as the client's
// goroutine would, and returns each message's verdict by key, what the
// handler ran, and the log.
func panicky(t *testing.T, size int, opts ...Option) (verdicts map[string]verdict, ran map[string]int, log string) {
	t.Helper()
	var mu sync.Mutex
	ran = map[string]int{}
	h := func(_ context.Context, m *Message) error {
		mu.Lock()
		ran[m.Keys[0]]++
		mu.Unlock()
		return nil
	}
	var buf testenv.Logs
	opts = append([]Option{WithParker(nopParker{}), WithBatchSize(size), WithLogger(buf.Logger())}, opts...)
	c := fakeStarted(t, h, opts...)
	defer c.Close()
	msgs := keyed(size)
	items := newItems(msgs, "", "")
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.handleBatch(context.Background(), items)
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("the batch never settled")
	}
	verdicts = map[string]verdict{}
	for _, it := range items {
		verdicts[it.m.Keys[0]] = it.v
	}
	return verdicts, ran, buf.String()
}

// A panic outside the handler (a hook, the key func, the guard's store)
// never crashes the program and never leaves a message unsettled (the
// client would hold it for its 15-minute consume timeout): the messages
// it left unsettled are retried, those settled before keep their verdict,
// and the panic is logged at ERROR with its stack. Each class of callback
// is tested, on the client's goroutine (a batch of one) and on workers (a
// batch of four).
func TestPanicOutsideTheHandlerRetriesWhatItLeftUnsettled(t *testing.T) {
	boom := func(what string) { panic(what + " exploded") }
	onlyK1 := func(m observe.Message) bool { return m.Key == "k1" }
	for _, size := range []int{1, 4} {
		t.Run(fmt.Sprint("batch ", size), func(t *testing.T) {
			t.Run("Handle hook begins", func(t *testing.T) {
				v, ran, log := panicky(t, size, WithHooks(observe.Hooks{Handle: func(ctx context.Context, m observe.Message) (context.Context, func(error)) {
					if size == 1 || onlyK1(m) {
						boom("begin")
					}
					return ctx, nil
				}}))
				want := "k0"
				if size > 1 {
					want = "k1"
					for _, k := range []string{"k0", "k2", "k3"} {
						if v[k] != ack || ran[k] != 1 {
							t.Errorf("%s: verdict %d, ran %d times; want acknowledged after one run", k, v[k], ran[k])
						}
					}
				}
				if v[want] != retry || ran[want] != 0 {
					t.Errorf("%s: verdict %d, ran %d times; want a retry, not run", want, v[want], ran[want])
				}
				checkPanicLogged(t, log, "begin exploded")
			})
			t.Run("Handle hook ends", func(t *testing.T) {
				// The message is settled (handled) when its hook's end runs:
				// it stays acknowledged, so it does not run twice.
				v, ran, log := panicky(t, size, WithHooks(observe.Hooks{Handle: func(ctx context.Context, m observe.Message) (context.Context, func(error)) {
					return ctx, func(error) { boom("end") }
				}}))
				for k, got := range v {
					if got != ack || ran[k] != 1 {
						t.Errorf("%s: verdict %d, ran %d times; want acknowledged after one run", k, got, ran[k])
					}
				}
				checkPanicLogged(t, log, "end exploded")
			})
			t.Run("key func", func(t *testing.T) {
				g, err := idempotency.NewGuard("g", freeStore{})
				if err != nil {
					t.Fatal(err)
				}
				v, ran, log := panicky(t, size, WithGuard(g), WithKeyFunc(func(m *Message) string {
					if m.Keys[0] == "k0" {
						boom("key func")
					}
					return m.Keys[0]
				}))
				for k, got := range v {
					if got != retry || ran[k] != 0 {
						t.Errorf("%s: verdict %d, ran %d times; want a retry, not run", k, got, ran[k])
					}
				}
				checkPanicLogged(t, log, "key func exploded")
			})
			t.Run("guard store claims", func(t *testing.T) {
				g, err := idempotency.NewGuard("g", panickingStore{freeStore{}, "claim"})
				if err != nil {
					t.Fatal(err)
				}
				v, ran, _ := panicky(t, size, WithGuard(g))
				for k, got := range v {
					if got != retry || ran[k] != 0 {
						t.Errorf("%s: verdict %d, ran %d times; want a retry, not run", k, got, ran[k])
					}
				}
			})
			t.Run("guard store completes", func(t *testing.T) {
				// Handled: acknowledged, reported as not recorded, as when
				// the store fails.
				g, err := idempotency.NewGuard("g", panickingStore{freeStore{}, "complete"})
				if err != nil {
					t.Fatal(err)
				}
				v, ran, log := panicky(t, size, WithGuard(g))
				for k, got := range v {
					if got != ack || ran[k] != 1 {
						t.Errorf("%s: verdict %d, ran %d times; want acknowledged after one run", k, got, ran[k])
					}
				}
				if !strings.Contains(log, "handled but not recorded as done") || !strings.Contains(log, "complete exploded") {
					t.Errorf("the store's panic is not reported as a failed completion:\n%s", log)
				}
			})
		})
	}
}

func checkPanicLogged(t *testing.T, log, value string) {
	t.Helper()
	if !strings.Contains(log, "level=ERROR") || !strings.Contains(log, value) || !strings.Contains(log, "panic_test.go") {
		t.Errorf("the panic is not logged at ERROR with its value and stack:\n%s", log)
	}
}

// panickingStore panics in its claims or completions (op), one key's or
// a batch's.
type panickingStore struct {
	freeStore
	op string
}

func (s panickingStore) Claim(ctx context.Context, group, key, token string, lease time.Duration) (idempotency.Outcome, int, error) {
	if s.op == "claim" {
		panic("claim exploded")
	}
	return s.freeStore.Claim(ctx, group, key, token, lease)
}

func (s panickingStore) Complete(ctx context.Context, group, key, token string, retain time.Duration) error {
	if s.op == "complete" {
		panic("complete exploded")
	}
	return s.freeStore.Complete(ctx, group, key, token, retain)
}

func (s panickingStore) ClaimBatch(ctx context.Context, group string, items []idempotency.KeyToken, lease time.Duration) []idempotency.ClaimResult {
	if s.op == "claim" {
		panic("claim exploded")
	}
	return s.freeStore.ClaimBatch(ctx, group, items, lease)
}

func (s panickingStore) CompleteBatch(ctx context.Context, group string, items []idempotency.KeyToken, retain time.Duration) []error {
	if s.op == "complete" {
		panic("complete exploded")
	}
	return s.freeStore.CompleteBatch(ctx, group, items, retain)
}

// A store that panics in a round trip several batches share leaves none
// of them waiting: every caller of that round trip gets the panic as its
// error, and the next round trips run.
func TestCombinedRoundTripThatPanicsReleasesEveryCaller(t *testing.T) {
	var calls atomic.Int32
	store := &flakyPanicStore{calls: &calls}
	g, err := idempotency.NewGuard("g", store)
	if err != nil {
		t.Fatal(err)
	}
	c := fakeStarted(t, func(context.Context, *Message) error { return nil },
		WithParker(nopParker{}), WithBatchSize(4), WithGuard(g), WithLogger(slog.New(slog.DiscardHandler)))
	defer c.Close()
	const batches = 16
	var wg sync.WaitGroup
	var acked, retried atomic.Int32
	for b := range batches {
		wg.Go(func() {
			msgs := make([]*primitive.MessageExt, 4)
			for i := range msgs {
				msgs[i] = &primitive.MessageExt{Message: primitive.Message{Topic: "T"}, MsgId: fmt.Sprint(b, "-", i)}
				msgs[i].WithKeys([]string{fmt.Sprint("k", b, "-", i)})
			}
			items := newItems(msgs, "", "")
			c.handleBatch(context.Background(), items)
			for _, it := range items {
				switch it.v {
				case ack:
					acked.Add(1)
				case retry:
					retried.Add(1)
				default:
					t.Errorf("%s: verdict %d", it.m.MsgID, it.v)
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("batches still waiting for a round trip that panicked")
	}
	if calls.Load() < 2 || retried.Load() == 0 || acked.Load()+retried.Load() != batches*4 {
		t.Errorf("%d round trips, %d acknowledged, %d retried; want some of each, every message settled", calls.Load(), acked.Load(), retried.Load())
	}
}

// flakyPanicStore panics in every other batch claim, after a pause that
// lets other batches queue behind the round trip.
type flakyPanicStore struct {
	freeStore
	calls *atomic.Int32
}

func (s *flakyPanicStore) ClaimBatch(ctx context.Context, group string, items []idempotency.KeyToken, lease time.Duration) []idempotency.ClaimResult {
	n := s.calls.Add(1)
	time.Sleep(5 * time.Millisecond)
	if n%2 == 1 {
		panic(errors.New("claim exploded"))
	}
	return s.freeStore.ClaimBatch(ctx, group, items, lease)
}

// A panic before the handler ran (the Handle hook's begin) frees the key
// it claimed: the retry claims it at once, instead of finding it busy
// until the lease ends (an orderly queue would stall that long). And an
// Event hook that panics reporting a duplicate leaves it acknowledged:
// an event tells of what already happened.
func TestPanicBeforeTheHandlerFreesTheKeyAndAnEventPanicChangesNothing(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	store, err := idempotency.NewRedisStore(rdb)
	if err != nil {
		t.Fatal(err)
	}
	g, err := idempotency.NewGuard("g", store, idempotency.WithLease(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var begun atomic.Int32
	var ran atomic.Int32
	hooks := observe.Hooks{
		Handle: func(ctx context.Context, m observe.Message) (context.Context, func(error)) {
			if begun.Add(1) == 1 {
				panic("tracer not ready")
			}
			return ctx, nil
		},
		Event: func(_ context.Context, e observe.Event) {
			if e.Kind == observe.Duplicate {
				panic("metrics registry closed")
			}
		},
	}
	c := fakeStarted(t, func(context.Context, *Message) error { ran.Add(1); return nil },
		WithParker(nopParker{}), WithGuard(g), WithHooks(hooks), WithLogger(slog.New(slog.DiscardHandler)))
	defer c.Close()
	deliver := func() verdict {
		ext := &primitive.MessageExt{Message: primitive.Message{Topic: "T"}, MsgId: "id"}
		ext.WithKeys([]string{"order-1"})
		items := newItems([]*primitive.MessageExt{ext}, "", "")
		c.handleBatch(context.Background(), items)
		return items[0].v
	}
	for i, want := range []verdict{retry, ack, ack} {
		if got := deliver(); got != want {
			t.Fatalf("delivery %d: verdict %d; want %d (a retry, then handled, then a duplicate)", i+1, got, want)
		}
	}
	if st := c.Stats(); ran.Load() != 1 || st.Handled != 1 || st.Duplicates != 1 || st.Busy != 0 || st.Retries != 1 {
		t.Fatalf("handler ran %d times, stats %+v; want once, one retry, one duplicate, never busy", ran.Load(), st)
	}
}
