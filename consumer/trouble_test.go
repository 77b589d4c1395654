package consumer

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
)

// TestTroubleCountsRunsAndASuccessEndsOne: a store failing troubleAfter
// times in a row is reported once; a success between failures ends the
// run, of its own operation only, also when the other operations are
// succeeding at the same time (the lock-free path of a success).
func TestTroubleCountsRunsAndASuccessEndsOne(t *testing.T) {
	var reports atomic.Int32
	tr := &trouble{group: "g", logger: slog.New(slog.DiscardHandler),
		alert: func(context.Context, Trouble) { reports.Add(1) }}
	ctx, down := context.Background(), errors.New("down")
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { // successes of another operation, all along
			for range 1000 {
				tr.observe(ctx, OpClaim, nil, "k", "m")
			}
		})
	}
	for range troubleAfter - 1 {
		tr.observe(ctx, OpComplete, down, "k", "m")
	}
	tr.observe(ctx, OpComplete, nil, "k", "m") // ends the run
	for range troubleAfter - 1 {
		tr.observe(ctx, OpComplete, down, "k", "m")
	}
	if n := reports.Load(); n != 0 {
		t.Fatalf("%d reports for runs of %d failures", n, troubleAfter-1)
	}
	tr.observe(ctx, OpComplete, down, "k", "m")
	for range 3 {
		tr.observe(ctx, OpComplete, down, "k", "m")
	}
	wg.Wait()
	if n := reports.Load(); n != 1 {
		t.Fatalf("%d reports for one run of %d failures, want 1", n, troubleAfter+3)
	}
	tr.observe(ctx, OpComplete, nil, "k", "m")
	if n := tr.runs.Load(); n != 0 {
		t.Fatalf("%d runs counted after every operation succeeded", n)
	}
}
