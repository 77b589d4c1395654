package consumer_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	rmqproducer "github.com/apache/rocketmq-client-go/v2/producer"
	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// TestACompressedMessageIsRetriedNotRefused: another client sends a body
// larger than the broker's maxMessageSize (4 MiB) that compresses well;
// the client compresses it and the broker stores it. The consumer gets it
// inflated, and its handler fails once: the retry copy must be stored as
// the original was, compressed, and the message handled on its second
// attempt. Sent inflated, the copy was over the limit, refused with
// MESSAGE_ILLEGAL and the message parked as retry-refused: a message
// that could be retried dropped from the normal flow.
func TestACompressedMessageIsRetriedNotRefused(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	raw := rawProducer(t, f)
	body := strings.Repeat("compressible ", (5<<20)/13)
	m := primitive.NewMessage(f.topic, []byte(body))
	m.WithKeys([]string{"big"})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	r, err := raw.SendSync(ctx, m)
	cancel()
	if err != nil || r.Status != primitive.SendOK {
		t.Fatalf("send of a compressible %d-byte body: %v %v", len(body), r, err)
	}
	var attempts, handled atomic.Int32
	h := func(_ context.Context, m *consumer.Message) error {
		attempts.Add(1)
		if string(m.Body) != body {
			return consumer.Permanent(errors.New("body changed"))
		}
		if m.Attempt == 1 {
			return errors.New("fails once")
		}
		handled.Add(1)
		return nil
	}
	f.start(consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithParker(f.dead)))
	f.eventually("the message handled on its retry, or parked", func() bool { return handled.Load() == 1 || len(f.parked()) > 0 })
	if dls := f.parked(); len(dls) > 0 {
		t.Fatalf("parked as %q after %d attempts (%s), want retried and handled", dls[0].Cause, attempts.Load(), dls[0].LastError)
	}
}

// rawProducer starts the official client's producer on f's broker, with
// no retries of its own; it shuts down with the test.
func rawProducer(t *testing.T, f *fixture) rocketmq.Producer {
	t.Helper()
	raw, err := rocketmq.NewProducer(rmqproducer.WithNameServer(f.env.NameServers()),
		rmqproducer.WithGroupName(testenv.Name(t, "RP")), rmqproducer.WithInstanceName(testenv.Name(t, "rawp")),
		rmqproducer.WithRetry(0))
	if err != nil {
		t.Fatal(err)
	}
	if err := raw.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Shutdown() })
	return raw
}

// sendNearLimit sends, with another client, a message of key whose
// properties are within 8 bytes of the broker's limit (tried from over it
// down, 8 bytes at a time): its retry copy, with a retry topic, a delay
// and the real topic and queue the broker adds, is refused
// (MESSAGE_ILLEGAL).
func sendNearLimit(t *testing.T, f *fixture, key string) {
	t.Helper()
	raw := rawProducer(t, f)
	for size := 32767; size > 32767-600; size -= 8 {
		m := primitive.NewMessage(f.topic, []byte("big"))
		m.WithKeys([]string{key})
		m.WithProperty("pad", strings.Repeat("p", size))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		r, err := raw.SendSync(ctx, m)
		cancel()
		if err == nil && r.Status == primitive.SendOK {
			return
		}
	}
	t.Fatal("the broker took no message with properties near its limit")
}

// TestABusyMessageWhoseRetryIsRefusedRunsOnceTheKeyIsFree: a message
// whose retry copy the broker refuses comes while another consumer holds
// its key (one that crashed, say). It has not failed: it must run once
// the key is free, as a busy message whose copy is stored does. It was
// parked as retry-refused at once, never run, its key's effect never
// applied: a message that could still be handled dropped from the flow.
func TestABusyMessageWhoseRetryIsRefusedRunsOnceTheKeyIsFree(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	g := f.guard(idempotency.WithLease(3 * time.Second))
	crashed, err := g.Claim(context.Background(), "big")
	if err != nil || crashed.Outcome != idempotency.Acquired {
		t.Fatalf("claim: %v %v", crashed, err)
	}
	sendNearLimit(t, f, "big")
	var handled atomic.Int32
	h := func(_ context.Context, m *consumer.Message) error {
		handled.Add(1)
		return nil
	}
	c := f.start(consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithGuard(g), consumer.WithParker(f.dead)))
	f.eventually("the big message handled once its key is free, or parked", func() bool {
		return handled.Load() == 1 || len(f.parked()) > 0
	})
	if dls := f.parked(); len(dls) > 0 {
		t.Fatalf("parked as %q (%s), handled %d times; want handled once the key is free", dls[0].Cause, dls[0].LastError, handled.Load())
	}
	f.settle()
	if n, st := handled.Load(), c.Stats(); n != 1 || st.Busy == 0 || st.Parked != 0 {
		t.Fatalf("handled %d times, stats %+v; want once, after busy deliveries, none parked", n, st)
	}
}

// TestABatchWithARefusedRetryParksOnlyThatMessage: in a batch of four with
// a guard, one message whose retry copy the broker refuses fails, one
// fails once and two succeed: the refused one is parked (cause
// retry-refused, its key forgotten or free so a replay could run), the
// failing one is retried and handled, the others handled once.
func TestABatchWithARefusedRetryParksOnlyThatMessage(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	g := f.guard()
	sendNearLimit(t, f, "big")
	for _, k := range []string{"flaky", "ok1", "ok2"} {
		f.send(producer.Message{Keys: []string{k}, Body: []byte(k)})
	}
	eff := newEffects()
	var bigRuns atomic.Int32
	h := func(_ context.Context, m *consumer.Message) error {
		switch k := consumer.Key(m); {
		case k == "big":
			bigRuns.Add(1)
			return errors.New("fails")
		case k == "flaky" && m.Attempt == 1:
			return errors.New("fails once")
		default:
			eff.apply(k, string(m.Body))
			return nil
		}
	}
	f.start(consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithGuard(g), consumer.WithParker(f.dead),
		consumer.WithBatchSize(4)))
	f.eventually("all handled, the big one parked", func() bool { return eff.total() == 3 && len(f.parked()) == 1 })
	f.settle()
	if dls := f.parked(); len(dls) != 1 || dls[0].Cause != consumer.CauseRetryRefused {
		t.Fatalf("dead letters %+v, want the big one, retry-refused", dls)
	}
	for _, k := range []string{"flaky", "ok1", "ok2"} {
		if n := eff.count(k); n != 1 {
			t.Errorf("%s applied %d times, want once", k, n)
		}
	}
	if n := bigRuns.Load(); n != 1 {
		t.Errorf("the big message ran %d times, want once", n)
	}
	// Its key is not done: a replay (or a redelivery) of it would run.
	c, err := g.Claim(context.Background(), "big")
	if err != nil || c.Outcome != idempotency.Acquired {
		t.Fatalf("claim of the parked key: %+v %v, want acquired", c, err)
	}
}

// TestAStoreFailureNeverParksAMessageWhoseRetryIsRefused: the guard's
// store is down for the first claim of a message whose retry copy the
// broker refuses. The message never ran: store failures never park, it
// must run once the store is back. It was parked as retry-refused, as if
// its handler had failed, and never ran.
func TestAStoreFailureNeverParksAMessageWhoseRetryIsRefused(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	ms, err := idempotency.NewMySQLStore(f.db)
	if err != nil {
		t.Fatal(err)
	}
	s := &flakyStore{Store: ms}
	s.fail.Store(2)
	g, err := idempotency.NewGuard(f.group, s)
	if err != nil {
		t.Fatal(err)
	}
	sendNearLimit(t, f, "big")
	var handled atomic.Int32
	h := func(_ context.Context, m *consumer.Message) error {
		handled.Add(1)
		return nil
	}
	c := f.start(consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithGuard(g), consumer.WithParker(f.dead)))
	f.eventually("the big message handled once the store is back, or parked", func() bool {
		return handled.Load() == 1 || len(f.parked()) > 0
	})
	if dls := f.parked(); len(dls) > 0 {
		t.Fatalf("parked as %q (%s), handled %d times; want handled once the store is back", dls[0].Cause, dls[0].LastError, handled.Load())
	}
	f.settle()
	if n, st := handled.Load(), c.Stats(); n != 1 || st.StoreErrors < 2 || st.Parked != 0 {
		t.Fatalf("handled %d times, stats %+v; want once, after the store errors, none parked", n, st)
	}
}
