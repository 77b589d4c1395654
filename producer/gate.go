package producer

import (
	"fmt"
	"sync"
)

// gate admits work (sends, transaction checks) until it closes, and
// closing waits for what it admitted before shutting the client down.
type gate struct {
	mu       sync.RWMutex // guards closed; held shared while work is admitted
	closed   bool
	inflight sync.WaitGroup
	once     sync.Once
	err      error
}

// enter admits one piece of work, which must call leave; it fails with
// ErrClosed once close has begun.
func (g *gate) enter() error {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.closed {
		return ErrClosed
	}
	g.inflight.Add(1)
	return nil
}

func (g *gate) leave() { g.inflight.Done() }

// close stops admitting, waits for the work admitted and runs shutdown,
// once; later calls return the first call's error.
func (g *gate) close(shutdown func() error) error {
	g.once.Do(func() {
		g.mu.Lock()
		g.closed = true
		g.mu.Unlock()
		g.inflight.Wait()
		if err := shutdown(); err != nil {
			g.err = fmt.Errorf("producer: shutdown: %w", err)
		}
	})
	return g.err
}
