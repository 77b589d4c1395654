// Package otel propagates OpenTelemetry trace context through RocketMQ
// messages and puts a consumer span around each handler. It is an optional
// subpackage: the core packages never import it, so programs that do not
// use it do not link OpenTelemetry.
//
// # What it records
//
// [New] returns [observe.Hooks] with three hooks:
//
//   - Inject writes the trace context of ctx into the message's user
//     properties with the configured propagator: with the W3C Trace
//     Context propagator, the properties traceparent and tracestate. It
//     runs where the message is created (producer send, outbox enqueue), so
//     an outbox row written in a traced transaction carries that trace
//     even when the reconcile job sends it later with no trace in its ctx.
//   - Handle extracts the trace context from the delivery's properties and
//     starts a span of kind Consumer named "process <topic>", a child of
//     the producer's span, with the messaging attributes
//     messaging.system=rocketmq, messaging.operation.type=process,
//     messaging.operation.name=process, messaging.destination.name,
//     messaging.consumer.group.name, messaging.message.id and
//     messaging.rocketmq.message.keys (those that are known). The returned
//     ctx carries the span to the handler; the end function records the
//     handler's error (status Error, an exception event, error.type) and
//     ends the span.
//   - Event adds an event named "reliablemq.<kind>" (for example
//     reliablemq.retry, reliablemq.parked, reliablemq.send_done) to the span
//     recording in ctx, if any, with the topic, group, message id, attempt,
//     reason and error as attributes. It never starts a span or changes a
//     span's status: a span ended before the event arrives ignores it.
//
// Spans carry per-message attributes (message id, keys); they are traces,
// not metric labels, so this is no cardinality problem for the tracing
// backend. Keys can be business data: leave this package out, or filter
// in the SDK, where keys must not reach the tracing backend.
//
// By default New uses the global TracerProvider and TextMapPropagator of
// go.opentelemetry.io/otel, looked up when New runs (the global ones
// delegate, so providers set later are still used). OpenTelemetry's
// default global propagator propagates nothing: a program must call
// otel.SetTextMapPropagator (with propagation.TraceContext{}, usually
// composed with propagation.Baggage{}) or pass [WithPropagator], or no
// trace context travels. [WithTracerProvider] and [WithPropagator] pass
// explicit ones.
//
// # Failure modes
//
// Tracing never fails or delays a message and never panics on message
// data. Inject adds nothing when ctx carries no trace context, and changes
// nothing when the properties already hold any of the propagator's fields
// (the message already carries a trace, for example an outbox row
// enqueued in a traced transaction and resent by reconcile); it cannot add
// to a nil map. Handle with missing or malformed trace properties (an
// invalid traceparent, a message from a producer without this package)
// starts the consumer span as a child of ctx's span if there is one, else
// as the root of a new trace; the handler runs either way. A consumer that
// never calls the end function leaves the span unended (never exported).
//
// # Concurrency
//
// The hooks are safe for concurrent use; each call works only on its own
// ctx and map, and the span calls are the SDK's.
//
// # Usage
//
//	otel.SetTextMapPropagator(propagation.TraceContext{}) // once, in main (go.opentelemetry.io/otel)
//	promHooks, err := prom.New(reg)
//	if err != nil {
//		return err
//	}
//	hooks := observe.Join(promHooks, rmqotel.New())
//	// pass hooks to producer.WithHooks, outbox.WithHooks and consumer.WithHooks.
package otel
