package consumer

import (
	"sync"
	"time"
)

// workers runs the handlers of a batch beyond its first message. A
// goroutine per handler would start with a small stack and grow it, by
// copying, for every message: the path through guard, handler, hooks and
// the combined store calls is deeper than a new goroutine's stack. A
// worker grows its stack once and then waits for the next handler, until
// it has been idle for [workerIdle] or the consumer closes.
type workers struct {
	tasks chan func()
	stop  <-chan struct{}
	wg    sync.WaitGroup
}

// workerIdle is how long a worker waits for a handler before it exits.
const workerIdle = 10 * time.Second

func newWorkers(stop <-chan struct{}) *workers {
	return &workers{tasks: make(chan func()), stop: stop}
}

// run runs f on an idle worker, or on a new one when none is idle: it
// never queues f behind another handler.
func (w *workers) run(f func()) {
	select {
	case w.tasks <- f:
	default:
		w.wg.Go(func() { w.loop(f) })
	}
}

func (w *workers) loop(f func()) {
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		f()
		idle.Reset(workerIdle)
		select {
		case f = <-w.tasks:
		case <-idle.C:
			return
		case <-w.stop:
			return
		}
	}
}

// wait returns once every worker has exited: call it after stop is closed
// and no run call can come any more.
func (w *workers) wait() { w.wg.Wait() }
