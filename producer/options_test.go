package producer_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/observe"
	"github.com/seed157d4c4d/reliablemq/producer"
	"github.com/seed157d4c4d/reliablemq/rmqtest"
)

// TestOptionsReachTheBrokerAndTheLog: the producer registers under its
// group, WithoutRetry makes one attempt, and retries are logged to the
// configured logger.
func TestOptionsReachTheBrokerAndTheLog(t *testing.T) {
	t.Parallel()
	group := testenv.Name(t, "PG")
	var logs testenv.Logs
	b, topic, p := embeddedProducer(t, 1, producer.WithGroup(group), producer.WithRetryBackoff(time.Millisecond),
		producer.WithLogger(logs.Logger()))
	if _, err := p.Send(ctxT(t), producer.Message{Topic: topic, Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for b.Producers(group) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no producer registered under group %s", group)
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.Inject(rmqtest.SendMessage, rmqtest.Fault{Times: 1, Code: rmqtest.CodeServiceNotAvailable, Remark: "busy"})
	if res, err := p.Send(ctxT(t), producer.Message{Topic: topic, Body: []byte("y")}); err != nil || res.Attempts != 2 {
		t.Fatalf("send after one refusal: %+v, %v; want success on attempt 2", res, err)
	}
	if out := logs.String(); !strings.Contains(out, "send failed, retrying") {
		t.Errorf("the retry was not logged to the configured logger:\n%s", out)
	}

	single, err := producer.New([]string{b.NamesrvAddr()}, producer.WithoutRetry())
	if err != nil {
		t.Fatal(err)
	}
	defer single.Close()
	b.Inject(rmqtest.SendMessage, rmqtest.Fault{Times: 1, Code: rmqtest.CodeServiceNotAvailable})
	_, err = single.Send(ctxT(t), producer.Message{Topic: topic, Body: []byte("z")})
	var se *producer.SendError
	if !errors.As(err, &se) || se.Attempts != 1 || se.Outcome != producer.Transient {
		t.Fatalf("WithoutRetry: %v, want one transient attempt", err)
	}
}

func TestCustomDelayLevels(t *testing.T) {
	t.Parallel()
	p := newProducer(t, testenv.NewRocketMQ(t), producer.WithDelayLevels([]time.Duration{time.Second, 3 * time.Second}))
	if l, err := p.DelayLevel(2 * time.Second); err != nil || l != 2 {
		t.Errorf("DelayLevel(2s) = %d, %v; want 2 on a two-level table", l, err)
	}
	if _, err := p.DelayLevel(4 * time.Second); !errors.Is(err, producer.ErrDelayTooLong) {
		t.Errorf("DelayLevel(4s) err = %v, want ErrDelayTooLong", err)
	}
	if _, err := producer.New([]string{"127.0.0.1:9876"}, producer.WithDelayLevels([]time.Duration{2 * time.Second, time.Second})); err == nil {
		t.Error("a descending delay table was accepted")
	}
	if _, err := producer.New([]string{"127.0.0.1:9876"}, producer.WithQueueLossGrace(-time.Second)); err == nil {
		t.Error("a negative queue loss grace was accepted")
	}
}

// eventLog records hook events.
type eventLog struct {
	mu     sync.Mutex
	events []observe.Event
}

func (l *eventLog) hooks() observe.Hooks {
	return observe.Hooks{
		Event: func(_ context.Context, e observe.Event) {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.events = append(l.events, e)
		},
		Inject: func(ctx context.Context, props map[string]string) {
			if _, ok := props["traceparent"]; !ok {
				props["traceparent"] = ctx.Value(traceKey{}).(string)
			}
		},
	}
}

func (l *eventLog) kinds() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, e := range l.events {
		out = append(out, string(e.Kind)+":"+e.Reason)
	}
	return out
}

type traceKey struct{}

func TestHooksSeeEverySendAndCarryTheTrace(t *testing.T) {
	t.Parallel()
	var log eventLog
	b, topic, p := embeddedProducer(t, 1, producer.WithHooks(log.hooks()), producer.WithRetryBackoff(time.Millisecond),
		producer.WithRetry(2))
	ctx := context.WithValue(ctxT(t), traceKey{}, "00-trace-a")
	caller := map[string]string{"k": "v"}
	if _, err := p.Send(ctx, producer.Message{Topic: topic, Body: []byte("x"), Properties: caller}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Send(ctx, producer.Message{Topic: topic, Body: []byte("y"),
		Properties: map[string]string{"traceparent": "00-trace-kept"}}); err != nil {
		t.Fatal(err)
	}
	b.Inject(rmqtest.SendMessage, rmqtest.Fault{Times: 2, Code: rmqtest.CodeServiceNotAvailable})
	if _, err := p.Send(ctx, producer.Message{Topic: topic, Body: []byte("z")}); !producer.IsRetryable(err) {
		t.Fatalf("send under faults: %v", err)
	}
	got := b.Messages(topic)
	if len(got) != 2 || got[0].Properties["traceparent"] != "00-trace-a" || got[1].Properties["traceparent"] != "00-trace-kept" {
		t.Fatalf("stored %+v; want the ctx's trace, and a trace already present kept", got)
	}
	if _, touched := caller["traceparent"]; touched {
		t.Error("the caller's properties map was modified")
	}
	want := "send_done: send_done: send_retry:transient send_done:transient"
	if k := strings.Join(log.kinds(), " "); k != want {
		t.Errorf("events %q, want %q", k, want)
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	if e := log.events[0]; e.Topic != topic || e.MsgID == "" || e.Duration <= 0 || e.Err != nil || e.Attempt != 1 {
		t.Errorf("first event %+v", e)
	}
}

func TestAnUnreachableNameServerIsNamedAsSuch(t *testing.T) {
	t.Parallel()
	// Port 1: a port just closed may be given to another test's listener
	// meanwhile; port 1 is never handed to one asking for a free port.
	closed := "127.0.0.1:1"
	p, err := producer.New([]string{closed}, producer.WithoutRetry())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	_, err = p.Send(ctxT(t), producer.Message{Topic: "orders", Body: []byte("x")})
	if !errors.Is(err, producer.ErrNameServerUnreachable) || !producer.IsRetryable(err) {
		t.Fatalf("send with the name server down: %v; want a transient ErrNameServerUnreachable", err)
	}

	env := testenv.NewRocketMQ(t, rmqtest.WithoutAutoCreateTopics())
	env.RequireEmbedded(t)
	q := newProducer(t, env, producer.WithoutRetry())
	_, err = q.Send(ctxT(t), producer.Message{Topic: testenv.Name(t, "Missing"), Body: []byte("x")})
	if err == nil || errors.Is(err, producer.ErrNameServerUnreachable) {
		t.Fatalf("send to a missing topic with the name server up: %v; want an error not blaming the name server", err)
	}
}
