package consumer_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/producer"
)

var hostile6Quiet = consumer.WithLogger(slog.New(slog.DiscardHandler))

// hostile6LongKey is a key function whose key, for a message tagged
// "long", is 70,000 bytes (the MySQL stores hold 65,535 and refuse more
// with idempotency.ErrKeyTooLong; Redis accepts it). Such a key cannot be
// claimed on MySQL on any delivery: retrying never helps.
func hostile6LongKey(m *consumer.Message) string {
	if m.Tag == "long" {
		return strings.Repeat("k", 70_000)
	}
	return consumer.Key(m)
}

// TestOrderlyParksAKeyTooLongAndMovesOn pins a fix found by hostile testing. What it guarded
// against: a key the MySQL
// guard refuses with ErrKeyTooLong is a permanent condition, like a
// message with no key (parked at once with CausePermanent). The consumer
// takes the claim error for a failing store instead: storeError, a Retry
// "store" and, on the orderly consumer, SuspendCurrentQueueAMoment. The
// claim fails the same way on every attempt and storeError never counts
// attempts, so the message is never parked and the queue behind it never
// moves: the next message of the queue is never handled.
func TestOrderlyParksAKeyTooLongAndMovesOn(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	eff := newEffects()
	h := func(ctx context.Context, m *consumer.Message) error {
		eff.apply(consumer.Key(m), string(m.Body))
		return nil
	}
	c := f.start(consumer.NewOrderly(f.env.NameServers(), f.group, f.topic, h, consumer.ParkMessage,
		consumer.WithGuard(f.guard()), consumer.WithParker(f.dead), consumer.WithMaxAttempts(3),
		consumer.WithKeyFunc(hostile6LongKey), consumer.WithRetryDelay(50*time.Millisecond), hostile6Quiet))
	f.send(producer.Message{Body: []byte("first"), Keys: []string{"k1"}, Tag: "long", ShardingKey: "s"})
	f.send(producer.Message{Body: []byte("second"), Keys: []string{"k2"}, ShardingKey: "s"})
	deadline := time.Now().Add(waitFor)
	for time.Now().Before(deadline) && (eff.count("k2") == 0 || len(f.parked()) == 0) {
		time.Sleep(100 * time.Millisecond)
	}
	st := c.Stats()
	if n := len(f.parked()); n != 1 || eff.count("k2") != 1 {
		t.Fatalf("after %v: %d message(s) parked, the next message of the queue handled %d time(s); want the long-key "+
			"message parked (permanent) and the queue moving on (stats %+v: the claim was retried as a store error)",
			waitFor, n, eff.count("k2"), st)
	}
	if d := f.parked()[0]; d.Cause != consumer.CausePermanent {
		t.Errorf("parked with cause %s, want permanent", d.Cause)
	}
}

// TestKeyTooLongIsParkedNotRetried pins a fix found by hostile testing. What it guarded
// against: on the concurrent
// consumer the same message goes round the broker's retry topic as a store
// failure on every delivery (up to the broker's 16, then %DLQ%), never
// reaching the dead-letter table, and counted as store errors.
func TestKeyTooLongIsParkedNotRetried(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	var calls atomic.Int32
	h := func(ctx context.Context, m *consumer.Message) error {
		calls.Add(1)
		return nil
	}
	c := f.start(consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithGuard(f.guard()),
		consumer.WithParker(f.dead), consumer.WithKeyFunc(hostile6LongKey), consumer.WithRetryDelay(time.Second), hostile6Quiet))
	f.send(producer.Message{Body: []byte("long"), Keys: []string{"k1"}, Tag: "long"})
	deadline := time.Now().Add(waitFor)
	for time.Now().Before(deadline) && len(f.parked()) == 0 {
		if b := f.env.Embedded; b != nil {
			b.Advance(5 * time.Second)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := len(f.parked()); n != 1 {
		st := c.Stats()
		t.Fatalf("the long-key message was not parked after %v (stats %+v, handler calls %d): retried as a failing store",
			waitFor, st, calls.Load())
	}
}

// TestAnyErrorTextIsParkedAndTheQueueMovesOn pins a fix found by hostile testing. What it guarded
// against: a handler that
// refuses a poison message with a Permanent error naming its payload
// (here bytes that are not UTF-8) must see it parked once. The dead-letter
// table writes the error text verbatim into last_error, a TEXT (utf8mb4 here):
// a strict session refuses it (1366 Incorrect string value), as it
// refuses a text over 65,535 bytes (1406) and a tag over 255 bytes.
// Park fails, so the consumer retries: the orderly queue runs the handler
// again every retry delay, forever, and the message behind it never runs.
func TestAnyErrorTextIsParkedAndTheQueueMovesOn(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		err  func(m *consumer.Message) error
		tag  string
	}{
		{"invalid UTF-8 in the error", func(m *consumer.Message) error {
			return consumer.Permanent(fmt.Errorf("cannot decode payload %s", m.Body))
		}, ""},
		{"error text over 64 KiB", func(m *consumer.Message) error {
			return consumer.Permanent(fmt.Errorf("upstream refused: %s", strings.Repeat("x", 70_000)))
		}, ""},
		{"tag over 255 bytes", func(m *consumer.Message) error {
			return consumer.Permanent(fmt.Errorf("cannot decode payload"))
		}, strings.Repeat("t", 300)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, 1)
			eff := newEffects()
			var poisonCalls atomic.Int32
			h := func(ctx context.Context, m *consumer.Message) error {
				if consumer.Key(m) == "poison" {
					poisonCalls.Add(1)
					return tc.err(m)
				}
				eff.apply(consumer.Key(m), string(m.Body))
				return nil
			}
			c := f.start(consumer.NewOrderly(f.env.NameServers(), f.group, f.topic, h, consumer.ParkMessage,
				consumer.WithGuard(f.guard()), consumer.WithParker(f.dead), consumer.WithRetryDelay(50*time.Millisecond), hostile6Quiet))
			f.send(producer.Message{Body: []byte("\xff\xfe\x00bin"), Keys: []string{"poison"}, Tag: tc.tag, ShardingKey: "s"})
			f.send(producer.Message{Body: []byte("next"), Keys: []string{"next"}, ShardingKey: "s"})
			deadline := time.Now().Add(waitFor)
			for time.Now().Before(deadline) && (eff.count("next") == 0 || len(f.parked()) == 0) {
				time.Sleep(100 * time.Millisecond)
			}
			if n := len(f.parked()); n != 1 || eff.count("next") != 1 || poisonCalls.Load() != 1 {
				t.Fatalf("after %v: %d parked, next message handled %d time(s), the Permanent handler ran %d times "+
					"(stats %+v); want it parked once and the queue moving on", waitFor, n, eff.count("next"), poisonCalls.Load(), c.Stats())
			}
		})
	}
}
