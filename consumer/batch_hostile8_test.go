package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/seed157d4c4d/reliablemq/idempotency"
)

// strictStore is an in-memory guard store that checks its callers: a
// key is held by one token at a time, Done once completed, and a
// completion or release with a token that does not hold the key is a
// violation (a claim read by the wrong item, a completion of another
// item's claim). Claims fail now and then, before any change, like a
// database that refuses a connection. Calls take a random round trip so
// that concurrent batches' claims and completions combine.
type strictStore struct {
	mu         sync.Mutex
	holder     map[string]string
	done       map[string]bool
	attempts   map[string]int
	violations []string
	claimErrs  atomic.Int64
}

func newStrictStore() *strictStore {
	return &strictStore{holder: map[string]string{}, done: map[string]bool{}, attempts: map[string]int{}}
}

var errRefused = errors.New("connection refused")

func (s *strictStore) trip() {
	if rand.IntN(3) == 0 {
		time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
	}
}

func (s *strictStore) violate(format string, args ...any) {
	s.violations = append(s.violations, fmt.Sprintf(format, args...))
}

func (s *strictStore) claim(key, token string) (idempotency.Outcome, int, error) {
	if rand.IntN(16) == 0 {
		s.claimErrs.Add(1)
		return 0, 0, errRefused
	}
	switch {
	case s.done[key]:
		return idempotency.Done, 0, nil
	case s.holder[key] != "":
		return idempotency.Busy, 0, nil
	}
	s.holder[key] = token
	s.attempts[key]++
	return idempotency.Acquired, s.attempts[key], nil
}

func (s *strictStore) complete(key, token string) error {
	if s.holder[key] != token {
		s.violate("complete %s with token %q, held by %q (done %v)", key, token, s.holder[key], s.done[key])
		return idempotency.ErrLostClaim
	}
	delete(s.holder, key)
	s.done[key] = true
	return nil
}

func (s *strictStore) Claim(_ context.Context, _, key, token string, _ time.Duration) (idempotency.Outcome, int, error) {
	s.trip()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.claim(key, token)
}

func (s *strictStore) Complete(_ context.Context, _, key, token string, _ time.Duration) error {
	s.trip()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.complete(key, token)
}

func (s *strictStore) Release(_ context.Context, _, key, token string, forget bool) error {
	s.trip()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.holder[key] != token {
		s.violate("release %s with token %q, held by %q", key, token, s.holder[key])
		return idempotency.ErrLostClaim
	}
	delete(s.holder, key)
	if forget {
		delete(s.attempts, key)
	}
	return nil
}

func (s *strictStore) holds(key, token string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return token != "" && s.holder[key] == token
}

func (s *strictStore) isDone(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.done[key]
}

// strictBatchStore adds the batch calls: each item as the single-key call
// would have been, in order.
type strictBatchStore struct{ *strictStore }

func (s strictBatchStore) ClaimBatch(_ context.Context, _ string, items []idempotency.KeyToken, _ time.Duration) []idempotency.ClaimResult {
	s.trip()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]idempotency.ClaimResult, len(items))
	for i, it := range items {
		out[i].Outcome, out[i].Attempts, out[i].Err = s.claim(it.Key, it.Token)
	}
	return out
}

func (s strictBatchStore) CompleteBatch(_ context.Context, _ string, items []idempotency.KeyToken, _ time.Duration) []error {
	s.trip()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]error, len(items))
	for i, it := range items {
		out[i] = s.complete(it.Key, it.Token)
	}
	return out
}

// TestConcurrentGuardedBatchesSettleEveryItemAsItself guards against
// the batch bookkeeping mixing items up: the claims of concurrent waves
// in one shared array, each item's completion inside the batch's item
// array, the combined claim and completion round trips with their reused
// calls, and the handlers on pooled workers. Batches with keys repeated
// inside them and across them, failing handlers and failing claims run at
// once, the items not acknowledged come back (as the broker would send
// them); at the end every key's effect ran exactly once, each handler
// ran under a claim its own token holds, every completion and release
// named the token holding its key, and no item was acknowledged before
// its key was recorded as done.
func TestConcurrentGuardedBatchesSettleEveryItemAsItself(t *testing.T) {
	for _, batched := range []bool{true, false} {
		t.Run(fmt.Sprint("batched=", batched), func(t *testing.T) {
			testGuardedBatchesSettle(t, batched)
		})
	}
}

func testGuardedBatchesSettle(t *testing.T, batched bool) {
	ss := newStrictStore()
	var store idempotency.Store = ss
	if batched {
		store = strictBatchStore{ss}
	}
	g, err := idempotency.NewGuard("g", store, idempotency.WithLease(10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	applied := map[string]int{}
	var wrongToken atomic.Int32
	h := func(ctx context.Context, m *Message) error {
		if !ss.holds(m.Keys[0], m.ClaimToken) {
			wrongToken.Add(1)
		}
		if rand.IntN(4) == 0 {
			time.Sleep(time.Duration(rand.IntN(500)) * time.Microsecond)
		}
		if m.Attempt <= 3 && rand.IntN(10) == 0 {
			return errors.New("transient") // retried: its claim released
		}
		mu.Lock()
		applied[m.Keys[0]]++
		mu.Unlock()
		return nil
	}
	c, err := New([]string{"127.0.0.1:1"}, "g", "T", h, WithParker(nopParker{}), WithGuard(g), WithBatchSize(16),
		WithMaxAttempts(16), WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	const keys, copies = 300, 3
	acked, early := redeliverUntilAcked(t, c, keys, copies, ss.isDone)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if acked != keys*copies {
		t.Errorf("%d messages acknowledged, want %d", acked, keys*copies)
	}
	if len(early) > 0 {
		t.Errorf("%d messages acknowledged before their key was recorded as done, e.g. %s", len(early), early[0])
	}
	if n := wrongToken.Load(); n > 0 {
		t.Errorf("%d handlers ran with a token that does not hold their key", n)
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for _, v := range ss.violations[:min(len(ss.violations), 5)] {
		t.Error("store:", v)
	}
	for k := range keys {
		key := fmt.Sprint("k", k)
		if applied[key] != 1 || !ss.done[key] {
			t.Errorf("key %s: applied %d times, done %v", key, applied[key], ss.done[key])
		}
	}
	if ss.claimErrs.Load() == 0 {
		t.Error("no claim failed: the test did not cover failed claims")
	}
}

// redeliverUntilAcked hands copies of each of keys keyed messages to c as
// 8 clients would, in shuffled batches of 1 to 16, each client on its own
// goroutine; a message not acknowledged comes back (its attempt count
// rising, never up to the cap) until it is, for up to 2 minutes. It
// returns how many were acknowledged and the ids of those acknowledged
// before isDone said their key was done; messages never acknowledged fail
// the test.
func redeliverUntilAcked(t *testing.T, c *Consumer, keys, copies int, isDone func(key string) bool) (acked int, early []string) {
	t.Helper()
	const clients = 8
	var queues [clients][]*primitive.MessageExt
	for k := range keys {
		for j := range copies {
			m := &primitive.MessageExt{Message: primitive.Message{Topic: "T", Body: []byte("b")}, MsgId: fmt.Sprint("id", k, "-", j)}
			m.WithKeys([]string{fmt.Sprint("k", k)})
			q := rand.IntN(clients)
			queues[q] = append(queues[q], m)
		}
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	deadline := time.Now().Add(2 * time.Minute)
	for q := range clients {
		wg.Go(func() {
			queue := queues[q]
			rand.Shuffle(len(queue), func(i, j int) { queue[i], queue[j] = queue[j], queue[i] })
			for len(queue) > 0 && time.Now().Before(deadline) {
				n := min(len(queue), 1+rand.IntN(16))
				msgs := queue[:n:n]
				queue = queue[n:]
				items := newItems(msgs, "", "")
				c.handleBatch(context.Background(), items)
				for _, it := range items {
					if it.v == ack {
						done := isDone(it.m.Keys[0])
						mu.Lock()
						acked++
						if !done {
							early = append(early, it.m.MsgID)
						}
						mu.Unlock()
						continue
					}
					if it.ext.ReconsumeTimes < 8 {
						it.ext.ReconsumeTimes++ // comes back, never up to the attempt cap
					}
					queue = append(queue, it.ext)
				}
				if rand.IntN(4) == 0 {
					runtime.Gosched()
				}
			}
			if len(queue) > 0 {
				t.Errorf("client %d: %d messages never acknowledged", q, len(queue))
			}
		})
	}
	wg.Wait()
	return acked, early
}
