package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/deadletter"
	"github.com/seed157d4c4d/reliablemq/producer"
)

func sendSteps(f *fixture, orders, steps int) {
	f.t.Helper()
	for s := range steps {
		for o := range orders {
			key := fmt.Sprint("order-", o)
			f.send(producer.Message{Body: []byte(strconv.Itoa(s)), Keys: []string{key + "-" + strconv.Itoa(s)}, ShardingKey: key})
		}
	}
}

func checkInOrder(t *testing.T, eff *effects, orders, steps int, skip map[string]bool) {
	t.Helper()
	eff.mu.Lock()
	defer eff.mu.Unlock()
	for o := range orders {
		key := fmt.Sprint("order-", o)
		if skip[key] {
			continue
		}
		got := eff.order[key]
		if len(got) != steps {
			t.Errorf("%s: handled %v, want %d steps", key, got, steps)
			continue
		}
		for s := range steps {
			if got[s] != strconv.Itoa(s) {
				t.Errorf("%s: handled %v, want steps in order", key, got)
				break
			}
		}
	}
}

func TestOrderlyStepsStayInOrderWithRetries(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 8)
	eff := newEffects()
	var failed sync.Map // order-3 step 2 fails twice
	var lastFail atomic.Int64
	var retryGap atomic.Int64
	var running, maxRunningPerKey sync.Map
	h := func(ctx context.Context, m *consumer.Message) error {
		n, _ := running.LoadOrStore(m.ShardingKey, new(atomic.Int32))
		if c := n.(*atomic.Int32).Add(1); c > 1 {
			maxRunningPerKey.Store(m.ShardingKey, c)
		}
		defer n.(*atomic.Int32).Add(-1)
		if m.ShardingKey == "order-3" && string(m.Body) == "2" {
			v, _ := failed.LoadOrStore("n", new(atomic.Int32))
			if k := v.(*atomic.Int32).Add(1); k <= 2 {
				if prev := lastFail.Swap(time.Now().UnixNano()); prev != 0 {
					retryGap.Store(time.Now().UnixNano() - prev)
				}
				return errors.New("transient")
			}
			retryGap.Store(max(retryGap.Load(), time.Now().UnixNano()-lastFail.Load()))
		}
		eff.apply(m.ShardingKey, string(m.Body))
		return nil
	}
	c := f.start(consumer.NewOrderly(f.env.NameServers(), f.group, f.topic, h, consumer.ParkMessage,
		consumer.WithGuard(f.guard()), consumer.WithParker(f.dead), consumer.WithConcurrency(4),
		consumer.WithRetryDelay(200*time.Millisecond)))
	const orders, steps = 20, 5
	sendSteps(f, orders, steps)
	f.eventually("all steps handled", func() bool { return eff.total() == orders*steps })
	checkInOrder(t, eff, orders, steps, nil)
	maxRunningPerKey.Range(func(k, v any) bool {
		t.Errorf("key %v had %v handlers at once", k, v)
		return true
	})
	if gap := time.Duration(retryGap.Load()); gap < 200*time.Millisecond {
		t.Errorf("retries %v apart; want paced by the 200ms suspend", gap)
	}
	if st := c.Stats(); st.Retries != 2 || st.Parked != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestOrderlyPoisonParksTheKeyOthersFlow(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 4)
	eff := newEffects()
	var panics atomic.Int32
	var fixed atomic.Bool
	h := func(ctx context.Context, m *consumer.Message) error {
		if m.ShardingKey == "order-1" && string(m.Body) == "1" && !fixed.Load() {
			return errors.New("schema mismatch")
		}
		if m.ShardingKey == "order-2" && string(m.Body) == "0" && panics.Add(1) == 1 {
			panic("boom") // retried, not crashed
		}
		eff.apply(m.ShardingKey, string(m.Body))
		return nil
	}
	c := f.start(consumer.NewOrderly(f.env.NameServers(), f.group, f.topic, h, consumer.ParkKey,
		consumer.WithGuard(f.guard()), consumer.WithParker(f.dead), consumer.WithMaxAttempts(3),
		consumer.WithRetryDelay(50*time.Millisecond)))
	const orders, steps = 6, 4
	sendSteps(f, orders, steps)
	// A row is written before its park forgets the key and is counted:
	// wait for the count too.
	f.eventually("others handled, order-1 parked from step 1 on", func() bool {
		return eff.total() == (orders-1)*steps+1 && len(f.parked()) == steps-1 && c.Stats().Parked >= steps-1
	})
	checkInOrder(t, eff, orders, steps, map[string]bool{"order-1": true})
	if got := eff.order["order-1"]; len(got) != 1 || got[0] != "0" {
		t.Errorf("order-1 handled %v, want only step 0", got)
	}
	dls := f.parked()
	for i, d := range dls {
		want := consumer.CauseKeyParked
		if i == 0 {
			want = consumer.CauseRetries
		}
		if d.ShardingKey != "order-1" || string(d.Body) != strconv.Itoa(i+1) || d.Cause != want {
			t.Errorf("dead letter %d: key %s body %s cause %s; want order-1 step %d %s", i, d.ShardingKey, d.Body, d.Cause, i+1, want)
		}
	}
	if dls[0].Attempts != 3 {
		t.Errorf("parked after %d attempts, want 3", dls[0].Attempts)
	}
	if st := c.Stats(); st.Parked != 3 || panics.Load() != 2 {
		t.Errorf("stats %+v, panics %d", st, panics.Load())
	}

	// A replay while the handler is still broken: the first message fails
	// again and is parked again in its original place, so the key's later
	// messages are parked again behind it, never applied ahead of it.
	replayAll := func(dls []*deadletter.Entry) {
		t.Helper()
		for _, d := range dls {
			if err := f.dead.Replay(context.Background(), d.ID, f.prod, "replay"); err != nil {
				t.Fatal(err)
			}
		}
	}
	parkedNow := func() []*deadletter.Entry {
		var out []*deadletter.Entry
		for _, d := range f.parked() {
			if d.Status == deadletter.Parked {
				out = append(out, d)
			}
		}
		return out
	}
	replayAll(dls)
	f.eventually("the broken replay parked again", func() bool { return len(parkedNow()) == steps-1 })
	if n := eff.count("order-1"); n != 1 {
		t.Fatalf("order-1 handled %d steps after a replay of its still failing first message, want only step 0", n)
	}
	// The documented fix: repair the handler, replay the key's parked
	// messages oldest first. Each replay waits only for messages parked
	// before it, so the key drains in order instead of parking again.
	fixed.Store(true)
	replayAll(parkedNow())
	f.eventually("order-1 drained by its replay", func() bool { return eff.count("order-1") == steps })
	checkInOrder(t, eff, orders, steps, nil)
	for _, d := range f.parked() {
		if d.Status == deadletter.Parked {
			t.Errorf("dead letter %d parked again after its replay (%s)", d.ID, d.Cause)
		}
	}
}

func TestOrderlyAttemptCountSurvivesRestart(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	g := f.guard()
	var calls atomic.Int32
	var attempts []int
	var mu sync.Mutex
	h := func(ctx context.Context, m *consumer.Message) error {
		calls.Add(1)
		mu.Lock()
		attempts = append(attempts, m.Attempt)
		mu.Unlock()
		return errors.New("always")
	}
	opts := []consumer.OrderlyOption{consumer.WithGuard(g), consumer.WithParker(f.dead), consumer.WithMaxAttempts(4),
		consumer.WithRetryDelay(300 * time.Millisecond)}
	first, err := consumer.NewOrderly(f.env.NameServers(), f.group, f.topic, h, consumer.ParkMessage, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	f.send(producer.Message{Body: []byte("x"), Keys: []string{"k"}, ShardingKey: "k"})
	f.eventually("two attempts", func() bool { return calls.Load() >= 2 })
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	before := calls.Load()
	f.start(consumer.NewOrderly(f.env.NameServers(), f.group, f.topic, h, consumer.ParkMessage, opts...))
	f.eventually("parked", func() bool { return len(f.parked()) == 1 })
	mu.Lock()
	defer mu.Unlock()
	if calls.Load() != 4 || f.parked()[0].Attempts != 4 {
		t.Fatalf("attempts %v (%d before restart); want 4 in all across the restart", attempts, before)
	}
	for i, a := range attempts {
		if a != i+1 {
			t.Fatalf("attempts %v; want 1..4", attempts)
		}
	}
}
