package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

// claimsSeen is a Redis store that counts the claims asked of it, counted
// (Claim, ClaimBatch) and not (ClaimUncounted).
type claimsSeen struct {
	*idempotency.RedisStore
	counted, uncounted atomic.Int32
}

func (s *claimsSeen) Claim(ctx context.Context, group, key, token string, lease time.Duration) (idempotency.Outcome, int, error) {
	s.counted.Add(1)
	return s.RedisStore.Claim(ctx, group, key, token, lease)
}

func (s *claimsSeen) ClaimBatch(ctx context.Context, group string, items []idempotency.KeyToken, lease time.Duration) []idempotency.ClaimResult {
	s.counted.Add(1)
	return s.RedisStore.ClaimBatch(ctx, group, items, lease)
}

func (s *claimsSeen) ClaimUncounted(ctx context.Context, group string, items []idempotency.KeyToken, lease time.Duration) []idempotency.ClaimResult {
	s.uncounted.Add(1)
	return s.RedisStore.ClaimUncounted(ctx, group, items, lease)
}

// TestOnlyTheOrderlyConsumerCountsAttemptsInTheStore: the concurrent
// consumer takes a message's attempt from the broker and claims without
// the store's count (on Redis a write less per message); the orderly
// consumer, whose retry cap is that count, claims counted. Both see a
// failed message's second delivery as attempt 2.
func TestOnlyTheOrderlyConsumerCountsAttemptsInTheStore(t *testing.T) {
	for _, orderly := range []bool{false, true} {
		t.Run(fmt.Sprint("orderly ", orderly), func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, 2)
			rs, err := idempotency.NewRedisStore(testenv.Redis(t), idempotency.WithPrefix(testenv.Name(t, "attempts")+":"))
			if err != nil {
				t.Fatal(err)
			}
			store := &claimsSeen{RedisStore: rs}
			g, err := idempotency.NewGuard(f.group, store)
			if err != nil {
				t.Fatal(err)
			}
			var (
				failed   atomic.Bool
				mu       sync.Mutex
				attempts []int // of key-1's deliveries
			)
			h := func(ctx context.Context, m *consumer.Message) error {
				if consumer.Key(m) != "key-1" {
					return nil
				}
				mu.Lock()
				attempts = append(attempts, m.Attempt)
				mu.Unlock()
				if !failed.Swap(true) {
					return errors.New("db timeout")
				}
				return nil
			}
			f.sendAll(4, byIndex)
			opts := []consumer.SharedOption{consumer.WithGuard(g), consumer.WithParker(f.dead)}
			if orderly {
				var oo []consumer.OrderlyOption
				for _, o := range opts {
					oo = append(oo, o)
				}
				f.start(consumer.NewOrderly(f.env.NameServers(), f.group, f.topic, h, consumer.ParkMessage, oo...))
			} else {
				var co []consumer.Option
				for _, o := range opts {
					co = append(co, o)
				}
				f.start(consumer.New(f.env.NameServers(), f.group, f.topic, h, co...))
			}
			f.eventually("key-1 handled on its second delivery", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(attempts) >= 2
			})
			mu.Lock()
			got := fmt.Sprint(attempts)
			mu.Unlock()
			if got != "[1 2]" {
				t.Errorf("key-1 delivered as attempts %s, want [1 2]", got)
			}
			counted, uncounted := store.counted.Load(), store.uncounted.Load()
			if orderly && (counted == 0 || uncounted != 0) || !orderly && (counted != 0 || uncounted == 0) {
				t.Errorf("orderly %v: %d counted and %d uncounted claims", orderly, counted, uncounted)
			}
		})
	}
}
