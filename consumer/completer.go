package consumer

import (
	"context"
	"sync"
)

// completer records the completions of handled messages' claims on a
// goroutine of its own, up to [maxCompletions] in one round trip: a
// handler hands its completion over and returns at once, and its wave
// waits once for all of its own (see [Consumer.guardedWave]) before any
// of its messages is acknowledged. A handler waiting for its own round
// trip cost a goroutine switch per message, more than the rest of the
// consumer's work on it. The goroutine starts with the first completion
// and stops on [Consumer.Close], once no run of handlers is left.
type completer struct {
	flush func(ctx context.Context, batch []*completion)

	mu      sync.Mutex
	queue   []*completion
	spare   []*completion // the array the flush before the current one took
	started bool
	stopped bool
	wake    chan struct{} // one value: completions are queued
	stop    chan struct{}
	done    chan struct{}
}

func newCompleter(flush func(ctx context.Context, batch []*completion)) *completer {
	return &completer{flush: flush, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
}

// submit queues r; r.wave.Done is called once r.err is set. It must not
// be called after close.
func (q *completer) submit(r *completion) {
	q.mu.Lock()
	if q.stopped { // not expected: recorded here, as a stopped goroutine would not
		q.mu.Unlock()
		// No caller's ctx, as in flushNext; completeClaims bounds it.
		q.flush(context.Background(), []*completion{r})
		r.wave.Done()
		return
	}
	q.queue = append(q.queue, r)
	if !q.started {
		q.started = true
		go q.run()
	}
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default: // a wake is pending: the goroutine takes r with it
	}
}

func (q *completer) run() {
	defer close(q.done)
	for {
		select {
		case <-q.wake:
		case <-q.stop:
			// Nothing is queued when Close stops it (every wave waited for
			// its own); should anything be, it is recorded, not dropped.
			for q.flushNext() {
			}
			return
		}
		for q.flushNext() {
		}
	}
}

// flushNext records the oldest queued completions, at most
// [maxCompletions]; false when none was queued.
func (q *completer) flushNext() bool {
	q.mu.Lock()
	if len(q.queue) == 0 {
		q.mu.Unlock()
		return false
	}
	taken := q.queue
	n := min(len(taken), maxCompletions)
	// Two arrays take turns: the queue's and the one a flush works from.
	q.queue = append(q.spare[:0], taken[n:]...)
	q.spare = nil
	q.mu.Unlock()
	batch := taken[:n]
	// No caller's ctx: a handled message's completion is recorded even
	// when its handler's ctx or its wave's bound has ended (completeClaims
	// bounds the round trip itself).
	q.flush(context.Background(), batch)
	for _, r := range batch {
		r.wave.Done() // r belongs to its wave again
	}
	clear(taken)
	q.mu.Lock()
	q.spare = taken[:0]
	q.mu.Unlock()
	return true
}

// close stops the goroutine, if it started, and waits for it. Call it
// once no completion is queued or can be: every wave waited for its own.
func (q *completer) close() {
	q.mu.Lock()
	started, stopped := q.started, q.stopped
	q.stopped = true
	q.mu.Unlock()
	if started && !stopped {
		close(q.stop)
		<-q.done
	}
}
