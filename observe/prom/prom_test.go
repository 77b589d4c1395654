package prom_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/seed157d4c4d/reliablemq/observe"
	"github.com/seed157d4c4d/reliablemq/observe/prom"
)

func newHooks(t *testing.T, opts ...prom.Option) (*prometheus.Registry, observe.Hooks) {
	t.Helper()
	reg := prometheus.NewRegistry()
	h, err := prom.New(reg, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return reg, h
}

func TestEventsCountedByKindTopicGroupReason(t *testing.T) {
	t.Parallel()
	reg, h := newHooks(t)
	ctx := context.Background()
	h.Emit(ctx, observe.Event{Kind: observe.SendDone, Topic: "orders", Key: "o-1", MsgID: "m1", Duration: time.Millisecond})
	h.Emit(ctx, observe.Event{Kind: observe.SendDone, Topic: "orders", Key: "o-2", MsgID: "m2", Duration: time.Millisecond})
	h.Emit(ctx, observe.Event{Kind: observe.Retry, Topic: "orders", Group: "billing", Key: "o-1", MsgID: "m1", Attempt: 2, Reason: "handler", Err: errors.New("boom")})
	h.Emit(ctx, observe.Event{Kind: observe.Parked, Topic: "orders", Group: "billing", Key: "o-1", MsgID: "m1", Attempt: 4, Reason: "retries"})

	want := `
# HELP reliablemq_events_total Events reported by reliablemq (sends, retries, handled, duplicates, parked messages, outbox rows), by kind.
# TYPE reliablemq_events_total counter
reliablemq_events_total{group="",kind="send_done",reason="",topic="orders"} 2
reliablemq_events_total{group="billing",kind="parked",reason="retries",topic="orders"} 1
reliablemq_events_total{group="billing",kind="retry",reason="handler",topic="orders"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "reliablemq_events_total"); err != nil {
		t.Fatal(err)
	}
}

func TestNoPerMessageLabels(t *testing.T) {
	t.Parallel()
	reg, h := newHooks(t)
	ctx := context.Background()
	h.Emit(ctx, observe.Event{Kind: observe.SendDone, Topic: "orders", Key: "o-1", MsgID: "m1", Duration: time.Millisecond})
	_, end := h.Begin(ctx, observe.Message{Topic: "orders", Group: "billing", MsgID: "m1", Key: "o-1"})
	end(nil)

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[string]bool{"kind": true, "topic": true, "group": true, "reason": true, "outcome": true, "result": true}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if !allowed[lp.GetName()] {
					t.Errorf("%s has label %q", mf.GetName(), lp.GetName())
				}
				if v := lp.GetValue(); v == "o-1" || v == "m1" {
					t.Errorf("%s label %s=%q is a per-message value", mf.GetName(), lp.GetName(), v)
				}
			}
		}
	}
}

func TestSendDuration(t *testing.T) {
	t.Parallel()
	reg, h := newHooks(t, prom.WithSendBuckets(0.1, 1))
	ctx := context.Background()
	h.Emit(ctx, observe.Event{Kind: observe.SendDone, Topic: "orders", Duration: 50 * time.Millisecond})
	h.Emit(ctx, observe.Event{Kind: observe.SendDone, Topic: "orders", Duration: 200 * time.Millisecond})
	h.Emit(ctx, observe.Event{Kind: observe.SendDone, Topic: "orders", Duration: 2 * time.Second, Reason: "outcome unknown", Err: errors.New("timeout")})
	h.Emit(ctx, observe.Event{Kind: observe.SendDone, Topic: "orders", Duration: time.Second, Err: errors.New("no reason")})
	// Not measured: counted as an event, not timed.
	h.Emit(ctx, observe.Event{Kind: observe.SendDone, Topic: "orders"})
	// Other kinds are never timed here, even with a duration.
	h.Emit(ctx, observe.Event{Kind: observe.Handled, Topic: "orders", Group: "billing", Duration: time.Second})

	want := `
# HELP reliablemq_send_duration_seconds Time of each producer send (as the producer reports it in its send_done event), by outcome.
# TYPE reliablemq_send_duration_seconds histogram
reliablemq_send_duration_seconds_bucket{outcome="error",topic="orders",le="0.1"} 0
reliablemq_send_duration_seconds_bucket{outcome="error",topic="orders",le="1"} 1
reliablemq_send_duration_seconds_bucket{outcome="error",topic="orders",le="+Inf"} 1
reliablemq_send_duration_seconds_sum{outcome="error",topic="orders"} 1
reliablemq_send_duration_seconds_count{outcome="error",topic="orders"} 1
reliablemq_send_duration_seconds_bucket{outcome="ok",topic="orders",le="0.1"} 1
reliablemq_send_duration_seconds_bucket{outcome="ok",topic="orders",le="1"} 2
reliablemq_send_duration_seconds_bucket{outcome="ok",topic="orders",le="+Inf"} 2
reliablemq_send_duration_seconds_sum{outcome="ok",topic="orders"} 0.25
reliablemq_send_duration_seconds_count{outcome="ok",topic="orders"} 2
reliablemq_send_duration_seconds_bucket{outcome="outcome unknown",topic="orders",le="0.1"} 0
reliablemq_send_duration_seconds_bucket{outcome="outcome unknown",topic="orders",le="1"} 0
reliablemq_send_duration_seconds_bucket{outcome="outcome unknown",topic="orders",le="+Inf"} 1
reliablemq_send_duration_seconds_sum{outcome="outcome unknown",topic="orders"} 2
reliablemq_send_duration_seconds_count{outcome="outcome unknown",topic="orders"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "reliablemq_send_duration_seconds"); err != nil {
		t.Fatal(err)
	}
	// Two successes, the failure with no reason, the unmeasured one.
	if got := value(t, reg, "reliablemq_events_total", map[string]string{"kind": "send_done", "topic": "orders", "group": "", "reason": ""}); got != 4 {
		t.Errorf("send_done events with no reason = %v, want 4", got)
	}
}

// value returns the value of the counter or gauge series of name with
// exactly labels.
func value(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if labelsEqual(m, labels) {
				if c := m.GetCounter(); c != nil {
					return c.GetValue()
				}
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no %s series %v", name, labels)
	return 0
}

func labelsEqual(m *dto.Metric, want map[string]string) bool {
	if len(m.GetLabel()) != len(want) {
		return false
	}
	for _, lp := range m.GetLabel() {
		if v, ok := want[lp.GetName()]; !ok || v != lp.GetValue() {
			return false
		}
	}
	return true
}

func TestHandleDurationAndInFlight(t *testing.T) {
	t.Parallel()
	reg, h := newHooks(t)
	base := context.Background()
	m := observe.Message{Topic: "orders", Group: "billing", MsgID: "m1", Key: "o-1"}
	inFlight := map[string]string{"topic": "orders", "group": "billing"}

	ctx, end1 := h.Begin(base, m)
	if ctx != base {
		t.Error("Handle changed the ctx; it only measures")
	}
	_, end2 := h.Begin(base, m)
	if got := value(t, reg, "reliablemq_handlers_in_flight", inFlight); got != 2 {
		t.Fatalf("in flight = %v, want 2", got)
	}
	end1(nil)
	end2(errors.New("boom"))
	end2(errors.New("boom")) // a second call records nothing
	if got := value(t, reg, "reliablemq_handlers_in_flight", inFlight); got != 0 {
		t.Fatalf("in flight after both ended = %v, want 0", got)
	}

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]uint64{}
	for _, mf := range mfs {
		if mf.GetName() != "reliablemq_handle_duration_seconds" {
			continue
		}
		for _, s := range mf.GetMetric() {
			if !labelsEqual(s, map[string]string{"topic": "orders", "group": "billing", "result": resultOf(s)}) {
				t.Errorf("unexpected labels %v", s.GetLabel())
			}
			counts[resultOf(s)] = s.GetHistogram().GetSampleCount()
		}
	}
	if counts["ok"] != 1 || counts["error"] != 1 || len(counts) != 2 {
		t.Errorf("handle duration counts = %v, want ok:1 error:1", counts)
	}
}

func resultOf(m *dto.Metric) string {
	for _, lp := range m.GetLabel() {
		if lp.GetName() == "result" {
			return lp.GetValue()
		}
	}
	return ""
}

func TestRegisterTwiceFails(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	if _, err := prom.New(reg); err != nil {
		t.Fatalf("first New: %v", err)
	}
	_, err := prom.New(reg)
	var are prometheus.AlreadyRegisteredError
	if !errors.As(err, &are) {
		t.Fatalf("second New: err = %v, want an AlreadyRegisteredError in the chain", err)
	}
}

func TestFailedNewRegistersNothing(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	// Take the third collector's name, so New fails after registering two.
	reg.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "reliablemq_handle_duration_seconds", Help: "taken"}))
	if _, err := prom.New(reg); err == nil {
		t.Fatal("New succeeded with a name taken")
	}
	// The collectors registered before the failure were unregistered:
	// registering the same descriptors again succeeds.
	events := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "reliablemq_events_total",
		Help: "Events reported by reliablemq (sends, retries, handled, duplicates, parked messages, outbox rows), by kind.",
	}, []string{"kind", "topic", "group", "reason"})
	if err := reg.Register(events); err != nil {
		t.Errorf("events counter still registered after a failed New: %v", err)
	}
}

func TestInvalidOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		reg  prometheus.Registerer
		opts []prom.Option
		want string
	}{
		{"nil registerer", nil, nil, "nil registerer"},
		{"send buckets decreasing", prometheus.NewRegistry(), []prom.Option{prom.WithSendBuckets(1, 0.5)}, "send buckets"},
		{"handle buckets repeated", prometheus.NewRegistry(), []prom.Option{prom.WithHandleBuckets(1, 1)}, "handle buckets"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h, err := prom.New(tt.reg, tt.opts...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tt.want)
			}
			if h.Event != nil || h.Handle != nil {
				t.Error("hooks returned with an error")
			}
		})
	}
	if _, err := prom.New(nil); !errors.Is(err, prom.ErrNilRegisterer) {
		t.Errorf("nil registerer: err = %v, want ErrNilRegisterer", err)
	}
}

func TestInvalidUTF8LabelNeverPanics(t *testing.T) {
	t.Parallel()
	reg, h := newHooks(t)
	ctx := context.Background()
	h.Emit(ctx, observe.Event{Kind: observe.Retry, Topic: "orders", Group: "bad\xffgroup", Reason: "handler"})
	_, end := h.Begin(ctx, observe.Message{Topic: "bad\xfftopic", Group: "billing"})
	end(nil)
	if n := testutil.CollectAndCount(reg, "reliablemq_events_total"); n != 1 {
		t.Errorf("events series = %d, want 1", n)
	}
	if n := testutil.CollectAndCount(reg, "reliablemq_handle_duration_seconds"); n != 1 {
		t.Errorf("handle series = %d, want 1", n)
	}
}
