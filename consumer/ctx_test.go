package consumer

import (
	"context"
	"log/slog"
	"sync"
	"testing"

	"github.com/seed157d4c4d/reliablemq/idempotency"
)

// A handler's ctx ends with its batch, guarded or not, batched or not:
// work a handler leaves behind with it is cut off, and nothing derived
// from it stays registered with the consumer until Close.
func TestHandlerCtxEndsWithItsBatch(t *testing.T) {
	for _, tc := range []struct {
		name  string
		size  int
		guard bool
	}{{"one, no guard", 1, false}, {"batch, no guard", 4, false}, {"one, guard", 1, true}, {"batch, guard", 4, true}} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var ctxs []context.Context
			h := func(ctx context.Context, m *Message) error {
				mu.Lock()
				ctxs = append(ctxs, ctx)
				mu.Unlock()
				return ctx.Err()
			}
			opts := []Option{WithParker(nopParker{}), WithBatchSize(tc.size), WithLogger(slog.New(slog.DiscardHandler))}
			if tc.guard {
				g, err := idempotency.NewGuard("g", freeStore{})
				if err != nil {
					t.Fatal(err)
				}
				opts = append(opts, WithGuard(g))
			}
			c := fakeStarted(t, h, opts...)
			defer c.Close()
			msgs := keyed(tc.size)
			items := newItems(msgs, "", "")
			c.handleBatch(context.Background(), items)
			if len(ctxs) != tc.size {
				t.Fatalf("%d handlers ran; want %d", len(ctxs), tc.size)
			}
			for i, ctx := range ctxs {
				if items[i].v != ack || ctx.Err() == nil {
					t.Errorf("message %d: verdict %d, ctx error after the batch %v; want acknowledged, ctx ended", i, items[i].v, ctx.Err())
				}
			}
		})
	}
}
