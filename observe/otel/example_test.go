package otel_test

import (
	"context"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/seed157d4c4d/reliablemq/observe"
	rmqotel "github.com/seed157d4c4d/reliablemq/observe/otel"
	"github.com/seed157d4c4d/reliablemq/observe/prom"
)

func ExampleNew() {
	// A program usually sets the global provider and propagator in main
	// (otel.SetTracerProvider, otel.SetTextMapPropagator) and calls
	// rmqotel.New() with no options; here they are explicit, with spans
	// kept in memory.
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer func() {
		if err := tp.Shutdown(context.Background()); err != nil {
			fmt.Println(err)
		}
	}()

	promHooks, err := prom.New(prometheus.NewRegistry())
	if err != nil {
		fmt.Println(err)
		return
	}
	hooks := observe.Join(promHooks, rmqotel.New(
		rmqotel.WithTracerProvider(tp),
		rmqotel.WithPropagator(propagation.TraceContext{}),
	))
	// The program passes hooks to producer.WithHooks, outbox.WithHooks and
	// consumer.WithHooks; below, the calls they make for one message.

	// The producer (or the outbox enqueue) adds the trace context of the
	// send's ctx to the message properties.
	ctx, checkout := tp.Tracer("shop").Start(context.Background(), "checkout")
	props := hooks.InjectInto(ctx, map[string]string{"tenant": "acme"})
	checkout.End()
	_, ok := props["traceparent"]
	fmt.Println("traceparent in properties:", ok)

	// The consumer starts the handler's span from the delivery's properties.
	hctx, end := hooks.Begin(context.Background(), observe.Message{
		Topic: "orders", Group: "billing", MsgID: "m1", Key: "order-1", Properties: props,
	})
	hooks.Emit(hctx, observe.Event{Kind: observe.Handled, Topic: "orders", Group: "billing", MsgID: "m1"})
	end(nil)

	spans := exp.GetSpans()
	consumer := spans[len(spans)-1]
	fmt.Println(consumer.Name, consumer.SpanKind)
	fmt.Println("parent is checkout:", consumer.Parent.SpanID() == checkout.SpanContext().SpanID())
	fmt.Println("event:", consumer.Events[0].Name)

	// Output:
	// traceparent in properties: true
	// process orders consumer
	// parent is checkout: true
	// event: reliablemq.handled
}
