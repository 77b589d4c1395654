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

// singleStore is a guard store without batch methods (a user's own
// store): each claim is a round trip of its own. A claim waits up to
// partnerWait for a second one to be in flight with it, and the most
// claims seen in flight at once is kept.
type singleStore struct {
	inner          idempotency.Store
	claims, writes inFlight
	partnerWait    time.Duration
}

// inFlight counts calls in flight and keeps the most at once.
type inFlight struct{ now, most atomic.Int32 }

// enter waits up to wait for a second call to be in flight with this one;
// the caller calls the returned func when done.
func (f *inFlight) enter(wait time.Duration) func() {
	n := f.now.Add(1)
	for m := f.most.Load(); n > m && !f.most.CompareAndSwap(m, n); m = f.most.Load() {
	}
	for end := time.Now().Add(wait); f.most.Load() < 2 && time.Now().Before(end); {
		time.Sleep(5 * time.Millisecond)
	}
	return func() { f.now.Add(-1) }
}

func (s *singleStore) Claim(ctx context.Context, group, key, token string, lease time.Duration) (idempotency.Outcome, int, error) {
	defer s.claims.enter(s.partnerWait)()
	return s.inner.Claim(ctx, group, key, token, lease)
}

func (s *singleStore) Complete(ctx context.Context, group, key, token string, retain time.Duration) error {
	defer s.writes.enter(s.partnerWait)()
	return s.inner.Complete(ctx, group, key, token, retain)
}

func (s *singleStore) Release(ctx context.Context, group, key, token string, forget bool) error {
	return s.inner.Release(ctx, group, key, token, forget)
}

// TestBatchClaimsOfAStoreWithoutBatchesStayConcurrent: with a guard store
// that has no batch methods, combining the claims of concurrent batches
// saves no round trip; it would only run every batch's claims one after
// another in one goroutine (up to 16 waves of 32 keys each, under one
// 10s bound), and likewise the completions of handlers finishing
// together (up to 512). Batches handed over at once must still claim, and
// complete, at once.
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
	f.handleEachOnce(g, 16, 2)
	if got := store.claims.most.Load(); got < 2 {
		t.Errorf("at most %d claim in flight at once: the batches' claims ran one after another", got)
	}
	if got := store.writes.most.Load(); got < 2 {
		t.Errorf("at most %d completion in flight at once: the handlers' completions ran one after another", got)
	}
}

// TestBatchDuplicatesAcrossCombinedClaimsApplyOnce: batches whose claims
// share a round trip hold the same keys; each key is applied once, the
// later copies come back Busy and end as duplicates.
func TestBatchDuplicatesAcrossCombinedClaimsApplyOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	g, store := f.batchGuard()
	store.holdFirst = 300 * time.Millisecond
	eff := newEffects()
	h := func(ctx context.Context, m *consumer.Message) error {
		eff.apply(consumer.Key(m), string(m.Body))
		return nil
	}
	const n = 24
	f.sendAll(n, func(i int) string { return fmt.Sprint("order-", i%4) })
	c := f.start(consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithGuard(g), consumer.WithParker(f.dead),
		consumer.WithBatchSize(2)))
	f.eventually("every message settled", func() bool {
		st := c.Stats()
		return st.Handled+st.Duplicates == n
	})
	f.settle()
	for k := range 4 {
		if got := eff.count(fmt.Sprint("order-", k)); got != 1 {
			t.Errorf("order-%d applied %d times", k, got)
		}
	}
	if st := c.Stats(); st.Handled != 4 || st.Duplicates != n-4 {
		t.Errorf("stats %+v, want 4 handled, %d duplicates", st, n-4)
	}
	t.Logf("largest claim %d keys; stats %+v", store.largest.Load(), c.Stats())
}
