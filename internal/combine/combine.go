// Package combine lets concurrent callers share one round trip, the way a
// database's group commit shares one flush, with a bounded wait for each.
//
// Callers queue their items. A caller that finds no flush in progress
// leads: it flushes the queue (up to the batch limit; its own item is
// always first) and, if more items queued meanwhile, hands the lead to the
// oldest of them. So no caller flushes more than one batch, and each waits
// for at most the batch in flight, the batches queued ahead of it, and its
// own.
package combine

import (
	"context"
	"slices"
	"sync"
)

// Batcher combines items of type T. Its zero value is not usable; make one
// with [New]. It is safe for concurrent use.
type Batcher[T any] struct {
	max   int
	flush func(ctx context.Context, batch []T)

	mu       sync.Mutex
	pending  []*call[T]
	spare    []*call[T] // the array the flush before the current one took
	flushing bool
	// free keeps calls for reuse: a call's channel is empty again when Do
	// returns, and nothing refers to the call any more.
	free sync.Pool
}

type call[T any] struct {
	v T
	// wake gets at most one value: true once another caller's flush
	// handled v, false when this call must flush the next batch (its own
	// flush sends it nothing).
	wake chan bool
}

// New returns a batcher that hands at most limit items (at least 1) to one
// call of flush. flush runs in the leading caller's goroutine with that
// caller's ctx; it must deliver every item's result itself (T is usually a
// pointer) and must not let the leader's cancellation fail the others'
// items.
func New[T any](limit int, flush func(ctx context.Context, batch []T)) *Batcher[T] {
	return &Batcher[T]{max: max(limit, 1), flush: flush}
}

// Do queues v and returns true once a flush has handled it. If ctx ends
// while v still waits in the queue, Do takes it out and returns false: v
// was not flushed. Once a flush has taken v, Do waits for it.
func (b *Batcher[T]) Do(ctx context.Context, v T) bool {
	c, _ := b.free.Get().(*call[T])
	if c == nil {
		c = &call[T]{wake: make(chan bool, 1)}
	}
	c.v = v
	flushed := b.do(ctx, c)
	var zero T
	c.v = zero
	b.free.Put(c)
	return flushed
}

func (b *Batcher[T]) do(ctx context.Context, c *call[T]) bool {
	b.mu.Lock()
	b.pending = append(b.pending, c)
	if !b.flushing {
		b.flushing = true
		b.mu.Unlock()
		b.flushNext(ctx)
		return true
	}
	b.mu.Unlock()
	select {
	case done := <-c.wake:
		if !done {
			b.flushNext(ctx)
		}
		return true
	case <-ctx.Done():
	}
	b.mu.Lock()
	select {
	case done := <-c.wake:
		b.mu.Unlock()
		if !done { // handed the lead meanwhile: the queue depends on this call
			b.flushNext(ctx)
		}
		return true
	default:
	}
	if i := slices.Index(b.pending, c); i >= 0 {
		b.pending = slices.Delete(b.pending, i, i+1)
		b.mu.Unlock()
		return false
	}
	b.mu.Unlock()
	<-c.wake // in a batch in flight
	return true
}

// flushNext flushes the head of the queue (the caller's own item first:
// the leader found the queue empty, or was its head when handed the lead)
// and passes the lead on.
func (b *Batcher[T]) flushNext(ctx context.Context) {
	b.mu.Lock()
	// Two arrays take turns: the queue's and the one a flush works from
	// (one flush runs at a time).
	taken := b.pending
	n := min(len(taken), b.max)
	b.pending = append(b.spare[:0], taken[n:]...)
	b.spare = nil
	b.mu.Unlock()
	calls := taken[:n]
	batch := make([]T, len(calls))
	for i, c := range calls {
		batch[i] = c.v
	}
	b.flush(ctx, batch)
	for _, c := range calls[1:] {
		c.wake <- true
	}
	clear(taken)
	b.mu.Lock()
	b.spare = taken[:0]
	if len(b.pending) > 0 {
		b.pending[0].wake <- false
	} else {
		b.flushing = false
	}
	b.mu.Unlock()
}
