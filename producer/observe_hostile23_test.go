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

// events records the events a producer reports.
type events struct {
	mu  sync.Mutex
	got []observe.Event
}

func (e *events) hooks() observe.Hooks {
	return observe.Hooks{Event: func(_ context.Context, ev observe.Event) {
		e.mu.Lock()
		e.got = append(e.got, ev)
		e.mu.Unlock()
	}}
}

func (e *events) kinds() []observe.Kind {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []observe.Kind
	for _, ev := range e.got {
		out = append(out, ev.Kind)
	}
	return out
}

func (e *events) take() []observe.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	got := e.got
	e.got = nil
	return got
}

// WithHooks reports "each retry of a transient failure (observe.SendRetry)"
// and is a SharedOption, so a Transactional producer takes it; its half
// message is retried on a transient failure as a send is. That retry must
// be reported too: an operator alerting on send_retry sees a broker
// refusing half messages only then.
func TestTransactionalHalfRetryIsReported(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t)
	b := env.RequireEmbedded(t)
	topic := testenv.Name(t, "T")
	env.CreateTopic(t, topic, 1)
	var ev events
	p := newTransactional(t, env.NameServers(), testenv.Name(t, "PG"), &checkFunc{answer: producer.TxCommit},
		producer.WithHooks(ev.hooks()))
	b.Inject(rmqtest.SendMessage, rmqtest.Fault{Times: 1, Code: rmqtest.CodeServiceNotAvailable, Remark: "busy"})
	var ids []string
	res, err := p.SendInTransaction(ctxT(t), producer.Message{Topic: topic, Keys: []string{"tx-1"}, Body: []byte("x")},
		answer(producer.TxCommit, &ids))
	if err != nil || res.Attempts != 2 {
		t.Fatalf("send: %+v, %v; want success on attempt 2", res, err)
	}
	got := ev.kinds()
	if len(got) != 2 || got[0] != observe.SendRetry || got[1] != observe.SendDone {
		t.Fatalf("events %v, want [send_retry send_done]", got)
	}
}

// A send the producer refuses before the broker (an invalid topic, a
// property the wire format cannot carry, an oversized batch, a delayed
// transactional message) ended: the caller gets a Permanent *SendError, as
// for a send the broker refused. WithHooks promises a SendDone for each
// send; without it a producer whose messages are all refused (a payload
// that grew past the limit) shows no failed send at all in its metrics.
func TestSendRefusedBeforeTheBrokerIsReported(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t)
	topic := testenv.Name(t, "T")
	env.CreateTopic(t, topic, 1)
	var ev events
	p := newProducer(t, env, producer.WithHooks(ev.hooks()))
	tx := newTransactional(t, env.NameServers(), testenv.Name(t, "PG"), &checkFunc{answer: producer.TxCommit},
		producer.WithHooks(ev.hooks()))
	ctx := ctxT(t)
	huge := strings.Repeat("x", 5<<20)
	never := func(context.Context, string) producer.TxState { return producer.TxCommit }
	tests := []struct {
		name string
		send func() error
	}{
		{"invalid topic", func() error {
			_, err := p.Send(ctx, producer.Message{Topic: "bad topic", Keys: []string{"k"}, Body: []byte("x")})
			return err
		}},
		{"property separator", func() error {
			_, err := p.Send(ctx, producer.Message{Topic: topic, Keys: []string{"k"}, Body: []byte("x"),
				Properties: map[string]string{"note": "a\x01b"}})
			return err
		}},
		{"oversized batch", func() error {
			_, err := p.SendBatch(ctx, []producer.Message{{Topic: topic, Body: []byte(huge)}})
			return err
		}},
		{"transactional, invalid topic", func() error {
			_, err := tx.SendInTransaction(ctx, producer.Message{Topic: "bad topic", Body: []byte("x")}, never)
			return err
		}},
	}
	for _, tt := range tests {
		err := tt.send()
		if !producer.IsPermanent(err) {
			t.Fatalf("%s: err = %v, want a permanent refusal", tt.name, err)
		}
		got := ev.take()
		if len(got) != 1 || got[0].Kind != observe.SendDone || got[0].Err == nil || got[0].Reason != "permanent" {
			t.Errorf("%s: events %+v, want one send_done with reason permanent and the error", tt.name, got)
		}
		var se *producer.SendError
		if len(got) == 1 && !errors.As(got[0].Err, &se) {
			t.Errorf("%s: event error %v is not the *SendError returned", tt.name, got[0].Err)
		}
	}
}

// The README passes one set of hooks to the producer, the outbox relay and
// the consumer. The relay sends through the producer on goroutines of its
// own, and a caller of Send gets nothing back if the SendDone report
// panics: the broker stored the message, yet the caller sees no result
// and no error (it retries: a duplicate under a new message id), and on
// the relay's goroutine the process dies. A report tells of what already
// happened; its panic must change nothing.
func TestEventHookPanicDoesNotHideTheSendResult(t *testing.T) {
	t.Parallel()
	b, topic, p := embeddedProducer(t, 1, producer.WithRetryBackoff(time.Millisecond), producer.WithHooks(observe.Hooks{
		Event: func(context.Context, observe.Event) { panic("metrics exporter bug") },
	}))
	for i, refusals := range []int{0, 1} { // the SendDone report, then the SendRetry one too
		if refusals > 0 {
			b.Inject(rmqtest.SendMessage, rmqtest.Fault{Times: refusals, Code: rmqtest.CodeServiceNotAvailable, Remark: "busy"})
		}
		var res producer.Result
		var err error
		panicked := func() (v any) {
			defer func() { v = recover() }()
			res, err = p.Send(ctxT(t), producer.Message{Topic: topic, Keys: []string{"k"}, Body: []byte("x")})
			return nil
		}()
		if panicked != nil {
			t.Fatalf("Send panicked (%v); the broker holds %d copies, %d of them unknown to the caller", panicked, len(b.Messages(topic)), len(b.Messages(topic))-i)
		}
		if err != nil || res.Attempts != refusals+1 || res.MsgID == "" {
			t.Fatalf("send: %+v, %v; want success on attempt %d", res, err, refusals+1)
		}
	}
}
