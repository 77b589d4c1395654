package otel_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/observe"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// TestHandledAndRetryEventsLandOnTheConsumerSpan pins a fix found by hostile testing. What it guarded
// against: the consumer reports
// Handled and Retry (reason "handler") with the ctx its hooks' Handle
// returned, while the handler's span is still recording, so the otel
// hooks put reliablemq.handled / reliablemq.retry on the "process <topic>"
// span (the package doc: Event adds an event to the span recording in
// ctx; the example shows reliablemq.handled on the consumer span). Since
// the Handle is ended right after the handler returns and the events are
// emitted with the ctx from before it, the consumer span gets no such
// event and the Event hook sees no span at all: a trace no longer says
// whether the delivery was acknowledged, retried or why.
func TestHandledAndRetryEventsLandOnTheConsumerSpan(t *testing.T) {
	t.Parallel()
	testenv.SkipUnderRace(t)
	for _, guarded := range []bool{false, true} {
		t.Run(fmt.Sprint("guarded=", guarded), func(t *testing.T) {
			h, exp, _ := setup(t)
			var mu sync.Mutex
			spanless := map[observe.Kind]int{}
			record := observe.Hooks{Event: func(ctx context.Context, e observe.Event) {
				if e.Kind != observe.Handled && e.Kind != observe.Retry {
					return
				}
				if !trace.SpanFromContext(ctx).IsRecording() {
					mu.Lock()
					spanless[e.Kind]++
					mu.Unlock()
				}
			}}
			hooks := observe.Join(h, record)
			env := testenv.NewRocketMQ(t)
			topic, group := testenv.Name(t, "T"), testenv.Name(t, "G")
			env.CreateTopic(t, topic, 1)
			env.CreateTopic(t, "%RETRY%"+group, 1)
			p, err := producer.New(env.NameServers())
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			var flaky atomic.Int32
			var handled sync.Map
			opts := []consumer.Option{consumer.WithHooks(hooks), consumer.WithParker(memoryParker{}),
				consumer.WithRetryDelay(time.Second), consumer.WithLogger(slog.New(slog.DiscardHandler))}
			if guarded {
				s, err := idempotency.NewMySQLStore(testenv.MySQL(t))
				if err != nil {
					t.Fatal(err)
				}
				g, err := idempotency.NewGuard(group, s)
				if err != nil {
					t.Fatal(err)
				}
				opts = append(opts, consumer.WithGuard(g), consumer.WithBatchSize(4))
			}
			c, err := consumer.New(env.NameServers(), group, topic, func(ctx context.Context, m *consumer.Message) error {
				if consumer.Key(m) == "flaky" && flaky.Add(1) == 1 {
					return errors.New("first attempt fails")
				}
				handled.Store(consumer.Key(m), true)
				return nil
			}, opts...)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Start(); err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			for _, k := range []string{"ok", "flaky"} {
				if _, err := p.Send(context.Background(), producer.Message{Topic: topic, Keys: []string{k}, Body: []byte(k)}); err != nil {
					t.Fatal(err)
				}
			}
			env.Eventually(t, "both handled", time.Minute, func() bool {
				_, a := handled.Load("ok")
				_, b := handled.Load("flaky")
				return a && b
			})
			// A span ends once its message is settled, after the handler.
			count := func() (int, map[string]int) { return consumerSpans(exp, topic) }
			env.Eventually(t, "3 consumer spans, with reliablemq.handled twice and reliablemq.retry once", 30*time.Second, func() bool {
				spans, events := count()
				return spans == 3 && events["reliablemq.handled"] == 2 && events["reliablemq.retry"] == 1
			})
			mu.Lock()
			defer mu.Unlock()
			if len(spanless) > 0 {
				t.Errorf("events emitted with no recording span: %v", spanless)
			}
		})
	}
}
