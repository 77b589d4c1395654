package consumer_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/idempotency"
)

// TestHostileBatchFastHandlerStaysClaimedUntilSlowestReturns: in a batch,
// a handler that succeeds well inside its lease is recorded done only
// when the slowest handler of its wave returns. Its lease runs out in the
// meantime, and another delivery of the same key (a second consumer of
// the group, a producer or outbox duplicate) acquires the key and applies
// the effect a second time. Unbatched, the done marker is written right
// after the handler, inside the lease.
func TestHostileBatchFastHandlerStaysClaimedUntilSlowestReturns(t *testing.T) {
	t.Parallel()
	for _, size := range []int{1, 2} {
		t.Run(fmt.Sprint("batch", size), func(t *testing.T) {
			t.Parallel()
			fastClaimOutlivesLease(t, size)
		})
	}
}

func fastClaimOutlivesLease(t *testing.T, size int) {
	f := newFixture(t, 1)
	// Long enough for the completion on a loaded machine; the slow handler
	// holds its batch (15 s) well past it.
	const lease = 5 * time.Second
	ms, err := idempotency.NewMySQLStore(f.db)
	if err != nil {
		t.Fatal(err)
	}
	g, err := idempotency.NewGuard(f.group, ms, idempotency.WithLease(lease))
	if err != nil {
		t.Fatal(err)
	}
	other, err := idempotency.NewGuard(f.group, ms, idempotency.WithLease(lease))
	if err != nil {
		t.Fatal(err)
	}
	fastDone := make(chan time.Time, 1)
	release := make(chan struct{})
	var fastRuns atomic.Int32
	h := func(ctx context.Context, m *consumer.Message) error {
		switch consumer.Key(m) {
		case "fast":
			fastRuns.Add(1)
			fastDone <- time.Now()
			return nil
		case "slow":
			// A handler that does not watch ctx (a blocking driver call),
			// or one that simply takes its whole lease.
			select {
			case <-release:
			case <-time.After(15 * time.Second):
			}
			return nil
		}
		return nil
	}
	f.sendAll(2, func(i int) string { return []string{"fast", "slow"}[i] })
	f.start(consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithGuard(g), consumer.WithParker(f.dead),
		consumer.WithBatchSize(size), consumer.WithConcurrency(2)))
	var at time.Time
	select {
	case at = <-fastDone:
	case <-time.After(30 * time.Second):
		t.Fatal("fast handler never ran")
	}
	// Well past the lease the fast handler's effect has been applied for
	// ~lease; a second delivery of its key now must see Done (or Busy).
	time.Sleep(time.Until(at.Add(lease + 500*time.Millisecond)))
	c, err := other.Claim(context.Background(), "fast")
	close(release)
	if err != nil {
		t.Fatal(err)
	}
	if c.Outcome == idempotency.Acquired {
		t.Errorf("key %q handled successfully %v ago is acquirable by another delivery (outcome %v): "+
			"its done marker waits for the slowest handler of the batch, so the effect is applied twice", "fast",
			time.Since(at).Round(time.Millisecond), c.Outcome)
	}
}
