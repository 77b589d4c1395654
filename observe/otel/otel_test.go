package otel_test

import (
	"context"
	"errors"
	"maps"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/seed157d4c4d/reliablemq/observe"
	rmqotel "github.com/seed157d4c4d/reliablemq/observe/otel"
)

// setup returns hooks on an SDK provider whose spans end up in the
// returned exporter as soon as they end, and a tracer for the test's own
// (producer-side) spans.
func setup(t *testing.T) (observe.Hooks, *tracetest.InMemoryExporter, trace.Tracer) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() {
		if err := tp.Shutdown(context.Background()); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	h := rmqotel.New(rmqotel.WithTracerProvider(tp), rmqotel.WithPropagator(propagation.TraceContext{}))
	return h, exp, tp.Tracer("test")
}

func spanNamed(t *testing.T, exp *tracetest.InMemoryExporter, name string) tracetest.SpanStub {
	t.Helper()
	for _, s := range exp.GetSpans() {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no span %q among %d", name, len(exp.GetSpans()))
	return tracetest.SpanStub{}
}

func attrs(s tracetest.SpanStub) map[attribute.Key]attribute.Value {
	out := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes {
		out[kv.Key] = kv.Value
	}
	return out
}

func TestTraceTravelsFromProducerToConsumerSpan(t *testing.T) {
	t.Parallel()
	h, exp, tracer := setup(t)

	// Producer side: a message created inside a span.
	pctx, send := tracer.Start(context.Background(), "checkout")
	props := h.InjectInto(pctx, map[string]string{"tenant": "acme"})
	send.End()
	if props["traceparent"] == "" {
		t.Fatalf("no traceparent injected: %v", props)
	}
	if props["tenant"] != "acme" {
		t.Errorf("user property lost: %v", props)
	}

	// Consumer side: a fresh ctx, only the properties travelled.
	ctx, end := h.Begin(context.Background(), observe.Message{
		Topic: "orders", Group: "billing", MsgID: "m1", Key: "order-1 tenant-acme", Properties: props,
	})
	inHandler := trace.SpanFromContext(ctx).SpanContext()
	end(nil)

	producer := spanNamed(t, exp, "checkout")
	consumer := spanNamed(t, exp, "process orders")
	if consumer.SpanContext.TraceID() != producer.SpanContext.TraceID() {
		t.Errorf("consumer trace %s, want the producer's %s", consumer.SpanContext.TraceID(), producer.SpanContext.TraceID())
	}
	if consumer.Parent.SpanID() != producer.SpanContext.SpanID() || !consumer.Parent.IsRemote() {
		t.Errorf("consumer parent %s (remote %v), want the producer span %s, remote", consumer.Parent.SpanID(), consumer.Parent.IsRemote(), producer.SpanContext.SpanID())
	}
	if inHandler.SpanID() != consumer.SpanContext.SpanID() {
		t.Error("the handler's ctx does not carry the consumer span")
	}
	if consumer.SpanKind != trace.SpanKindConsumer {
		t.Errorf("kind %v, want consumer", consumer.SpanKind)
	}
	if consumer.Status.Code != codes.Unset {
		t.Errorf("status %v on success, want unset", consumer.Status)
	}
	if consumer.InstrumentationScope.Name != rmqotel.ScopeName {
		t.Errorf("scope %q", consumer.InstrumentationScope.Name)
	}
	got := attrs(consumer)
	for k, want := range map[attribute.Key]string{
		"messaging.system":              "rocketmq",
		"messaging.operation.type":      "process",
		"messaging.destination.name":    "orders",
		"messaging.consumer.group.name": "billing",
		"messaging.message.id":          "m1",
	} {
		if got[k].AsString() != want {
			t.Errorf("%s = %q, want %q", k, got[k].AsString(), want)
		}
	}
	if keys := got["messaging.rocketmq.message.keys"].AsStringSlice(); len(keys) != 2 || keys[0] != "order-1" || keys[1] != "tenant-acme" {
		t.Errorf("keys attribute = %v", keys)
	}
}

func TestHandlerErrorRecorded(t *testing.T) {
	t.Parallel()
	h, exp, _ := setup(t)
	_, end := h.Begin(context.Background(), observe.Message{Topic: "orders", Group: "billing"})
	end(errors.New("coupon service down"))

	s := spanNamed(t, exp, "process orders")
	if s.Status.Code != codes.Error || s.Status.Description != "coupon service down" {
		t.Errorf("status %+v, want Error with the message", s.Status)
	}
	var exception bool
	for _, ev := range s.Events {
		exception = exception || ev.Name == "exception"
	}
	if !exception {
		t.Error("no exception event for the handler's error")
	}
}

func TestInjectLeavesPresentTraceAlone(t *testing.T) {
	t.Parallel()
	h, exp, tracer := setup(t)

	// The outbox row was enqueued in a traced transaction ...
	txCtx, tx := tracer.Start(context.Background(), "enqueue")
	row := h.InjectInto(txCtx, nil)
	tx.End()

	tests := []struct {
		name  string
		ctx   context.Context
		props map[string]string
	}{
		// ... and reconcile sends it later with no trace in ctx,
		{"resend without trace", context.Background(), row},
		// or inside some other trace: the row's trace still wins.
		{"resend in another trace", otherTrace(t, tracer), row},
		// A partial context is the message's too: nothing is mixed in.
		{"only tracestate present", otherTrace(t, tracer), map[string]string{"tracestate": "vendor=1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := h.InjectInto(tt.ctx, tt.props)
			if !maps.Equal(got, tt.props) {
				t.Errorf("properties changed: %v, want %v", got, tt.props)
			}
		})
	}

	// The consumer span of the resent row belongs to the enqueue's trace.
	_, end := h.Begin(context.Background(), observe.Message{Topic: "orders", Properties: h.InjectInto(context.Background(), row)})
	end(nil)
	enqueue := spanNamed(t, exp, "enqueue")
	if c := spanNamed(t, exp, "process orders"); c.Parent.SpanID() != enqueue.SpanContext.SpanID() {
		t.Errorf("resent row's consumer span has parent %s, want the enqueue span %s", c.Parent.SpanID(), enqueue.SpanContext.SpanID())
	}
}

func otherTrace(t *testing.T, tracer trace.Tracer) context.Context {
	t.Helper()
	ctx, span := tracer.Start(context.Background(), "other")
	t.Cleanup(func() { span.End() })
	return ctx
}

func TestInjectWithoutTraceAddsNothing(t *testing.T) {
	t.Parallel()
	h, _, _ := setup(t)
	props := map[string]string{"tenant": "acme"}
	if got := h.InjectInto(context.Background(), props); !maps.Equal(got, props) {
		t.Errorf("properties = %v, want %v", got, props)
	}
	h.Inject(context.Background(), nil) // a nil map is left alone, not written to
}

func TestHandleWithoutUsableTraceStartsNewTrace(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		props map[string]string
	}{
		{"nil properties", nil},
		{"no trace properties", map[string]string{"tenant": "acme"}},
		{"malformed traceparent", map[string]string{"traceparent": "00-not-a-trace-01"}},
		{"all-zero trace id", map[string]string{"traceparent": "00-00000000000000000000000000000000-0000000000000001-01"}},
		{"garbage tracestate only", map[string]string{"tracestate": "\x01\x02=="}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h, exp, _ := setup(t)
			ctx, end := h.Begin(context.Background(), observe.Message{Topic: "orders", Properties: tt.props})
			if !trace.SpanFromContext(ctx).SpanContext().IsValid() {
				t.Error("handler ctx has no span")
			}
			end(nil)
			s := spanNamed(t, exp, "process orders")
			if s.Parent.IsValid() {
				t.Errorf("span has parent %s, want a new root", s.Parent.SpanID())
			}
		})
	}
}

func TestHandleUnderExistingSpanWithoutMessageTrace(t *testing.T) {
	t.Parallel()
	h, exp, tracer := setup(t)
	pollCtx, poll := tracer.Start(context.Background(), "poll")
	_, end := h.Begin(pollCtx, observe.Message{Topic: "orders"})
	end(nil)
	poll.End()
	if c := spanNamed(t, exp, "process orders"); c.Parent.SpanID() != poll.SpanContext().SpanID() {
		t.Errorf("parent %s, want the ctx's span %s", c.Parent.SpanID(), poll.SpanContext().SpanID())
	}
}

func TestEventAddsSpanEvents(t *testing.T) {
	t.Parallel()
	h, exp, _ := setup(t)
	ctx, end := h.Begin(context.Background(), observe.Message{Topic: "orders", Group: "billing", MsgID: "m1"})
	h.Emit(ctx, observe.Event{Kind: observe.Retry, Topic: "orders", Group: "billing", MsgID: "m1", Attempt: 2, Reason: "handler", Err: errors.New("boom")})
	h.Emit(ctx, observe.Event{Kind: observe.Parked, Topic: "orders", Group: "billing", MsgID: "m1", Attempt: 4, Reason: "retries"})
	end(errors.New("boom"))
	// After the span ended, and with no span at all: ignored, no panic.
	h.Emit(ctx, observe.Event{Kind: observe.Handled, Topic: "orders"})
	h.Emit(context.Background(), observe.Event{Kind: observe.SendDone, Topic: "orders"})

	s := spanNamed(t, exp, "process orders")
	var names []string
	for _, ev := range s.Events {
		if ev.Name == "exception" {
			continue
		}
		names = append(names, ev.Name)
		if ev.Name == "reliablemq.parked" {
			got := map[attribute.Key]attribute.Value{}
			for _, kv := range ev.Attributes {
				got[kv.Key] = kv.Value
			}
			if got["reliablemq.attempt"].AsInt64() != 4 || got["reliablemq.reason"].AsString() != "retries" {
				t.Errorf("parked event attributes %v", ev.Attributes)
			}
		}
	}
	if len(names) != 2 || names[0] != "reliablemq.retry" || names[1] != "reliablemq.parked" {
		t.Errorf("span events %v, want [reliablemq.retry reliablemq.parked]", names)
	}
}

func TestDefaultGlobalPropagatorPropagatesNothing(t *testing.T) {
	t.Parallel()
	// The global propagator is a no-op until the program sets one (this
	// test does not set it): New must still work and add nothing.
	_, _, tracer := setup(t)
	ctx, span := tracer.Start(context.Background(), "checkout")
	defer span.End()
	h := rmqotel.New()
	props := h.InjectInto(ctx, map[string]string{})
	if len(props) != 0 {
		t.Errorf("properties %v, want none with the default global propagator", props)
	}
	_, end := h.Begin(ctx, observe.Message{Topic: "orders"})
	end(nil)
}
