package consumer_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/idempotency"
)

// singleStore is a guard store without batch methods (a user's own
// store): each claim is a round trip of its own. A claim waits up to
// partnerWait for a second one to be in flight with it, and the most
// claims seen in flight at once is kept.
type singleStore struct {
	inner       idempotency.Store
	inFlight    atomic.Int32
	most        atomic.Int32
	partnerWait time.Duration
}

func (s *singleStore) Claim(ctx context.Context, group, key, token string, lease time.Duration) (idempotency.Outcome, int, error) {
	n := s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	for m := s.most.Load(); n > m && !s.most.CompareAndSwap(m, n); m = s.most.Load() {
	}
	for end := time.Now().Add(s.partnerWait); s.most.Load() < 2 && time.Now().Before(end); {
		time.Sleep(5 * time.Millisecond)
	}
	return s.inner.Claim(ctx, group, key, token, lease)
}

func (s *singleStore) Complete(ctx context.Context, group, key, token string, retain time.Duration) error {
	return s.inner.Complete(ctx, group, key, token, retain)
}

func (s *singleStore) Release(ctx context.Context, group, key, token string, forget bool) error {
	return s.inner.Release(ctx, group, key, token, forget)
}

// TestBatchClaimsOfAStoreWithoutBatchesStayConcurrent: with a guard store
// that has no batch claim, combining the claims of concurrent batches
// saves no round trip; it would only run every batch's claims one after
// another in one goroutine (up to 16 waves of 32 keys each, under one
// 10s bound). Batches handed over at once must still claim at once.
func TestBatchClaimsOfAStoreWithoutBatchesStayConcurrent(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	ms, err := idempotency.NewMySQLStore(f.db)
	if err != nil {
		t.Fatal(err)
	}
	store := &singleStore{inner: ms, partnerWait: time.Second}
	g, err := idempotency.NewGuard(f.group, store)
	if err != nil {
		t.Fatal(err)
	}
	eff := newEffects()
	h := func(ctx context.Context, m *consumer.Message) error {
		eff.apply(consumer.Key(m), string(m.Body))
		return nil
	}
	const n, size = 16, 2
	f.sendAll(n, byIndex)
	c := f.start(consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithGuard(g), consumer.WithParker(f.dead),
		consumer.WithBatchSize(size)))
	f.eventually("every message handled", func() bool { return c.Stats().Handled == n })
	f.settle()
	for i := range n {
		if got := eff.count(byIndex(i)); got != 1 {
			t.Errorf("%s applied %d times", byIndex(i), got)
		}
	}
	if got := store.most.Load(); got < 2 {
		t.Errorf("at most %d claim in flight at once: the batches' claims ran one after another", got)
	}
}
