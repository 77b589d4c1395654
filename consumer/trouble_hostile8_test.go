package consumer

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

// TestTroubleRunsStayCountedRightUnderConcurrency guards the lock-free
// success of trouble.observe: with failures and successes of several
// operations racing (a success against the first failure of a run
// included), the count of operations with a run always matches the runs
// kept, a success after the storm ends every run (none is left counted,
// which would send every later success through the lock), and a run of
// failures with no success of its operation is reported exactly once
// however many goroutines add to it.
func TestTroubleRunsStayCountedRightUnderConcurrency(t *testing.T) {
	ctx, down := context.Background(), errors.New("down")
	ops := []string{OpClaim, OpComplete, OpPark}
	for round := range 200 {
		var reports atomic.Int32
		tr := &trouble{group: "g", logger: slog.New(slog.DiscardHandler),
			alert: func(_ context.Context, x Trouble) {
				if x.Op == OpRetryStore {
					reports.Add(1)
				}
			}}
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for range 20 {
					op := ops[rand.IntN(len(ops))]
					var err error
					if rand.IntN(2) == 0 {
						err = down
					}
					tr.observe(ctx, op, err, "k", "m")
				}
			})
		}
		for range 3 { // only failures of this one: one run, one report
			wg.Go(func() {
				for range 4 {
					tr.observe(ctx, OpRetryStore, down, "k", "m")
				}
			})
		}
		wg.Wait()
		if n := reports.Load(); n != 1 {
			t.Fatalf("round %d: %d reports for one run of 12 failures, want 1", round, n)
		}
		tr.mu.Lock()
		runs, kept := int(tr.runs.Load()), len(tr.inRow)
		tr.mu.Unlock()
		if runs != kept {
			t.Fatalf("round %d: %d runs counted, %d kept", round, runs, kept)
		}
		for _, op := range append(ops, OpRetryStore) {
			tr.observe(ctx, op, nil, "k", "m")
		}
		if n, kept := tr.runs.Load(), len(tr.inRow); n != 0 || kept != 0 {
			t.Fatalf("round %d: %d runs counted, %d kept after every operation succeeded", round, n, kept)
		}
	}
}
