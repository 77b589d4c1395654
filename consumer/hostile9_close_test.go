package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	rmqconsumer "github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/seed157d4c4d/reliablemq/idempotency"
)

// TestCloseTimeoutCancelsEveryHandlerAndLeavesNothingRunning: handlers
// that wait for their ctx (guarded or not, on the client's goroutine and
// on workers) while batches keep arriving. Close gives up waiting after
// its shutdown timeout, which must end every handler's ctx (else Close
// waits for ever); then no listener call acknowledges anything (no
// handler succeeded, no retry copy could be stored), none starts a handler
// after Close returned, every call returns, and no worker is left.
func TestCloseTimeoutCancelsEveryHandlerAndLeavesNothingRunning(t *testing.T) {
	for _, guarded := range []bool{false, true} {
		t.Run(fmt.Sprint("guarded ", guarded), func(t *testing.T) {
			before := runtime.NumGoroutine()
			var closed atomic.Bool
			var started, after, cancelled atomic.Int32
			h := func(ctx context.Context, m *Message) error {
				started.Add(1)
				if closed.Load() {
					after.Add(1)
				}
				<-ctx.Done()
				if errors.Is(ctx.Err(), context.Canceled) {
					cancelled.Add(1)
				}
				return ctx.Err()
			}
			opts := []Option{WithParker(nopParker{}), WithBatchSize(4), WithShutdownTimeout(50 * time.Millisecond),
				WithLogger(slog.New(slog.DiscardHandler))}
			if guarded {
				g, err := idempotency.NewGuard("g", freeStore{})
				if err != nil {
					t.Fatal(err)
				}
				opts = append(opts, WithGuard(g))
			}
			c := fakeStarted(t, h, opts...)
			var n atomic.Int64
			var wg sync.WaitGroup
			var acked atomic.Int32
			stop := make(chan struct{})
			for range 6 {
				wg.Go(func() {
					for last := false; !last; {
						select {
						case <-stop:
							last = true // one more batch, after Close returned
						default:
						}
						msgs := make([]*primitive.MessageExt, 1+n.Load()%4)
						for i := range msgs {
							id := n.Add(1)
							msgs[i] = &primitive.MessageExt{Message: primitive.Message{Topic: "T"}, MsgId: fmt.Sprint("id", id), StoreHost: "127.0.0.1:1"}
							msgs[i].WithKeys([]string{fmt.Sprint("k", id)})
						}
						if r, _ := c.consumeConcurrently(context.Background(), msgs...); r == rmqconsumer.ConsumeSuccess {
							acked.Add(1)
						}
					}
				})
			}
			for started.Load() < 6 {
				runtime.Gosched()
			}
			errc := make(chan error, 1)
			go func() { errc <- c.Close() }()
			select {
			case err := <-errc:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("Close never returned: a handler's ctx did not end when it gave up waiting")
			}
			closed.Store(true)
			close(stop)
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("a listener call never returned after Close")
			}
			if acked.Load() != 0 || after.Load() != 0 {
				t.Errorf("%d batches acknowledged, %d handlers started after Close; want none", acked.Load(), after.Load())
			}
			if cancelled.Load() != started.Load() {
				t.Errorf("%d of %d handlers saw their ctx cancelled", cancelled.Load(), started.Load())
			}
			deadline := time.Now().Add(10 * time.Second)
			for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if g := runtime.NumGoroutine(); g > before {
				buf := make([]byte, 1<<16)
				t.Errorf("%d goroutines after Close, %d before:\n%s", g, before, buf[:runtime.Stack(buf, true)])
			}
		})
	}
}
