package otel_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/observe"
	"github.com/seed157d4c4d/reliablemq/outbox"
	"github.com/seed157d4c4d/reliablemq/producer"
)

type memoryParker struct{}

func (memoryParker) Park(context.Context, *consumer.DeadLetter) (bool, error) { return true, nil }

// TestTraceFromOutboxThroughBrokerToHandler wires the hooks into the real
// packages: a row enqueued inside a span, sent after commit, is handled in
// a consumer span whose parent is the enqueuing span; a failing message
// ends its span with an error and reports the retry and the park.
func TestTraceFromOutboxThroughBrokerToHandler(t *testing.T) {
	t.Parallel()
	testenv.SkipUnderRace(t)
	h, exp, tracer := setup(t)
	var mu sync.Mutex
	var kinds []observe.Kind
	record := observe.Hooks{Event: func(_ context.Context, e observe.Event) {
		mu.Lock()
		defer mu.Unlock()
		kinds = append(kinds, e.Kind)
	}}
	hooks := observe.Join(h, record)
	env := testenv.NewRocketMQ(t)
	topic, group := testenv.Name(t, "T"), testenv.Name(t, "G")
	env.CreateTopic(t, topic, 1)
	env.CreateTopic(t, "%RETRY%"+group, 1)
	p, err := producer.New(env.NameServers(), producer.WithHooks(hooks))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	relay, err := outbox.NewRelay(testenv.MySQL(t), p, outbox.WithHooks(hooks))
	if err != nil {
		t.Fatal(err)
	}
	var handled sync.Map
	c, err := consumer.New(env.NameServers(), group, topic, func(ctx context.Context, m *consumer.Message) error {
		handled.Store(consumer.Key(m), trace.SpanContextFromContext(ctx))
		if consumer.Key(m) == "poison" {
			return errors.New("never works")
		}
		return nil
	}, consumer.WithHooks(hooks), consumer.WithParker(memoryParker{}), consumer.WithMaxAttempts(2),
		consumer.WithRetryDelay(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	ctx, checkout := tracer.Start(context.Background(), "checkout")
	err = relay.Transact(ctx, func(ctx context.Context, tx *outbox.Tx) error {
		for _, k := range []string{"ok", "poison"} {
			if _, err := tx.Enqueue(ctx, outbox.Message{Topic: topic, Key: k, Body: []byte(k)}); err != nil {
				return err
			}
		}
		return nil
	})
	checkout.End()
	if err != nil {
		t.Fatal(err)
	}
	// The hooks' Handle ends the consumer span after the message is settled,
	// so the Parked event comes before the span's end: wait for the three
	// spans, then Close (it waits for running handlers) before counting.
	env.Eventually(t, "both handled, the poison parked and three consumer spans ended", time.Minute, func() bool {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, k := range kinds {
			if k == observe.Parked {
				n++
			}
		}
		_, ok := handled.Load("ok")
		spans, _ := consumerSpans(exp, topic)
		return ok && n == 1 && spans >= 3
	})
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	want := checkout.SpanContext()
	v, _ := handled.Load("ok")
	if got := v.(trace.SpanContext); got.TraceID() != want.TraceID() {
		t.Fatalf("handler ran in trace %s, want the enqueuing span's %s", got.TraceID(), want.TraceID())
	}
	var processed, failed int
	for _, s := range exp.GetSpans() {
		if s.Name != "process "+topic {
			continue
		}
		processed++
		if s.Parent.SpanID() != want.SpanID() {
			t.Errorf("consumer span's parent %s, want the enqueuing span %s", s.Parent.SpanID(), want.SpanID())
		}
		if s.Status.Code == codes.Error {
			failed++
		}
	}
	if processed != 3 || failed != 2 {
		t.Errorf("%d consumer spans, %d failed; want ok, and poison twice, failing", processed, failed)
	}
	mu.Lock()
	defer mu.Unlock()
	count := map[observe.Kind]int{}
	for _, k := range kinds {
		count[k]++
	}
	if count[observe.SendDone] != 2 || count[observe.Handled] != 1 || count[observe.Retry] != 1 || count[observe.Parked] != 1 {
		t.Errorf("events %v", count)
	}
}
