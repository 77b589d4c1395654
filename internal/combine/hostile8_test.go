package combine

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type ownItemKey struct{}

// TestEveryFlushLeadsWithItsOwnCallAndLeavesReusedCallsClean guards the
// claim that lets calls be reused: a flush runs in the goroutine whose
// item is first in its batch (so the leader is never sent a value on its
// own channel), no batch exceeds the limit, each item is flushed at most
// once and exactly when Do says so, and a call back in the pool holds no
// value on its channel and no item. It runs with the smallest limit (every
// flush hands the lead on), a limit every burst fills, and one no burst
// reaches, under many more callers than cores, with callers cancelled
// while queued, as the lead comes to them, and before they lead.
func TestEveryFlushLeadsWithItsOwnCallAndLeavesReusedCallsClean(t *testing.T) {
	for _, limit := range []int{1, 3, 1000} {
		t.Run(fmt.Sprint("limit=", limit), func(t *testing.T) {
			type it struct {
				id      int
				flushed atomic.Int32
			}
			var wrongLeader, tooLong atomic.Int32
			b := New(limit, func(ctx context.Context, batch []*it) {
				if len(batch) > limit || len(batch) == 0 {
					tooLong.Add(1)
				}
				if own, _ := ctx.Value(ownItemKey{}).(*it); own != batch[0] {
					wrongLeader.Add(1)
				}
				if rand.IntN(8) == 0 {
					time.Sleep(time.Duration(rand.IntN(100)) * time.Microsecond)
				}
				for _, x := range batch {
					x.flushed.Add(1)
				}
			})
			const callers, each = 128, 150
			var wg sync.WaitGroup
			var bad atomic.Int32
			for w := range callers {
				wg.Go(func() {
					for i := range each {
						x := &it{id: w*each + i + 1}
						ctx, cancel := context.WithCancel(context.WithValue(context.Background(), ownItemKey{}, x))
						switch rand.IntN(4) {
						case 0:
							cancel()
						case 1:
							go func() {
								if rand.IntN(2) == 0 {
									time.Sleep(time.Duration(rand.IntN(50)) * time.Microsecond)
								}
								cancel()
							}()
						}
						ok := b.Do(ctx, x)
						cancel()
						if n := x.flushed.Load(); ok && n != 1 || !ok && n != 0 {
							bad.Add(1)
						}
					}
				})
			}
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(2 * time.Minute):
				t.Fatal("a Do never returned")
			}
			if n := bad.Load(); n > 0 {
				t.Errorf("%d Do calls whose result disagrees with their item's flushes", n)
			}
			if n := wrongLeader.Load(); n > 0 {
				t.Errorf("%d flushes ran in a goroutine whose item was not first", n)
			}
			if n := tooLong.Load(); n > 0 {
				t.Errorf("%d flushes had an empty batch or one over the limit", n)
			}
			for range 1000 {
				c, _ := b.free.Get().(*call[*it])
				if c == nil {
					break
				}
				if c.v != nil || len(c.wake) != 0 {
					t.Fatalf("a call in the pool holds item %v and %d values on its channel", c.v, len(c.wake))
				}
			}
			b.mu.Lock()
			defer b.mu.Unlock()
			if len(b.pending) != 0 || b.flushing {
				t.Fatalf("%d queued, flushing %v after every Do returned", len(b.pending), b.flushing)
			}
		})
	}
}

// TestACallerWhoseLeadComesAsItsContextEndsFlushes: the lead handed to a
// caller whose ctx has ended (or ends at that moment) is taken: it
// flushes its own item and the queue behind it, Do reports true, and the
// batcher is free afterwards. With a limit of 1 every waiting caller is
// handed the lead in turn.
func TestACallerWhoseLeadComesAsItsContextEndsFlushes(t *testing.T) {
	release := make(chan struct{})
	var flushed []int
	var mu sync.Mutex
	b := New(1, func(ctx context.Context, batch []int) {
		if batch[0] == 0 {
			<-release // the first leader's round trip, while the others queue
		}
		mu.Lock()
		flushed = append(flushed, batch...)
		mu.Unlock()
	})
	first := make(chan bool)
	go func() { first <- b.Do(context.Background(), 0) }()
	for b.queued() != 0 || !func() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.flushing }() {
		time.Sleep(time.Millisecond)
	}
	const n = 20
	ctxs := make([]context.CancelFunc, n)
	results := make(chan bool, n)
	for i := range n {
		ctx, cancel := context.WithCancel(context.Background())
		ctxs[i] = cancel
		go func() { results <- b.Do(ctx, i+1) }()
		for b.queued() != i+1 {
			time.Sleep(time.Millisecond)
		}
	}
	// The queue's head is cancelled as the lead comes to it; the rest
	// stay.
	go ctxs[0]()
	close(release)
	if !<-first {
		t.Fatal("the first leader's Do returned false")
	}
	trues := 0
	for range n {
		if <-results {
			trues++
		}
	}
	mu.Lock()
	got := len(flushed)
	mu.Unlock()
	if got != trues+1 {
		t.Fatalf("%d items flushed, %d Do calls returned true (plus the first)", got, trues)
	}
	if trues < n-1 {
		t.Fatalf("only %d of the %d callers whose ctx did not end were flushed", trues, n-1)
	}
	for _, cancel := range ctxs {
		cancel()
	}
	if !b.Do(context.Background(), 99) {
		t.Fatal("the batcher is stuck after the queue drained")
	}
}
