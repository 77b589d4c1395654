package combine

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestCancellationStormKeepsEveryItemsFate guards against the
// combiner's cancellation paths (a caller whose ctx ends while queued, or
// just as the lead is handed to it, and leaders whose own ctx is already
// cancelled) losing the queue's progress or an item's fate: every Do
// returns, true exactly when a flush handled its item (once), and each
// flushed item carries its own value, with the two arrays that take turns
// as the queue, and the calls themselves, reused across flushes.
func TestCancellationStormKeepsEveryItemsFate(t *testing.T) {
	type it struct {
		id      int
		flushed atomic.Int32
		seen    atomic.Int64
	}
	b := New(4, func(ctx context.Context, batch []*it) {
		if rand.IntN(4) == 0 {
			time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
		}
		for _, x := range batch {
			x.flushed.Add(1)
			x.seen.Store(int64(x.id))
		}
	})
	const workers, each = 16, 400
	var wg sync.WaitGroup
	done := make(chan struct{})
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				x := &it{id: w*each + i + 1}
				ctx, cancel := context.WithCancel(context.Background())
				switch rand.IntN(4) {
				case 0:
					cancel() // already cancelled: may lead with it
				case 1:
					go func() {
						time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
						cancel()
					}()
				}
				ok := b.Do(ctx, x)
				cancel()
				n := x.flushed.Load()
				if ok && n != 1 || !ok && n != 0 {
					t.Errorf("item %d: Do %v, flushed %d times", x.id, ok, n)
				}
				if ok && x.seen.Load() != int64(x.id) {
					t.Errorf("item %d: flushed as %d", x.id, x.seen.Load())
				}
			}
		})
	}
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("a Do never returned")
	}
	// Every Do has returned, so every flush has too: the queue is empty
	// and no flush is marked as running, right now.
	if n := b.queued(); n != 0 {
		t.Fatalf("%d calls left queued after every Do returned", n)
	}
	b.mu.Lock()
	flushing := b.flushing
	b.mu.Unlock()
	if flushing {
		t.Fatal("the batcher still flushing with nothing queued: the next caller would wait forever")
	}
}
