package consumer_test

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/deadletter"
	"github.com/seed157d4c4d/reliablemq/internal/remoting"
	"github.com/seed157d4c4d/reliablemq/observe"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// hostile19 starts the names of this file's topics and groups.
const hostile19 = "H19_"

// h19Step is step s of sharding key key, its business key key-s.
func h19Step(key string, s int) producer.Message {
	return producer.Message{Body: []byte(strconv.Itoa(s)), Keys: []string{key + "-" + strconv.Itoa(s)}, ShardingKey: key}
}

// h19Alerts records the alerts per message id.
type h19Alerts struct {
	mu sync.Mutex
	n  map[string]int
}

func (a *h19Alerts) alert(_ context.Context, d *consumer.DeadLetter) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.n == nil {
		a.n = map[string]int{}
	}
	a.n[d.MsgID]++
}

func (a *h19Alerts) of(msgID string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n[msgID]
}

// h19Order is the bodies eff applied for key, in order.
func h19Order(eff *effects, key string) []string {
	eff.mu.Lock()
	defer eff.mu.Unlock()
	return slices.Clone(eff.order[key])
}

// lostParkReply is the dead-letter table whose first Park records the
// message and then fails, as a MySQL connection lost after the INSERT
// committed (or a ctx that ends right after it) reports it.
type lostParkReply struct {
	*deadletter.Table
	lost atomic.Int32
}

func (p *lostParkReply) Park(ctx context.Context, d *consumer.DeadLetter) (bool, error) {
	inserted, err := p.Table.Park(ctx, d)
	if err == nil && p.lost.Add(-1) >= 0 {
		return false, errors.New("invalid connection")
	}
	return inserted, err
}

// TestOrderlyParkWhoseReplyIsLostStillAlertsAndReplays: the parking store
// records the message at the cap, but its reply is lost. The consumer
// retries, finds the key parked (its own row) and acknowledges the message
// as a duplicate park. The promise is "parked: a dead-letter row and an
// alert": the alert must still fire once, and the replay of the dead
// letter must get the attempts a replay gets (the guard forgets a parked
// message's key).
func TestOrderlyParkWhoseReplyIsLostStillAlertsAndReplays(t *testing.T) {
	f := newFixtureNamed(t, 1, hostile19)
	parker := &lostParkReply{Table: f.dead}
	parker.lost.Store(1)
	alerts := &h19Alerts{}
	eff := newEffects()
	var fixed atomic.Bool
	var replayFailures atomic.Int32
	h := func(ctx context.Context, m *consumer.Message) error {
		if string(m.Body) == "1" {
			if !fixed.Load() {
				return errors.New("cannot apply step 1 yet")
			}
			if m.ReplayOf != 0 && replayFailures.Add(1) == 1 {
				return errors.New("transient: the replay's first attempt fails")
			}
		}
		eff.apply(m.ShardingKey, string(m.Body))
		return nil
	}
	f.start(consumer.NewOrderly(f.env.NameServers(), f.group, f.topic, h, consumer.ParkKey,
		consumer.WithGuard(f.guard()), consumer.WithParker(parker), consumer.WithAlert(alerts.alert),
		consumer.WithMaxAttempts(3), consumer.WithRetryDelay(50*time.Millisecond), hostile6Quiet))
	f.send(h19Step("order", 0))
	r1 := f.send(h19Step("order", 1))
	f.eventually("step 0 handled, step 1 parked", func() bool {
		return len(h19Order(eff, "order")) == 1 && len(f.parked()) == 1
	})
	// The row is written by the park whose reply is lost; the alert comes
	// from the retry's park, after it.
	f.eventually("step 1 alerted (its park's reply lost, the retry finding it parked)", func() bool {
		return alerts.of(r1.MsgID) >= 1
	})
	f.settle()
	if n := alerts.of(r1.MsgID); n != 1 {
		t.Errorf("step 1 is parked (its park's reply was lost, the retry found it parked) with %d alerts, want 1", n)
	}
	fixed.Store(true)
	if err := f.dead.Replay(context.Background(), f.parked()[0].ID, f.prod, "fixed"); err != nil {
		t.Fatal(err)
	}
	f.eventually("the replay settled", func() bool {
		return len(h19Order(eff, "order")) == 2 || len(f.parked()) == 2
	})
	if dls := f.parked(); len(dls) == 2 {
		t.Errorf("the replay was parked again at its first failure (attempt %d, %q): the guard kept the parked key's attempts",
			dls[1].Attempts, dls[1].LastError)
	}
}

// resetOffset commits offset off for group on topic's queue over the wire,
// as a consumer that crashed before committing later offsets left it.
func (f *fixture) resetOffset(group string, queue int, off int64) {
	f.t.Helper()
	f.commitOffset(group, queue, off)
	if got := f.env.ConsumerOffset(f.t, group, f.topic, queue); got != off {
		f.t.Fatalf("offset is %d after committing %d", got, off)
	}
}

// commitOffset commits offset off for group on topic's queue over the wire.
func (f *fixture) commitOffset(group string, queue int, off int64) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := remoting.Dial(ctx, f.env.Broker)
	if err != nil {
		f.t.Fatal(err)
	}
	defer c.Close()
	resp, err := c.Invoke(ctx, &remoting.Command{Code: remoting.ReqUpdateConsumerOffset, ExtFields: map[string]string{
		"consumerGroup": group, "topic": f.topic, "queueId": strconv.Itoa(queue), "commitOffset": strconv.FormatInt(off, 10)}})
	if err != nil || resp.Code != remoting.CodeSuccess {
		f.t.Fatalf("commit offset %d: %v %+v", off, err, resp)
	}
}

// TestOrderlyDuplicateOfAHandledStepIsNotParkedBehindItsKey: step 0 of a
// key is handled, step 1 parked at the cap (ParkKey). The consumer
// crashes before its offsets are committed, so after the restart step 0
// comes again. The guard knows it done: it is a duplicate, acknowledged
// without running. It must not become a dead letter (with an alert) that
// holds the key after its real parked steps are replayed.
func TestOrderlyDuplicateOfAHandledStepIsNotParkedBehindItsKey(t *testing.T) {
	f := newFixtureNamed(t, 1, hostile19)
	alerts := &h19Alerts{}
	eff := newEffects()
	var fixed atomic.Bool
	h := func(ctx context.Context, m *consumer.Message) error {
		if string(m.Body) == "1" && !fixed.Load() {
			return errors.New("cannot apply step 1 yet")
		}
		eff.apply(m.ShardingKey, string(m.Body))
		return nil
	}
	opts := []consumer.OrderlyOption{consumer.WithGuard(f.guard()), consumer.WithParker(f.dead), consumer.WithAlert(alerts.alert),
		consumer.WithMaxAttempts(2), consumer.WithRetryDelay(50 * time.Millisecond), hostile6Quiet}
	first, err := consumer.NewOrderly(f.env.NameServers(), f.group, f.topic, h, consumer.ParkKey, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	r0 := f.send(h19Step("order", 0))
	f.send(h19Step("order", 1))
	f.eventually("step 0 handled, step 1 parked", func() bool {
		return len(h19Order(eff, "order")) == 1 && len(f.parked()) == 1
	})
	// The client advances the offset after the listener returns, but not
	// for a queue that Close's shutdown dropped meanwhile: wait until the
	// broker holds it (a pull or the 5 s persist commits it), then move it
	// back, so that the wait below sees the shutdown's commit (or a pull's
	// or persist's before it: the running client may commit 2 again).
	f.eventually("the offset past both steps committed", func() bool { return f.env.ConsumerOffset(t, f.group, f.topic, 0) == 2 })
	f.commitOffset(f.group, 0, 1)
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	// The client commits its offsets one way on shutdown: the commit may
	// land after Close returned. Then the crash is played: none committed.
	f.eventually("the shutdown's offset commit landed", func() bool { return f.env.ConsumerOffset(t, f.group, f.topic, 0) == 2 })
	f.resetOffset(f.group, 0, 0)
	// A commit of the closed client's still on its way (a pull's, before
	// the shutdown's was seen) would undo the reset: it must hold.
	for held := 0; held < 5; {
		time.Sleep(200 * time.Millisecond)
		if f.env.ConsumerOffset(t, f.group, f.topic, 0) == 0 {
			held++
		} else {
			f.resetOffset(f.group, 0, 0)
			held = 0
		}
	}
	var duplicate atomic.Bool
	seen := consumer.WithHooks(observe.Hooks{Event: func(_ context.Context, e observe.Event) {
		if e.Kind == observe.Duplicate && e.MsgID == r0.MsgID {
			duplicate.Store(true)
		}
	}})
	f.start(consumer.NewOrderly(f.env.NameServers(), f.group, f.topic, h, consumer.ParkKey, append(opts, seen)...))
	f.eventually("step 0 redelivered, a duplicate", duplicate.Load)
	f.eventually("the offset is past both steps again", func() bool { return f.env.ConsumerOffset(t, f.group, f.topic, 0) >= 2 })
	f.settle()
	if got := h19Order(eff, "order"); !slices.Equal(got, []string{"0"}) {
		t.Fatalf("applied %v after the restart, want [0]", got)
	}
	for _, d := range f.parked() {
		if d.MsgID == r0.MsgID {
			t.Errorf("the duplicate of handled step 0 was parked (cause %s, %d alerts): it holds the key's order behind it",
				d.Cause, alerts.of(r0.MsgID))
		}
	}
	// The operator replays the real parked step: the key flows again.
	fixed.Store(true)
	if err := f.dead.Replay(context.Background(), f.parked()[0].ID, f.prod, "fixed"); err != nil {
		t.Fatal(err)
	}
	f.eventually("the replay handled", func() bool { return len(h19Order(eff, "order")) == 2 })
	f.send(h19Step("order", 2))
	f.eventually("step 2 settled", func() bool {
		return len(h19Order(eff, "order")) == 3 || len(f.parkedOf(f.group)) > 2
	})
	if got := h19Order(eff, "order"); !slices.Equal(got, []string{"0", "1", "2"}) {
		t.Errorf("applied %v once step 1 was replayed, want [0 1 2] (step 2 parked behind the duplicate)", got)
	}
}

// TestOrderlyPanicAtTheCapAndKeysApartByTabsAndCase: under ParkKey a step
// that panics on every attempt is parked at the cap with its panic and
// its key's later steps parked behind it; a message without a business
// key is parked (it cannot be guarded) and holds its sharding key too.
// Sharding keys that differ from the panicking one only by case, a tab
// for a space, or a space inside are other keys: they flow, in order.
func TestOrderlyPanicAtTheCapAndKeysApartByTabsAndCase(t *testing.T) {
	f := newFixtureNamed(t, 2, hostile19)
	eff := newEffects()
	const bad, nokey = "order\t1", "order\t2"
	keys := []string{bad, "Order\t1", "order 1", "order\t\t1", "order\t1\t", nokey}
	h := func(ctx context.Context, m *consumer.Message) error {
		if m.ShardingKey == bad && string(m.Body) == "1" {
			panic("step 1 cannot be applied")
		}
		eff.apply(m.ShardingKey, string(m.Body))
		return nil
	}
	f.start(consumer.NewOrderly(f.env.NameServers(), f.group, f.topic, h, consumer.ParkKey,
		consumer.WithGuard(f.guard()), consumer.WithParker(f.dead), consumer.WithMaxAttempts(2),
		consumer.WithRetryDelay(50*time.Millisecond), hostile6Quiet))
	const steps = 3
	for s := range steps {
		for _, k := range keys {
			m := h19Step(k, s)
			m.Keys = []string{"k\t" + strings.ReplaceAll(k, " ", "_") + "\t" + strconv.Itoa(s)} // a tab inside a business key is no separator
			if k == nokey && s == 1 {
				m.Keys = nil
			}
			f.send(m)
		}
	}
	f.eventually("every other key handled, two keys parked from step 1", func() bool {
		return eff.total() == (len(keys)-2)*steps+2 && len(f.parked()) == 2*(steps-1)
	})
	f.settle()
	for _, k := range keys {
		want := []string{"0", "1", "2"}
		if k == bad || k == nokey {
			want = want[:1]
		}
		if got := h19Order(eff, k); !slices.Equal(got, want) {
			t.Errorf("key %q applied %v, want %v", k, got, want)
		}
	}
	causes := map[string]consumer.Cause{}
	for _, d := range f.parked() {
		causes[d.ShardingKey+"/"+string(d.Body)] = d.Cause
		if d.ShardingKey == bad && string(d.Body) == "1" && (d.Attempts != 2 || !strings.Contains(d.LastError, "step 1 cannot be applied")) {
			t.Errorf("the panicking step parked after %d attempts with %q", d.Attempts, d.LastError)
		}
	}
	want := map[string]consumer.Cause{bad + "/1": consumer.CauseRetries, bad + "/2": consumer.CauseKeyParked,
		nokey + "/1": consumer.CausePermanent, nokey + "/2": consumer.CauseKeyParked}
	if !maps.Equal(causes, want) {
		t.Errorf("parked %v, want %v", causes, want)
	}
}

// slowPark is the dead-letter table whose first Park waits for release.
type slowPark struct {
	*deadletter.Table
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (p *slowPark) Park(ctx context.Context, d *consumer.DeadLetter) (bool, error) {
	first := false
	p.once.Do(func() { first = true })
	if first {
		close(p.entered)
		<-p.release
	}
	return p.Table.Park(ctx, d)
}

// TestOrderlyCloseWhileParkingSlowly: Close begins while the parking store
// is slow to record a step at its cap, and gives up waiting for it (its
// shutdown timeout passes). The park is bookkeeping, not a handler: it
// completes, once, with its alert, before Close returns; after a restart
// nothing runs again, and the key's later step is parked behind it.
func TestOrderlyCloseWhileParkingSlowly(t *testing.T) {
	f := newFixtureNamed(t, 1, hostile19)
	parker := &slowPark{Table: f.dead, entered: make(chan struct{}), release: make(chan struct{})}
	alerts := &h19Alerts{}
	eff := newEffects()
	var runs1 atomic.Int32
	h := func(ctx context.Context, m *consumer.Message) error {
		if string(m.Body) == "1" {
			runs1.Add(1)
			return errors.New("cannot apply step 1")
		}
		eff.apply(m.ShardingKey, string(m.Body))
		return nil
	}
	opts := []consumer.OrderlyOption{consumer.WithGuard(f.guard()), consumer.WithParker(parker), consumer.WithAlert(alerts.alert),
		consumer.WithMaxAttempts(2), consumer.WithRetryDelay(50 * time.Millisecond),
		consumer.WithShutdownTimeout(50 * time.Millisecond), hostile6Quiet}
	first, err := consumer.NewOrderly(f.env.NameServers(), f.group, f.topic, h, consumer.ParkKey, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	f.send(h19Step("order", 0))
	r1 := f.send(h19Step("order", 1))
	select {
	case <-parker.entered:
	case <-time.After(waitFor):
		t.Fatal("step 1 never reached its park")
	}
	closed := make(chan error, 1)
	go func() { closed <- first.Close() }()
	time.Sleep(300 * time.Millisecond) // past the shutdown timeout: Close cancelled the run
	close(parker.release)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	dls := f.parked()
	if len(dls) != 1 || dls[0].MsgID != r1.MsgID || dls[0].Cause != consumer.CauseRetries || alerts.of(r1.MsgID) != 1 {
		t.Fatalf("after Close: parked %d (%v), %d alerts; want step 1 parked once for its retries, alerted once", len(dls), dls, alerts.of(r1.MsgID))
	}
	runs := runs1.Load()
	f.send(h19Step("order", 2))
	f.start(consumer.NewOrderly(f.env.NameServers(), f.group, f.topic, h, consumer.ParkKey, opts...))
	f.eventually("step 2 parked behind step 1", func() bool { return len(f.parked()) == 2 })
	f.settle()
	if got := h19Order(eff, "order"); !slices.Equal(got, []string{"0"}) || runs1.Load() != runs || alerts.of(r1.MsgID) != 1 {
		t.Fatalf("after the restart: applied %v, step 1 ran %d more times, %d alerts; want [0], no more runs, one alert",
			got, runs1.Load()-runs, alerts.of(r1.MsgID))
	}
}
