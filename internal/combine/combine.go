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
	flushing bool
}

type call[T any] struct {
	v    T
	done chan struct{} // closed once a flush handled v
	lead chan struct{} // signalled when this call must flush the next batch
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
	c := &call[T]{v: v, done: make(chan struct{}), lead: make(chan struct{}, 1)}
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
	case <-c.done:
		return true
	case <-c.lead:
		b.flushNext(ctx)
		return true
	case <-ctx.Done():
	}
	b.mu.Lock()
	select {
	case <-c.lead: // handed the lead meanwhile: the queue depends on this call
		b.mu.Unlock()
		b.flushNext(ctx)
		return true
	default:
	}
	if i := slices.Index(b.pending, c); i >= 0 {
		b.pending = slices.Delete(b.pending, i, i+1)
		b.mu.Unlock()
		return false
	}
	b.mu.Unlock()
	<-c.done // in a batch in flight
	return true
}

// flushNext flushes the head of the queue (the caller's own item first)
// and passes the lead on.
func (b *Batcher[T]) flushNext(ctx context.Context) {
	b.mu.Lock()
	n := min(len(b.pending), b.max)
	calls := slices.Clone(b.pending[:n])
	b.pending = slices.Delete(b.pending, 0, n)
	b.mu.Unlock()
	batch := make([]T, len(calls))
	for i, c := range calls {
		batch[i] = c.v
	}
	b.flush(ctx, batch)
	for _, c := range calls {
		close(c.done)
	}
	b.mu.Lock()
	if len(b.pending) > 0 {
		b.pending[0].lead <- struct{}{}
	} else {
		b.flushing = false
	}
	b.mu.Unlock()
}
