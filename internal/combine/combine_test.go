package combine

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type item struct {
	id      int
	flushed atomic.Int32 // times a flush handled it
	led     *atomic.Int32
}

type leaderKey struct{}

// TestEveryItemOnceAndNoCallerFlushesTwice: under steady load from many
// goroutines every item is flushed exactly once, batches respect the
// limit, and no caller leads more than one flush (the caller-as-flusher
// starvation this package exists to prevent).
func TestEveryItemOnceAndNoCallerFlushesTwice(t *testing.T) {
	var maxBatch atomic.Int32
	b := New(8, func(ctx context.Context, batch []*item) {
		ctx.Value(leaderKey{}).(*atomic.Int32).Add(1)
		if n := int32(len(batch)); n > maxBatch.Load() {
			maxBatch.Store(n)
		}
		time.Sleep(200 * time.Microsecond) // a round trip
		for _, it := range batch {
			it.flushed.Add(1)
		}
	})
	const workers, each = 32, 200
	var wg sync.WaitGroup
	items := make([]*item, 0, workers*each)
	var mu sync.Mutex
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				led := new(atomic.Int32)
				it := &item{id: w*each + i, led: led}
				mu.Lock()
				items = append(items, it)
				mu.Unlock()
				if !b.Do(context.WithValue(context.Background(), leaderKey{}, led), it) {
					t.Errorf("item %d not flushed without a cancellation", it.id)
				}
				if it.flushed.Load() != 1 {
					t.Errorf("item %d returned before its flush", it.id)
				}
				if n := led.Load(); n > 1 {
					t.Errorf("a caller led %d flushes", n)
				}
			}
		})
	}
	wg.Wait()
	for _, it := range items {
		if it.flushed.Load() != 1 {
			t.Fatalf("item %d flushed %d times", it.id, it.flushed.Load())
		}
	}
	if maxBatch.Load() > 8 || maxBatch.Load() < 2 {
		t.Fatalf("largest batch %d; want 2..8 (combined, within the limit)", maxBatch.Load())
	}
}

// TestCancelledWaiterLeavesTheQueueWorking: a caller whose ctx ends while
// queued is taken out (false), and the queue behind it still flushes, even
// when the lead was about to pass to it.
func TestCancelledWaiterLeavesTheQueueWorking(t *testing.T) {
	release, started := make(chan struct{}), make(chan struct{})
	var flushed atomic.Int32
	b := New(1, func(ctx context.Context, batch []int) {
		if batch[0] == 0 {
			close(started)
			<-release
		}
		flushed.Add(int32(len(batch)))
	})
	go b.Do(context.Background(), 0) // leads, and blocks in its flush
	<-started
	ctx, cancel := context.WithCancel(context.Background())
	gaveUp := make(chan bool)
	go func() { gaveUp <- b.Do(ctx, 1) }()
	for b.queued() < 1 {
		time.Sleep(time.Millisecond)
	}
	later := make(chan bool)
	go func() { later <- b.Do(context.Background(), 2) }()
	for b.queued() < 2 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if <-gaveUp {
		t.Fatal("a call cancelled while queued reported flushed")
	}
	close(release)
	select {
	case ok := <-later:
		if !ok {
			t.Fatal("the call behind the cancelled one was not flushed")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the queue stalled behind a cancelled caller")
	}
	if flushed.Load() != 2 {
		t.Fatalf("%d items flushed, want 2 (0 and 2)", flushed.Load())
	}
}

func (b *Batcher[T]) queued() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.pending)
}
