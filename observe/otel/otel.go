package otel

import (
	"context"

	otelglobal "go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/seed157d4c4d/reliablemq/internal/remoting"
	"github.com/seed157d4c4d/reliablemq/observe"
)

// ScopeName is the instrumentation scope of the spans this package starts.
const ScopeName = "github.com/seed157d4c4d/reliablemq/observe/otel"

// Option configures [New].
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	provider   trace.TracerProvider
	propagator propagation.TextMapPropagator
}

// WithTracerProvider sets the provider of the consumer spans. Default (and
// when tp is nil) the global one, otel.GetTracerProvider().
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(c *config) { c.provider = tp })
}

// WithPropagator sets the propagator that writes and reads the trace
// context in message properties, for example propagation.TraceContext{}.
// Default (and when p is nil) the global one, otel.GetTextMapPropagator(),
// which propagates nothing until the program sets one.
func WithPropagator(p propagation.TextMapPropagator) Option {
	return optionFunc(func(c *config) { c.propagator = p })
}

type tracing struct {
	tracer     trace.Tracer
	propagator propagation.TextMapPropagator
}

// New returns hooks that propagate trace context in message properties
// (Inject), start a consumer span around each handler (Handle) and add
// events to the span in ctx (Event); see the package documentation. It
// does no I/O and cannot fail. The hooks are safe for concurrent use.
func New(opts ...Option) observe.Hooks {
	var c config
	for _, o := range opts {
		o.apply(&c)
	}
	if c.provider == nil {
		c.provider = otelglobal.GetTracerProvider()
	}
	if c.propagator == nil {
		c.propagator = otelglobal.GetTextMapPropagator()
	}
	t := &tracing{
		tracer:     c.provider.Tracer(ScopeName),
		propagator: c.propagator,
	}
	return observe.Hooks{Event: t.event, Inject: t.inject, Handle: t.handle}
}

// inject adds the trace context of ctx to props unless props already
// carries one: a message's trace context is kept whole, never mixed with
// the sender's.
func (t *tracing) inject(ctx context.Context, props map[string]string) {
	if props == nil {
		return
	}
	for _, f := range t.propagator.Fields() {
		if _, ok := props[f]; ok {
			return
		}
	}
	t.propagator.Inject(ctx, propagation.MapCarrier(props))
}

func (t *tracing) handle(ctx context.Context, m observe.Message) (context.Context, func(error)) {
	ctx = t.propagator.Extract(ctx, propagation.MapCarrier(m.Properties))
	attrs := []attribute.KeyValue{
		semconv.MessagingSystemRocketMQ,
		semconv.MessagingOperationTypeProcess,
		semconv.MessagingOperationName("process"),
	}
	if m.Topic != "" {
		attrs = append(attrs, semconv.MessagingDestinationName(m.Topic))
	}
	if m.Group != "" {
		attrs = append(attrs, semconv.MessagingConsumerGroupName(m.Group))
	}
	if m.MsgID != "" {
		attrs = append(attrs, semconv.MessagingMessageID(m.MsgID))
	}
	if keys := remoting.SplitKeys(m.Key); len(keys) > 0 {
		attrs = append(attrs, semconv.MessagingRocketMQMessageKeys(keys...))
	}
	name := "process"
	if m.Topic != "" {
		name += " " + m.Topic
	}
	ctx, span := t.tracer.Start(ctx, name,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attrs...))
	return ctx, func(err error) {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
			span.SetAttributes(semconv.ErrorType(err))
		}
		span.End()
	}
}

func (t *tracing) event(ctx context.Context, e observe.Event) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	var attrs []attribute.KeyValue
	if e.Topic != "" {
		attrs = append(attrs, semconv.MessagingDestinationName(e.Topic))
	}
	if e.Group != "" {
		attrs = append(attrs, semconv.MessagingConsumerGroupName(e.Group))
	}
	if e.MsgID != "" {
		attrs = append(attrs, semconv.MessagingMessageID(e.MsgID))
	}
	if e.Attempt > 0 {
		attrs = append(attrs, attribute.Int("reliablemq.attempt", e.Attempt))
	}
	if e.Duration > 0 {
		attrs = append(attrs, attribute.Float64("reliablemq.duration_seconds", e.Duration.Seconds()))
	}
	if e.Reason != "" {
		attrs = append(attrs, attribute.String("reliablemq.reason", e.Reason))
	}
	if e.Err != nil {
		attrs = append(attrs, semconv.ErrorType(e.Err), attribute.String("reliablemq.error", e.Err.Error()))
	}
	span.AddEvent("reliablemq."+string(e.Kind), trace.WithAttributes(attrs...))
}
