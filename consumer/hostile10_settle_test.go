package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/observe"
)

// failingCompleteStore acquires every key and fails every completion, one
// key's or a batch's.
type failingCompleteStore struct{ freeStore }

var errCompleteDown = errors.New("complete: connection reset")

func (failingCompleteStore) Complete(context.Context, string, string, string, time.Duration) error {
	return errCompleteDown
}

func (failingCompleteStore) CompleteBatch(_ context.Context, _ string, items []idempotency.KeyToken, _ time.Duration) []error {
	errs := make([]error, len(items))
	for i := range errs {
		errs[i] = errCompleteDown
	}
	return errs
}

// panicOnLog is a slog handler that panics on one message's record with
// one msg_id (a logger's bug), and drops the rest.
type panicOnLog struct {
	msg, id string
}

func (panicOnLog) Enabled(context.Context, slog.Level) bool { return true }

func (h panicOnLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message != h.msg {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "msg_id" && a.Value.String() == h.id {
			panic("logger exploded")
		}
		return true
	})
	return nil
}

func (h panicOnLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h panicOnLog) WithGroup(string) slog.Handler      { return h }

// A panic while one handled message of a wave is settled (its hooks' end,
// the logger reporting its failed completion) is that message's alone, as
// it is when a store without batch calls completes the message in its
// handler: every other message of the wave still gets its hooks' end
// (once), its NotRecorded report and its count in Stats.Handled. Settled
// by the wave, the first panic used to skip the rest of the wave: their
// spans never ended, their failed completions went unreported.
func TestPanicSettlingOneMessageSettlesTheRestOfTheWave(t *testing.T) {
	const size = 4
	type point struct {
		logger slog.Handler
		end    func(key string) // the hooks' end of key's message
	}
	points := map[string]point{
		"hooks' end": {slog.DiscardHandler, func(key string) {
			if key == "k0" {
				panic("end exploded")
			}
		}},
		"logger": {panicOnLog{"handled but not recorded as done", "id0"}, func(string) {}},
	}
	stores := map[string]idempotency.Store{"batch store": failingCompleteStore{}, "plain store": plainStore{failingCompleteStore{}}}
	for pname, p := range points {
		for name, store := range stores {
			t.Run(pname+", "+name, func(t *testing.T) {
				g, err := idempotency.NewGuard("g", store)
				if err != nil {
					t.Fatal(err)
				}
				ends := map[string]*atomic.Int32{}
				for i := range size {
					ends[fmt.Sprint("k", i)] = new(atomic.Int32)
				}
				var notRecorded, handledEvents atomic.Int32
				hooks := observe.Hooks{
					Handle: func(ctx context.Context, m observe.Message) (context.Context, func(error)) {
						return ctx, func(error) {
							ends[m.Key].Add(1)
							p.end(m.Key)
						}
					},
					Event: func(_ context.Context, e observe.Event) {
						switch e.Kind {
						case observe.NotRecorded:
							notRecorded.Add(1)
						case observe.Handled:
							handledEvents.Add(1)
						}
					},
				}
				var ran atomic.Int32
				c := fakeStarted(t, func(context.Context, *Message) error { ran.Add(1); return nil },
					WithParker(nopParker{}), WithBatchSize(size), WithGuard(g), WithHooks(hooks), WithLogger(slog.New(p.logger)))
				defer c.Close()
				items := newItems(testKeyed(size), "", "")
				c.handleBatch(context.Background(), items)
				for _, it := range items {
					if it.v != ack {
						t.Errorf("%s: verdict %d; want acknowledged (handled)", it.m.MsgID, it.v)
					}
				}
				for k, n := range ends {
					if n.Load() != 1 {
						t.Errorf("%s: hooks' end called %d times; want once", k, n.Load())
					}
				}
				st := c.Stats()
				if ran.Load() != size || st.Handled != size || st.StoreErrors != size || st.Retries != 0 {
					t.Errorf("ran %d, stats %+v; want %d handled, each a store error, none retried", ran.Load(), st, size)
				}
				// The panicking point may cut its own message's report
				// short (the logger panics after NotRecorded; the end
				// after Handled), never another's.
				if notRecorded.Load() != size || handledEvents.Load() < size-1 {
					t.Errorf("%d NotRecorded, %d Handled events; want %d and at least %d", notRecorded.Load(), handledEvents.Load(), size, size-1)
				}
			})
		}
	}
}

// testKeyed returns n messages id0.. with keys k0...
func testKeyed(n int) []*primitive.MessageExt {
	msgs := keyed(n)
	return msgs
}
