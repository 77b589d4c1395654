package prom_test

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/seed157d4c4d/reliablemq/observe"
)

// The README joins these hooks with a tracer's. A tracer Handle that
// panics is contained by the consumer (logged, the message retried), so the
// process lives on with these metrics: handlers_in_flight must come back
// down, not stay raised by one for every such delivery, and the attempt is
// timed as an error.
func TestInFlightComesDownWhenAJoinedHandlePanics(t *testing.T) {
	t.Parallel()
	reg, h := newHooks(t)
	boom := observe.Hooks{Handle: func(context.Context, observe.Message) (context.Context, func(error)) {
		panic("tracer bug")
	}}
	hooks := observe.Join(h, boom)
	m := observe.Message{Topic: "orders", Group: "billing", MsgID: "m1", Key: "o-1"}
	for range 3 {
		func() {
			defer func() { _ = recover() }() // as the consumer does: logged, retried
			hooks.Begin(context.Background(), m)
		}()
	}
	if got := value(t, reg, "reliablemq_handlers_in_flight", map[string]string{"topic": "orders", "group": "billing"}); got != 0 {
		t.Errorf("handlers in flight = %v after three contained hook panics, want 0", got)
	}
	if n := testutil.CollectAndCount(reg, "reliablemq_handle_duration_seconds"); n != 1 {
		t.Fatalf("handle duration series = %d, want 1 (result=error)", n)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "reliablemq_handle_duration_seconds" {
			continue
		}
		s := mf.GetMetric()[0]
		if resultOf(s) != "error" || s.GetHistogram().GetSampleCount() != 3 {
			t.Errorf("handle duration: result %q, count %d; want error, 3", resultOf(s), s.GetHistogram().GetSampleCount())
		}
	}
}
