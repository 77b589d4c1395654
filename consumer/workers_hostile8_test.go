package consumer

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2/primitive"
)

// TestBatchHandlersNeverQueueBehindEachOther guards the pooled workers'
// promise that a handler never waits for another one: every handler of
// several concurrent batches blocks until all of them have started, twice
// (the second time on the workers the first left idle). A handler queued
// behind another (a worker taking a second task, a hand-off to a busy
// worker) would never start; the handlers wait at most a minute, then
// count as queued. Close afterwards leaves no worker.
func TestBatchHandlersNeverQueueBehindEachOther(t *testing.T) {
	const batches, size = 4, 16
	var started atomic.Int32
	var queued atomic.Int32
	var all chan struct{}
	var mu sync.Mutex
	h := func(ctx context.Context, m *Message) error {
		mu.Lock()
		ch := all
		mu.Unlock()
		if started.Add(1)%(batches*size) == 0 {
			close(ch)
		}
		select {
		case <-ch:
		case <-time.After(time.Minute):
			queued.Add(1)
		}
		return nil
	}
	c := fakeStarted(t, h, WithParker(nopParker{}), WithBatchSize(size),
		WithLogger(slog.New(slog.DiscardHandler)))
	for round := range 2 {
		mu.Lock()
		all = make(chan struct{})
		mu.Unlock()
		var wg sync.WaitGroup
		for b := range batches {
			wg.Go(func() {
				msgs := make([]*primitive.MessageExt, size)
				for i := range msgs {
					msgs[i] = &primitive.MessageExt{Message: primitive.Message{Topic: "T"}, MsgId: fmt.Sprint(round, "-", b, "-", i)}
				}
				items := newItems(msgs, "", "")
				c.handleBatch(context.Background(), items)
				for _, it := range items {
					if it.v != ack {
						t.Errorf("message %s: verdict %d", it.m.MsgID, it.v)
					}
				}
			})
		}
		wg.Wait()
		if n := queued.Load(); n > 0 {
			t.Fatalf("round %d: %d handlers waited for others to finish before they started", round, n)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	if stacks := string(buf[:runtime.Stack(buf, true)]); strings.Contains(stacks, "consumer.(*workers).loop") {
		t.Fatalf("a batch worker outlived Close:\n%s", stacks)
	}
}
