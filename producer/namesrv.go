package producer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/remoting"
)

// ErrNameServerUnreachable is wrapped by the [Transient] error of a send
// that failed because no name server answered: the official
// client says only "route info not found", as it does for a topic it has
// no route for.
var ErrNameServerUnreachable = errors.New("producer: no name server reachable")

// nameServerProbe tells an unreachable name server from a missing route
// when the client reports "route info not found". One probe serves every
// send for a second, so an outage does not turn each failed send into
// more dials.
type nameServerProbe struct {
	names []string

	mu      sync.Mutex
	checked time.Time
	err     error // nil: a name server accepted a connection
}

// probeEvery is how long one probe's answer stands.
const probeEvery = time.Second

// probeTimeout bounds one probe of every name server.
const probeTimeout = time.Second

func newNameServerProbe(names []string) *nameServerProbe { return &nameServerProbe{names: names} }

// explain wraps err with ErrNameServerUnreachable when it is the client's
// "route info not found" and no name server answers.
func (p *nameServerProbe) explain(ctx context.Context, err error) error {
	if p == nil || !strings.Contains(err.Error(), "route info not found") {
		return err
	}
	if perr := p.check(ctx); perr != nil {
		return fmt.Errorf("%w (%v): %w", ErrNameServerUnreachable, perr, err)
	}
	return err
}

func (p *nameServerProbe) check(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if time.Since(p.checked) < probeEvery {
		return p.err
	}
	// One bound for the whole probe, whatever the number of name servers;
	// a cancelled send says nothing about them, so its ctx is not used.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), probeTimeout)
	defer cancel()
	var errs []error
	for _, ns := range p.names {
		err := remoting.Ping(pctx, ns)
		if err == nil {
			errs = nil
			break
		}
		errs = append(errs, err)
	}
	p.checked, p.err = time.Now(), errors.Join(errs...)
	return p.err
}
