package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/deadletter"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// hostile16 starts the names of this file's topics and groups.
const hostile16 = "HO_"

// parkedOf lists the dead letters of group, in id order.
func (f *fixture) parkedOf(group string) []*deadletter.Entry {
	f.t.Helper()
	dls, err := f.dead.List(context.Background(), deadletter.Filter{Group: group})
	if err != nil {
		f.t.Fatal(err)
	}
	return dls
}

// guardOf is a MySQL guard of group.
func (f *fixture) guardOf(group string) *idempotency.Guard {
	f.t.Helper()
	s, err := idempotency.NewMySQLStore(f.db)
	if err != nil {
		f.t.Fatal(err)
	}
	g, err := idempotency.NewGuard(group, s)
	if err != nil {
		f.t.Fatal(err)
	}
	return g
}

// TestOrderlyReplayOfAnotherGroupKeepsThisGroupsKeyParked pins a fix found
// by hostile testing. Two orderly groups consume one topic under ParkKey
// and share the dead-letter table (the default). Group 1 parks step 1 of a
// key; group 2, which started later, parks step 0 (its own failure) and
// step 1 behind it. A replay goes to the topic, so both groups receive
// group 1's replay of step 1, carrying group 1's dead-letter id as its
// place in the key's order. Group 2 took it for a replay of its own: none
// of its parked messages of the key has an id below group 1's, so it ran
// step 1 while its step 0 was still parked, out of order. A replay holds
// its place only in the group whose dead letter it replays; to any other
// group it is a new message of the key, parked behind the key's parked
// ones.
func TestOrderlyReplayOfAnotherGroupKeepsThisGroupsKeyParked(t *testing.T) {
	t.Parallel()
	f := newFixtureNamed(t, 1, hostile16)
	group2 := testenv.Name(t, hostile16+"G2")
	f.env.CreateTopic(t, "%RETRY%"+group2, 1)
	eff1, eff2 := newEffects(), newEffects()
	var fixed1 atomic.Bool
	h1 := func(ctx context.Context, m *consumer.Message) error {
		if string(m.Body) == "1" && !fixed1.Load() {
			return errors.New("group 1 cannot apply step 1 yet")
		}
		eff1.apply(m.ShardingKey, string(m.Body))
		return nil
	}
	h2 := func(ctx context.Context, m *consumer.Message) error {
		if string(m.Body) == "0" {
			return errors.New("group 2 cannot apply step 0")
		}
		eff2.apply(m.ShardingKey, string(m.Body))
		return nil
	}
	opts := func() []consumer.OrderlyOption {
		return []consumer.OrderlyOption{consumer.WithParker(f.dead), consumer.WithMaxAttempts(2),
			consumer.WithRetryDelay(50 * time.Millisecond), hostile6Quiet}
	}
	f.start(consumer.NewOrderly(f.env.NameServers(), f.group, f.topic, h1, consumer.ParkKey,
		append(opts(), consumer.WithGuard(f.guard()))...))
	for s := range 2 {
		f.send(producer.Message{Body: []byte{byte('0' + s)}, Keys: []string{"order-" + string(rune('0'+s))}, ShardingKey: "order"})
	}
	f.eventually("group 1 handled step 0 and parked step 1", func() bool {
		return eff1.count("order") == 1 && len(f.parkedOf(f.group)) == 1
	})
	f.start(consumer.NewOrderly(f.env.NameServers(), group2, f.topic, h2, consumer.ParkKey,
		append(opts(), consumer.WithGuard(f.guardOf(group2)))...))
	f.eventually("group 2 parked step 0 and step 1 behind it", func() bool { return len(f.parkedOf(group2)) == 2 })

	fixed1.Store(true)
	first := f.parkedOf(f.group)[0]
	if err := f.dead.Replay(context.Background(), first.ID, f.prod, "fixed"); err != nil {
		t.Fatal(err)
	}
	f.eventually("group 1 applied its replay; group 2 settled it", func() bool {
		return eff1.count("order") == 2 && (eff2.count("order") > 0 || len(f.parkedOf(group2)) == 3)
	})
	if got := eff2.order["order"]; len(got) > 0 {
		t.Fatalf("group 2 applied steps %v while its step 0 was parked (group 1's replay taken for its own)", got)
	}
	last := f.parkedOf(group2)[2]
	if last.Cause != consumer.CauseKeyParked || last.ReplayOf != 0 {
		t.Errorf("group 2 parked the replay with cause %s, replay of %d; want %s, not a replay of its own",
			last.Cause, last.ReplayOf, consumer.CauseKeyParked)
	}
}

// TestOrderlyCloseDoesNotParkTheHandlerItCancels pins a fix found by
// hostile testing. A handler still running when Close gives up waiting
// has its ctx cancelled and returns that error; the consumer took it for
// a failed attempt, and at the attempt cap parked the message (under
// ParkKey its key too) although nothing failed but the shutdown. Close
// promises that a message delivered but not handled is redelivered after a
// restart: it stays unacknowledged, and the next consumer handles it.
func TestOrderlyCloseDoesNotParkTheHandlerItCancels(t *testing.T) {
	t.Parallel()
	f := newFixtureNamed(t, 1, hostile16)
	started := make(chan struct{}, 1)
	var closing atomic.Bool
	eff := newEffects()
	h := func(ctx context.Context, m *consumer.Message) error {
		if !closing.Load() {
			started <- struct{}{}
			<-ctx.Done() // a step that takes longer than the shutdown timeout
			return ctx.Err()
		}
		eff.apply(m.ShardingKey, string(m.Body))
		return nil
	}
	opts := []consumer.OrderlyOption{consumer.WithGuard(f.guard()), consumer.WithParker(f.dead),
		consumer.WithMaxAttempts(1), consumer.WithShutdownTimeout(100 * time.Millisecond), hostile6Quiet}
	first, err := consumer.NewOrderly(f.env.NameServers(), f.group, f.topic, h, consumer.ParkKey, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	f.send(producer.Message{Body: []byte("0"), Keys: []string{"order-0"}, ShardingKey: "order"})
	select {
	case <-started:
	case <-time.After(waitFor):
		t.Fatal("handler never ran")
	}
	closing.Store(true)
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if dls := f.parked(); len(dls) != 0 {
		t.Fatalf("Close parked the message whose handler it cancelled (cause %s, error %q); want it left for redelivery",
			dls[0].Cause, dls[0].LastError)
	}
	f.start(consumer.NewOrderly(f.env.NameServers(), f.group, f.topic, h, consumer.ParkKey, opts...))
	f.eventually("the next consumer handled it", func() bool { return eff.count("order") == 1 })
}

// TestOrderlyTwoInstancesRebalanceMidStreamKeepEveryKeyInOrder runs one
// orderly group on two instances: the second joins while the first is
// mid-stream with a queue suspended on a failing step, then the first is
// closed while that step still fails. Every key's steps are applied once
// each, in send order, on whichever instance holds its queue.
func TestOrderlyTwoInstancesRebalanceMidStreamKeepEveryKeyInOrder(t *testing.T) {
	t.Parallel()
	f := newFixtureNamed(t, 4, hostile16)
	eff := newEffects()
	var failures atomic.Int32
	var second atomic.Bool
	h := func(ctx context.Context, m *consumer.Message) error {
		// order-3 step 2 fails until the second instance has joined, and
		// twice more after.
		if m.ShardingKey == "order-3" && string(m.Body) == "2" && (!second.Load() || failures.Add(1) <= 2) {
			return errors.New("transient")
		}
		eff.apply(m.ShardingKey, string(m.Body))
		return nil
	}
	opts := []consumer.OrderlyOption{consumer.WithGuard(f.guard()), consumer.WithParker(f.dead),
		consumer.WithMaxAttempts(16), consumer.WithRetryDelay(100 * time.Millisecond), hostile6Quiet}
	first, err := consumer.NewOrderly(f.env.NameServers(), f.group, f.topic, h, consumer.ParkKey, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	const orders, steps = 12, 5
	sendSteps(f, orders, 3)
	f.eventually("the first instance reached order-3's failing step", func() bool { return eff.count("order-3") == 2 && eff.total() >= orders*2 })
	second.Store(true)
	f.start(consumer.NewOrderly(f.env.NameServers(), f.group, f.topic, h, consumer.ParkKey, opts...))
	for s := 3; s < steps; s++ {
		for o := range orders {
			key := "order-" + strconv.Itoa(o)
			f.send(producer.Message{Body: []byte(strconv.Itoa(s)), Keys: []string{key + "-" + strconv.Itoa(s)}, ShardingKey: key})
		}
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	// On a real broker the queues the first instance lost in the rebalance
	// stay locked to it until the broker's lock expiry (60 s): the client
	// never unlocks a queue it gives up, only those it holds at shutdown.
	f.env.Eventually(t, "every step handled", 3*waitFor, func() bool { return eff.total() >= orders*steps })
	f.settle()
	checkInOrder(t, eff, orders, steps, nil)
	if dls := f.parked(); len(dls) != 0 {
		t.Errorf("%d messages parked, first %s (%s); want none", len(dls), dls[0].Body, dls[0].LastError)
	}
}

// TestOrderlyParkKeyTellsKeysApartByteForByte parks one sharding key
// under ParkKey next to keys that differ from it only in case or in
// Unicode normalization (and an empty one): the parked key's later
// messages are parked behind it, every other key flows, in order.
func TestOrderlyParkKeyTellsKeysApartByteForByte(t *testing.T) {
	t.Parallel()
	f := newFixtureNamed(t, 2, hostile16)
	eff := newEffects()
	const parked = "Order-é" // é precomposed
	keys := []string{parked, "order-é", "ORDER-é", "Order-e\u0301", "Order-é "}
	h := func(ctx context.Context, m *consumer.Message) error {
		if m.ShardingKey == parked && string(m.Body) == "1" {
			return errors.New("poison")
		}
		eff.apply(m.ShardingKey, string(m.Body))
		return nil
	}
	f.start(consumer.NewOrderly(f.env.NameServers(), f.group, f.topic, h, consumer.ParkKey,
		consumer.WithGuard(f.guard()), consumer.WithParker(f.dead), consumer.WithMaxAttempts(2),
		consumer.WithRetryDelay(50*time.Millisecond), hostile6Quiet))
	const steps = 3
	for s := range steps {
		for i, k := range keys {
			f.send(producer.Message{Body: []byte(strconv.Itoa(s)), Keys: []string{fmt.Sprint("k", i, "-", s)}, ShardingKey: k})
		}
	}
	f.eventually("the other keys handled, the parked key parked from step 1", func() bool {
		return eff.total() == (len(keys)-1)*steps+1 && len(f.parked()) == steps-1
	})
	f.settle()
	eff.mu.Lock()
	defer eff.mu.Unlock()
	for _, k := range keys[1:] {
		if got := eff.order[k]; !slices.Equal(got, []string{"0", "1", "2"}) {
			t.Errorf("key %q handled %v, want [0 1 2]", k, got)
		}
	}
	if got := eff.order[parked]; !slices.Equal(got, []string{"0"}) {
		t.Errorf("parked key handled %v, want [0]", got)
	}
	for _, d := range f.parked() {
		if d.ShardingKey != parked {
			t.Errorf("parked %q step %s, want only %q", d.ShardingKey, d.Body, parked)
		}
	}
}

// TestOrderlyReplayBehindALaterMessageOfItsKey: a key's step 1 is
// parked under ParkKey, the consumer stops (a deploy), step 2 is sent,
// and the operator replays step 1 meanwhile. The replay is queued behind
// step 2; when the consumer comes back, step 2 must not run before it.
func TestOrderlyReplayBehindALaterMessageOfItsKey(t *testing.T) {
	t.Parallel()
	f := newFixtureNamed(t, 1, hostile16)
	eff := newEffects()
	var fixed atomic.Bool
	h := func(ctx context.Context, m *consumer.Message) error {
		if string(m.Body) == "1" && !fixed.Load() {
			return errors.New("cannot apply step 1 yet")
		}
		eff.apply(m.ShardingKey, string(m.Body))
		return nil
	}
	opts := []consumer.OrderlyOption{consumer.WithGuard(f.guard()), consumer.WithParker(f.dead),
		consumer.WithMaxAttempts(2), consumer.WithRetryDelay(50 * time.Millisecond), hostile6Quiet}
	first, err := consumer.NewOrderly(f.env.NameServers(), f.group, f.topic, h, consumer.ParkKey, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	step := func(s int) producer.Message {
		return producer.Message{Body: []byte(strconv.Itoa(s)), Keys: []string{"order-" + strconv.Itoa(s)}, ShardingKey: "order"}
	}
	f.send(step(0))
	f.send(step(1))
	f.eventually("step 0 handled, step 1 parked", func() bool { return eff.count("order") == 1 && len(f.parked()) == 1 })
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	f.send(step(2))
	fixed.Store(true)
	if err := f.dead.Replay(context.Background(), f.parked()[0].ID, f.prod, "fixed"); err != nil {
		t.Fatal(err)
	}
	f.start(consumer.NewOrderly(f.env.NameServers(), f.group, f.topic, h, consumer.ParkKey, opts...))
	f.eventually("the replay handled", func() bool {
		eff.mu.Lock()
		defer eff.mu.Unlock()
		return slices.Contains(eff.order["order"], "1")
	})
	f.settle()
	eff.mu.Lock()
	got := slices.Clone(eff.order["order"])
	eff.mu.Unlock()
	if i := slices.Index(got, "1"); slices.Contains(got[:i], "2") {
		t.Fatalf("applied %v: step 2 ran before the replay of step 1 queued behind it", got)
	}
	// Step 2 waits parked behind the replay; replayed, the key drains.
	var step2 *deadletter.Entry
	for _, dl := range f.parked() {
		if dl.Status == deadletter.Parked && string(dl.Body) == "2" {
			step2 = dl
		}
	}
	if step2 == nil {
		t.Fatalf("step 2 is not parked behind the replay: %v", f.parked())
	}
	if err := f.dead.Replay(context.Background(), step2.ID, f.prod, "after step 1"); err != nil {
		t.Fatal(err)
	}
	f.eventually("the key drained in order", func() bool {
		eff.mu.Lock()
		defer eff.mu.Unlock()
		return slices.Equal(eff.order["order"], []string{"0", "1", "2"})
	})
	for _, dl := range f.parked() {
		if dl.Status != deadletter.Replayed {
			t.Errorf("dead letter %d (step %s) is %s once the key drained, want replayed", dl.ID, dl.Body, dl.Status)
		}
	}
}

// replayReportFails is the dead-letter table whose first reports of a
// replay received fail, like a database that is down.
type replayReportFails struct {
	*deadletter.Table
	fail atomic.Int32
}

func (p *replayReportFails) ReplayReceived(ctx context.Context, group string, replayOf int64) error {
	if p.fail.Add(-1) >= 0 {
		return errors.New("dial tcp 127.0.0.1:3306: connect: connection refused")
	}
	return p.Table.ReplayReceived(ctx, group, replayOf)
}

// TestAReplayRunsOnlyOnceReportedReceived: a replay whose report of being
// received fails is retried before its handler runs (its dead letter
// would hold its key no longer once reported, so it must not have run
// without the report); it runs once the report went through, and its dead
// letter ends Replayed.
func TestAReplayRunsOnlyOnceReportedReceived(t *testing.T) {
	t.Parallel()
	f := newFixtureNamed(t, 1, hostile16)
	parker := &replayReportFails{Table: f.dead}
	parker.fail.Store(2)
	var fixed atomic.Bool
	var runs atomic.Int32
	h := func(ctx context.Context, m *consumer.Message) error {
		if !fixed.Load() {
			return consumer.Permanent(errors.New("missing config"))
		}
		runs.Add(1)
		return nil
	}
	c := f.start(consumer.NewOrderly(f.env.NameServers(), f.group, f.topic, h, consumer.ParkKey, consumer.WithGuard(f.guard()),
		consumer.WithParker(parker), consumer.WithRetryDelay(50*time.Millisecond), hostile6Quiet))
	f.send(producer.Message{Body: []byte("x"), Keys: []string{"order-7"}, ShardingKey: "order-7"})
	f.eventually("parked", func() bool { return len(f.parked()) == 1 })
	id := f.parked()[0].ID
	fixed.Store(true)
	if err := f.dead.Replay(context.Background(), id, f.prod, "fixed"); err != nil {
		t.Fatal(err)
	}
	f.eventually("the replay handled", func() bool { return runs.Load() == 1 })
	f.settle()
	if n := runs.Load(); n != 1 || parker.fail.Load() >= 0 || c.Stats().StoreErrors < 2 {
		t.Fatalf("%d runs, %d report failures left, stats %+v: want one run after two failed reports", n, parker.fail.Load()+1, c.Stats())
	}
	if e, err := f.dead.Get(context.Background(), id); err != nil || e.Status != deadletter.Replayed {
		t.Fatalf("dead letter %d after its replay ran: %+v, %v; want replayed", id, e, err)
	}
}
