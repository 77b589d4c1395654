package consumer_test

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/deadletter"
)

const hostile20 = "H20_"

// h20Parker is the dead-letter table whose HasParked fails while
// hasFails > 0.
type h20Parker struct {
	*deadletter.Table
	hasFails atomic.Int32
}

func (p *h20Parker) HasParked(ctx context.Context, group, key string, before int64) (bool, error) {
	if p.hasFails.Add(-1) >= 0 {
		return false, errors.New("invalid connection")
	}
	return p.Table.HasParked(ctx, group, key, before)
}

// TestOrderlyParkedKeyCheckFailuresDoNotSpendHandlerAttempts: under
// ParkKey with a cap of 3 attempts, the parked-key check fails three
// times (a store blip) before it answers "not parked". The handler has
// not run yet: it must get its 3 attempts, so a step that fails once and
// then succeeds is applied, not parked after a single run.
func TestOrderlyParkedKeyCheckFailuresDoNotSpendHandlerAttempts(t *testing.T) {
	f := newFixtureNamed(t, 1, hostile20)
	parker := &h20Parker{Table: f.dead}
	parker.hasFails.Store(3)
	eff := newEffects()
	var runs atomic.Int32
	var attempts []int
	h := func(ctx context.Context, m *consumer.Message) error {
		attempts = append(attempts, m.Attempt)
		if runs.Add(1) == 1 {
			return errors.New("transient: first run fails")
		}
		eff.apply(m.ShardingKey, string(m.Body))
		return nil
	}
	f.start(consumer.NewOrderly(f.env.NameServers(), f.group, f.topic, h, consumer.ParkKey,
		consumer.WithGuard(f.guard()), consumer.WithParker(parker),
		consumer.WithMaxAttempts(3), consumer.WithRetryDelay(50*time.Millisecond), hostile6Quiet))
	f.send(h19Step("order", 0))
	f.eventually("step 0 applied or parked", func() bool {
		return len(h19Order(eff, "order")) == 1 || len(f.parked()) == 1
	})
	f.settle()
	if dls := f.parked(); len(dls) != 0 {
		t.Fatalf("step 0 parked (cause %s, attempts %d) after its handler ran %d time(s) (attempts %v): the failed parked-key checks spent its attempts",
			dls[0].Cause, dls[0].Attempts, runs.Load(), attempts)
	}
	if got := h19Order(eff, "order"); !slices.Equal(got, []string{"0"}) {
		t.Fatalf("applied %v, want [0]", got)
	}
}
