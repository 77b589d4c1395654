package outbox

import (
	"context"
	"log/slog"
	"testing"
	"time"
)

// slowPredecessor is a store whose predecessor check of row id takes
// longer than the lease: the clock moves by d meanwhile, and during runs
// (another instance at work).
type slowPredecessor struct {
	*fakeStore
	id     int64
	d      time.Duration
	during func()
}

func (s *slowPredecessor) predecessor(ctx context.Context, row *Row) (earlier, time.Duration, error) {
	if row.ID == s.id {
		s.advance(s.d)
		s.during()
	}
	return s.fakeStore.predecessor(ctx, row)
}

// TestNoOrderedSendStartsAfterTheLease: sendRows says no send starts
// after the claim's deadline, but the deadline was checked before an
// ordered row's predecessor check, a query: when that query outlasted the
// lease, another instance claimed and sent the row, and the first sent it
// again on its ended claim, though neither send outlived its lease.
func TestNoOrderedSendStartsAfterTheLease(t *testing.T) {
	t.Parallel()
	fake := newFakeStore(time.Second)
	c, err := newConfig([]Option{WithLogger(slog.New(slog.DiscardHandler)), WithLease(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	p := &pub{}
	other := newRelay(fake, p, c)
	other.now = fake.clock
	store := &slowPredecessor{fakeStore: fake, d: 1100 * time.Millisecond}
	slow := newRelay(store, p, c)
	slow.now = fake.clock
	h := &harness{fake: fake}
	enqueue(t, h, slow, Message{Key: "a", ShardingKey: "k"})
	store.id = enqueue(t, h, slow, Message{Key: "b", ShardingKey: "k"})
	var otherRep BatchReport
	var otherErr error
	store.during = func() { otherRep, otherErr = other.DispatchDue(context.Background(), 10) }
	rep, err := slow.DispatchDue(context.Background(), 10)
	if err != nil || otherErr != nil {
		t.Fatal(err, otherErr)
	}
	if p.count("a") != 1 || p.count("b") != 1 {
		t.Fatalf("a sent %d times, b %d times (slow relay %+v, other %+v); want each once: b's send started after the slow relay's claim ended",
			p.count("a"), p.count("b"), rep, otherRep)
	}
}
