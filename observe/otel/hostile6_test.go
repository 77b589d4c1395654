package otel_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/observe"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// hostile6Store is a guard store (no batch methods) whose Complete fails
// for the key "unrecorded".
type hostile6Store struct{ idempotency.Store }

func (s hostile6Store) Complete(ctx context.Context, group, key, token string, retain time.Duration) error {
	if key == "unrecorded" {
		return errors.New("store down")
	}
	return s.Store.Complete(ctx, group, key, token, retain)
}

// TestParkedAndNotRecordedEventsLandOnTheConsumerSpan pins a fix found by hostile testing. What it guarded
// against: the hooks' Handle
// now ends "once the message is settled, so its events land in it", and
// the otel package names reliablemq.parked among the events it puts on
// the consumer span. But only Handled, Retry "handler" and LeaseExpired are
// emitted with the handler's ctx: a handler failure that ends in a park
// emits Parked (park runs on bctx, the client's ctx without the span), and
// a success whose completion fails emits NotRecorded (complete runs on
// bctx) while the span is still open but with a ctx that has none. The
// consumer span of a parked message then says Error and nothing else; the
// one of an unrecorded success says OK, with no trace that the effect may
// run again.
func TestParkedAndNotRecordedEventsLandOnTheConsumerSpan(t *testing.T) {
	t.Parallel()
	testenv.SkipUnderRace(t)
	h, exp, _ := setup(t)
	var mu sync.Mutex
	spanless := map[observe.Kind]int{}
	seen := map[observe.Kind]int{}
	record := observe.Hooks{Event: func(ctx context.Context, e observe.Event) {
		mu.Lock()
		defer mu.Unlock()
		seen[e.Kind]++
		if !trace.SpanFromContext(ctx).IsRecording() {
			spanless[e.Kind]++
		}
	}}
	env := testenv.NewRocketMQ(t)
	topic, group := testenv.Name(t, "T"), testenv.Name(t, "G")
	env.CreateTopic(t, topic, 1)
	env.CreateTopic(t, "%RETRY%"+group, 1)
	p, err := producer.New(env.NameServers())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	s, err := idempotency.NewMySQLStore(testenv.MySQL(t))
	if err != nil {
		t.Fatal(err)
	}
	g, err := idempotency.NewGuard(group, hostile6Store{s})
	if err != nil {
		t.Fatal(err)
	}
	c, err := consumer.New(env.NameServers(), group, topic, func(ctx context.Context, m *consumer.Message) error {
		if consumer.Key(m) == "poison" {
			return consumer.Permanent(errors.New("unknown coupon type"))
		}
		return nil
	}, consumer.WithHooks(observe.Join(h, record)), consumer.WithGuard(g), consumer.WithParker(memoryParker{}),
		consumer.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, k := range []string{"poison", "unrecorded"} {
		if _, err := p.Send(context.Background(), producer.Message{Topic: topic, Keys: []string{k}, Body: []byte(k)}); err != nil {
			t.Fatal(err)
		}
	}
	spanEvents := func() (int, map[string]int) { return consumerSpans(exp, topic) }
	env.Eventually(t, "both consumer spans ended, Parked and NotRecorded emitted", time.Minute, func() bool {
		mu.Lock()
		defer mu.Unlock()
		n, _ := spanEvents()
		return n == 2 && seen[observe.Parked] == 1 && seen[observe.NotRecorded] == 1
	})
	_, events := spanEvents()
	mu.Lock()
	defer mu.Unlock()
	if events["reliablemq.parked"] != 1 || events["reliablemq.not_recorded"] != 1 || len(spanless) > 0 {
		t.Errorf("consumer spans' events %v; events emitted with no recording span %v: want reliablemq.parked and "+
			"reliablemq.not_recorded on the spans of their messages", events, spanless)
	}
}

// consumerSpans counts the consumer spans of topic and their events by
// name.
func consumerSpans(exp *tracetest.InMemoryExporter, topic string) (spans int, events map[string]int) {
	events = map[string]int{}
	for _, s := range exp.GetSpans() {
		if s.Name != "process "+topic {
			continue
		}
		spans++
		for _, ev := range s.Events {
			events[ev.Name]++
		}
	}
	return spans, events
}
