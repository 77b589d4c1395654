package prom_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/seed157d4c4d/reliablemq/observe"
	"github.com/seed157d4c4d/reliablemq/observe/prom"
)

func ExampleNew() {
	reg := prometheus.NewRegistry()
	promHooks, err := prom.New(reg)
	if err != nil {
		fmt.Println(err)
		return
	}
	// A program joins these with its other hooks (observe.Join(promHooks,
	// otel.New())), passes the result to the producer, outbox and consumer
	// options, and serves the registry.
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))

	// What the producer and the consumer report for one message.
	ctx := context.Background()
	promHooks.Emit(ctx, observe.Event{Kind: observe.SendDone, Topic: "orders", Key: "order-1", MsgID: "m1", Duration: 3 * time.Millisecond})
	_, end := promHooks.Begin(ctx, observe.Message{Topic: "orders", Group: "billing", MsgID: "m1", Key: "order-1"})
	end(nil)
	promHooks.Emit(ctx, observe.Event{Kind: observe.Handled, Topic: "orders", Group: "billing", Key: "order-1", MsgID: "m1"})

	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		line := sc.Text()
		// Buckets and the measured handler time vary; counts do not.
		if strings.HasPrefix(line, "#") || strings.Contains(line, "_bucket") || strings.Contains(line, "handle_duration_seconds_sum") {
			continue
		}
		fmt.Println(line)
	}

	// One set of collectors per registry: build the hooks once and share them.
	_, err = prom.New(reg)
	fmt.Println("second New:", err != nil)

	// Output:
	// reliablemq_events_total{group="",kind="send_done",reason="",topic="orders"} 1
	// reliablemq_events_total{group="billing",kind="handled",reason="",topic="orders"} 1
	// reliablemq_handle_duration_seconds_count{group="billing",result="ok",topic="orders"} 1
	// reliablemq_handlers_in_flight{group="billing",topic="orders"} 0
	// reliablemq_send_duration_seconds_sum{outcome="ok",topic="orders"} 0.003
	// reliablemq_send_duration_seconds_count{outcome="ok",topic="orders"} 1
	// second New: true
}
