package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/producer"
	"github.com/seed157d4c4d/reliablemq/rmqtest"
)

// batchStore counts the batch calls that carried more than one key, so a
// test knows batches were taken, keeps the most keys one claim carried,
// holds its first claim for holdFirst, and fails its first failClaims
// batch claims like a database that is down.
type batchStore struct {
	idempotency.BatchStore
	batches    atomic.Int32
	largest    atomic.Int32
	failClaims atomic.Int32
	holdFirst  time.Duration
	held       atomic.Bool
}

func (s *batchStore) ClaimBatch(ctx context.Context, group string, items []idempotency.KeyToken, lease time.Duration) []idempotency.ClaimResult {
	if len(items) > 1 {
		s.batches.Add(1)
	}
	for n := int32(len(items)); n > s.largest.Load(); {
		if s.largest.CompareAndSwap(s.largest.Load(), n) {
			break
		}
	}
	if s.holdFirst > 0 && s.held.CompareAndSwap(false, true) {
		time.Sleep(s.holdFirst) // a slow round trip, for others to queue behind
	}
	if s.failClaims.Add(-1) >= 0 {
		out := make([]idempotency.ClaimResult, len(items))
		for i := range out {
			out[i].Err = errors.New("dial tcp 127.0.0.1:3306: connect: connection refused")
		}
		return out
	}
	return s.BatchStore.ClaimBatch(ctx, group, items, lease)
}

func (f *fixture) batchGuard() (*idempotency.Guard, *batchStore) {
	f.t.Helper()
	ms, err := idempotency.NewMySQLStore(f.db)
	if err != nil {
		f.t.Fatal(err)
	}
	s := &batchStore{BatchStore: ms}
	g, err := idempotency.NewGuard(f.group, s)
	if err != nil {
		f.t.Fatal(err)
	}
	return g, s
}

// sendAll sends n messages keyed key-0.. (or by keyOf) before any
// consumer starts, so the client pulls them together and hands them over
// in batches.
func (f *fixture) sendAll(n int, keyOf func(i int) string) {
	f.t.Helper()
	for i := range n {
		f.send(producer.Message{Body: []byte(fmt.Sprint(i)), Keys: []string{keyOf(i)}})
	}
}

func byIndex(i int) string { return fmt.Sprint("key-", i) }

// handleEachOnce consumes n messages keyed byIndex in batches of size with
// guard g, and checks each was applied exactly once.
func (f *fixture) handleEachOnce(g *idempotency.Guard, n, size int) {
	f.t.Helper()
	eff := newEffects()
	h := func(ctx context.Context, m *consumer.Message) error {
		eff.apply(consumer.Key(m), string(m.Body))
		return nil
	}
	f.sendAll(n, byIndex)
	c := f.start(consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithGuard(g), consumer.WithParker(f.dead),
		consumer.WithBatchSize(size)))
	f.eventually("every message handled", func() bool { return c.Stats().Handled == int64(n) })
	f.settle()
	for i := range n {
		if got := eff.count(byIndex(i)); got != 1 {
			f.t.Errorf("%s applied %d times", byIndex(i), got)
		}
	}
}

// TestBatchPoisonMessageParksAloneAndAFailureRetriesAlone: in batches of
// 8, a poison message is parked and a failing one retried, each alone:
// every neighbour is handled once, in the same batches.
func TestBatchPoisonMessageParksAloneAndAFailureRetriesAlone(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	g, store := f.batchGuard()
	eff := newEffects()
	var failed atomic.Bool
	h := func(ctx context.Context, m *consumer.Message) error {
		switch consumer.Key(m) {
		case "key-3":
			return consumer.Permanent(errors.New("unknown coupon type"))
		case "key-5":
			if !failed.Swap(true) {
				return errors.New("db timeout")
			}
		}
		eff.apply(consumer.Key(m), string(m.Body))
		return nil
	}
	const n = 24
	f.sendAll(n, byIndex)
	c := f.start(consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithGuard(g), consumer.WithParker(f.dead),
		consumer.WithBatchSize(8), consumer.WithRetryDelay(time.Second)))
	// A handler applies its effect before it returns, and the row is
	// written before the park is counted: wait for the counts too.
	f.eventually("all but the poison handled", func() bool { return eff.total() == n-1 && c.Stats().Handled >= n-1 })
	f.eventually("the poison parked", func() bool { return len(f.parked()) == 1 && c.Stats().Parked >= 1 })
	f.settle()
	for i := range n {
		want := 1
		if i == 3 {
			want = 0
		}
		if got := eff.count(byIndex(i)); got != want {
			t.Errorf("key-%d applied %d times, want %d", i, got, want)
		}
	}
	if d := f.parked()[0]; consumer.Key(&consumer.Message{Keys: d.Keys}) != "key-3" || d.Cause != consumer.CausePermanent {
		t.Errorf("parked %+v, want key-3 alone", d)
	}
	if st := c.Stats(); st.Retries != 1 || st.Parked != 1 || st.Handled != n-1 {
		t.Errorf("stats %+v, want 1 retry, 1 parked, %d handled", st, n-1)
	}
	if store.batches.Load() == 0 {
		t.Error("no batch of more than one key was claimed: the test did not exercise batches")
	}
}

// TestBatchDuplicatesInsideOneBatchApplyOnce: the same business key three
// times in one batch runs once; the later copies are duplicates.
func TestBatchDuplicatesInsideOneBatchApplyOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	g, store := f.batchGuard()
	eff := newEffects()
	h := func(ctx context.Context, m *consumer.Message) error {
		eff.apply(consumer.Key(m), string(m.Body))
		return nil
	}
	const n = 12
	f.sendAll(n, func(i int) string { return fmt.Sprint("order-", i%4) }) // each key three times
	c := f.start(consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithGuard(g), consumer.WithParker(f.dead),
		consumer.WithBatchSize(16)))
	f.eventually("every message settled", func() bool {
		st := c.Stats()
		return st.Handled+st.Duplicates == n
	})
	f.settle()
	for k := range 4 {
		if got := eff.count(fmt.Sprint("order-", k)); got != 1 {
			t.Errorf("order-%d applied %d times", k, got)
		}
	}
	if st := c.Stats(); st.Handled != 4 || st.Duplicates != n-4 || st.Busy != 0 {
		t.Errorf("stats %+v, want 4 handled, %d duplicates, none busy", st, n-4)
	}
	if store.batches.Load() == 0 {
		t.Error("no batch of more than one key was claimed")
	}
}

// TestBatchClaimsOfConcurrentBatchesShareARoundTrip: batches that claim
// while a claim is in flight queue, and the next round trip claims all of
// their keys together; every message is still handled once.
func TestBatchClaimsOfConcurrentBatchesShareARoundTrip(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	g, store := f.batchGuard()
	store.holdFirst = 300 * time.Millisecond
	const size = 2
	f.handleEachOnce(g, 16, size)
	if got := store.largest.Load(); got <= size {
		t.Errorf("largest claim carried %d keys, want more than one batch's %d", got, size)
	}
}

// TestBatchGuardStoreDownRunsNothingAcksNothing: while the guard's store
// fails, no handler of the batch runs and none of its messages is
// acknowledged as handled: each is retried, and runs once the store is
// back.
func TestBatchGuardStoreDownRunsNothingAcksNothing(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	g, store := f.batchGuard()
	store.failClaims.Store(2)
	eff := newEffects()
	h := func(ctx context.Context, m *consumer.Message) error {
		eff.apply(consumer.Key(m), string(m.Body))
		return nil
	}
	const n = 10
	f.sendAll(n, byIndex)
	c := f.start(consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithGuard(g), consumer.WithParker(f.dead),
		consumer.WithBatchSize(16), consumer.WithRetryDelay(time.Second)))
	// A handler applies its effect before it returns; the message is
	// counted handled after: wait for both.
	f.eventually("all handled once the store is back", func() bool { return eff.total() == n && c.Stats().Handled >= n })
	f.settle()
	for i := range n {
		if got := eff.count(byIndex(i)); got != 1 {
			t.Errorf("key-%d applied %d times", i, got)
		}
	}
	st := c.Stats()
	if st.StoreErrors < 2 || st.Handled != n || len(f.parked()) != 0 {
		t.Errorf("stats %+v parked %d; want the failed claims retried, every message handled once", st, len(f.parked()))
	}
}

// TestBatchRetryStoreFailureAcksNothing: one message of a batch fails and
// its retry copy cannot be stored; on Close the whole batch is left
// unacknowledged (the client's result is all or nothing), so after a
// restart every message of it comes back, none lost.
func TestBatchRetryStoreFailureAcksNothing(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	b := f.env.RequireEmbedded(t)
	const n = 6
	f.sendAll(n, byIndex)
	b.Inject(rmqtest.SendMessage, rmqtest.Fault{Times: 1000, Code: rmqtest.CodeSystemError, Remark: "store busy"})
	var mu sync.Mutex
	seen := map[string]int{}
	var failOnce atomic.Bool
	h := func(ctx context.Context, m *consumer.Message) error {
		mu.Lock()
		seen[consumer.Key(m)]++
		mu.Unlock()
		if consumer.Key(m) == "key-2" && !failOnce.Swap(true) {
			return errors.New("db timeout")
		}
		return nil
	}
	first, err := consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithParker(f.dead),
		consumer.WithBatchSize(16), consumer.WithRetryDelay(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	f.eventually("retry copy refused twice", func() bool { return first.Stats().StoreErrors >= 2 })
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if off, ok := b.ConsumerOffset(f.group, f.topic, 0); ok && off > 0 {
		t.Fatalf("offset %d committed for a batch whose failed message has no retry copy", off)
	}
	mu.Lock()
	if len(seen) != n {
		t.Fatalf("first run saw %v, want all %d in it", seen, n)
	}
	clear(seen)
	mu.Unlock()
	b.ClearFaults()
	second := f.start(consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithParker(f.dead),
		consumer.WithBatchSize(16), consumer.WithRetryDelay(time.Second)))
	f.eventually("the whole batch redelivered and handled", func() bool { return second.Stats().Handled == n })
	mu.Lock()
	defer mu.Unlock()
	for i := range n {
		if seen[byIndex(i)] != 1 {
			t.Errorf("after the restart key-%d ran %d times, want 1 (redelivered)", i, seen[byIndex(i)])
		}
	}
}

func TestBatchSizeIsValidated(t *testing.T) {
	t.Parallel()
	h := func(context.Context, *consumer.Message) error { return nil }
	ns := []string{"127.0.0.1:9876"}
	p := &memoryParker{}
	for _, n := range []int{0, -1, 33} {
		if _, err := consumer.New(ns, "g", "t", h, consumer.WithParker(p), consumer.WithBatchSize(n)); err == nil {
			t.Errorf("batch size %d accepted", n)
		}
	}
	// consumer.NewOrderly(..., consumer.WithBatchSize(4)) does not compile:
	// WithBatchSize is an Option, not an OrderlyOption.
	if _, err := consumer.New(ns, "g", "t", h, consumer.WithParker(p), consumer.WithBatchSize(32)); err != nil {
		t.Errorf("batch size 32: %v", err)
	}
}

// TestCloseStopsTheBatchWorkers: the goroutines that run a batch's
// handlers (kept between batches) are gone once Close returns, and a
// batch's handlers ran at once on them.
func TestCloseStopsTheBatchWorkers(t *testing.T) {
	f := newFixture(t, 1)
	g, _ := f.batchGuard()
	const n = 32
	var now, most atomic.Int32
	h := func(ctx context.Context, m *consumer.Message) error {
		for cur := now.Add(1); cur > most.Load(); {
			if most.CompareAndSwap(most.Load(), cur) {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
		now.Add(-1)
		return nil
	}
	f.sendAll(n, byIndex)
	c, err := consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithGuard(g), consumer.WithParker(f.dead),
		consumer.WithBatchSize(8))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	f.eventually("every message handled", func() bool { return c.Stats().Handled == n })
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if most.Load() < 2 {
		t.Errorf("at most %d handlers ran at once; a batch's run together", most.Load())
	}
	buf := make([]byte, 1<<20)
	if stacks := string(buf[:runtime.Stack(buf, true)]); strings.Contains(stacks, "consumer.(*workers).loop") {
		t.Fatalf("a batch worker outlived Close:\n%s", stacks)
	}
}
