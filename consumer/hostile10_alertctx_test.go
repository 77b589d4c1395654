package consumer

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/idempotency"
)

// The trouble alert for completions that keep failing gets a live ctx
// when the completer recorded them, as when the handler completed its own
// message (a bound renewed after the handler): an alert posting to a
// webhook with it must not find it ended because the wave's slowest
// handler used up the bound the wave started with.
func TestCompletionAlertAfterASlowWaveGetsALiveContext(t *testing.T) {
	g, err := idempotency.NewGuard("g", failingCompleteStore{})
	if err != nil {
		t.Fatal(err)
	}
	var alerts, dead atomic.Int32
	alert := func(ctx context.Context, tr Trouble) {
		if tr.Op != OpComplete {
			return
		}
		alerts.Add(1)
		if ctx.Err() != nil {
			dead.Add(1)
		}
	}
	// The wave's bound: short, so that the handlers outlive it (a wave
	// whose slowest handler ran most of a long lease).
	bctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	h := func(context.Context, *Message) error {
		<-bctx.Done()
		return nil
	}
	c := fakeStarted(t, h, WithParker(nopParker{}), WithGuard(g), WithBatchSize(troubleAfter),
		WithTroubleAlert(alert), WithLogger(slog.New(slog.DiscardHandler)))
	defer c.Close()
	items := newItems(testKeyed(troubleAfter), "", "")
	for _, it := range items {
		it.key = it.m.Keys[0]
	}
	c.guardedWave(c.run, bctx, items)
	for _, it := range items {
		if it.v != ack {
			t.Fatalf("%s: verdict %d; want acknowledged (handled, not recorded)", it.m.MsgID, it.v)
		}
	}
	if alerts.Load() != 1 || dead.Load() != 0 {
		t.Errorf("%d completion alerts, %d with an ended ctx; want one, live", alerts.Load(), dead.Load())
	}
}
