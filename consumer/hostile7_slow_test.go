package consumer_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// hostile7Slow is longer than the consumer's 10 s bound on the store calls
// made after a handler (its bookkeeping), and well within the guard's
// default 1 min lease: a handler may legitimately run this long.
const hostile7Slow = 12 * time.Second

// TestSlowHandlerIsStillCompletedParkedAndDeduplicated pins a fix found by
// hostile testing. What it guarded against: the guarded batch made its
// bookkeeping ctx (10 s) once, before claiming, and used it for the store
// calls after each handler too. A handler running longer than 10 s, well
// inside its lease, found that ctx expired: its success was not recorded
// (a store error, "handled but not recorded as done": a duplicate sent
// after the lease applies again), a permanent failure could not be parked
// (a store error and a retry: the handler ran again and again, never
// parked), and a second message of the same key in the batch, claimed in
// the next wave after the slow one, failed its claim as a store error.
func TestSlowHandlerIsStillCompletedParkedAndDeduplicated(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	ms, err := idempotency.NewMySQLStore(f.db)
	if err != nil {
		t.Fatal(err)
	}
	// Without batch methods the store calls take the consumer's ctx as is.
	g, err := idempotency.NewGuard(f.group, &singleStore{inner: ms})
	if err != nil {
		t.Fatal(err)
	}
	eff := newEffects()
	var mu sync.Mutex
	runs := map[string]int{}
	h := func(ctx context.Context, m *consumer.Message) error {
		key := consumer.Key(m)
		mu.Lock()
		runs[key]++
		first := runs[key] == 1
		mu.Unlock()
		if first {
			time.Sleep(hostile7Slow) // ignores ctx: the lease is far off
		}
		if key == "bad" {
			return consumer.Permanent(errors.New("cannot apply"))
		}
		eff.apply(key, string(m.Body))
		return nil
	}
	for _, k := range []string{"ok", "bad", "ok"} {
		f.send(producer.Message{Body: []byte(k), Keys: []string{k}})
	}
	c := f.start(consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithGuard(g), consumer.WithParker(f.dead),
		consumer.WithBatchSize(3), hostile6Quiet))
	f.eventually("the slow messages settled, or a store error", func() bool {
		s := c.Stats()
		return s.StoreErrors > 0 || (s.Handled == 1 && s.Parked == 1 && s.Duplicates == 1)
	})
	if s := c.Stats(); s.StoreErrors > 0 {
		t.Fatalf("%d store errors with a working store (stats %+v): the calls after a slow handler ran on an expired ctx", s.StoreErrors, s)
	}
	f.settle()
	if got := eff.count("ok"); got != 1 {
		t.Errorf("key ok applied %d times", got)
	}
	if got := len(f.parked()); got != 1 {
		t.Errorf("%d messages parked, want 1", got)
	}
	if s := c.Stats(); s.StoreErrors > 0 {
		t.Errorf("%d store errors with a working store (stats %+v)", s.StoreErrors, s)
	}
}
