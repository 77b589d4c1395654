package idempotency_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/idempotency"
)

// TestReview22ForeignCounterOnAResentClaimFailsOnlyItsKey: the claim
// scripts' new branch for a key held with the caller's own token (a call
// go-redis sent again after losing its reply) reads the counter with a
// bare redis.call('GET'), outside the pcall the other reads got. A value
// the store did not write at the counter's name then raises WRONGTYPE out
// of the whole script: on a single Redis every other key of the batch
// fails with it, which is what outcome 4 was added to stop.
func TestReview22ForeignCounterOnAResentClaimFailsOnlyItsKey(t *testing.T) {
	t.Parallel()
	for _, b := range redisBackends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			rdb := b.rdb(t)
			s, prefix := prefixedStore(t, rdb, "rev22")
			counter := strings.TrimSuffix(claimKeyName(prefix, "g", "a"), ":c") + ":n"
			own := idempotency.KeyToken{Key: "a", Token: "tok-a"}
			if r := s.ClaimBatch(ctx, "g", []idempotency.KeyToken{own}, time.Minute); r[0].Err != nil || r[0].Outcome != idempotency.Acquired {
				t.Fatalf("first claim: %+v", r[0])
			}
			// Something else replaces the counter before the resend.
			if err := rdb.Del(ctx, counter).Err(); err != nil {
				t.Fatal(err)
			}
			if err := rdb.RPush(ctx, counter, "x").Err(); err != nil {
				t.Fatal(err)
			}
			items := []idempotency.KeyToken{{Key: "before", Token: "tok-b"}, own, {Key: "after", Token: "tok-c"}}
			r := s.ClaimBatch(ctx, "g", items, time.Minute)
			for _, i := range []int{0, 2} {
				if r[i].Err != nil || r[i].Outcome != idempotency.Acquired {
					t.Errorf("batch neighbour %s of a resent claim over a foreign counter: %+v; want Acquired", items[i].Key, r[i])
				}
			}
			if _, _, err := s.Claim(ctx, "g", "a", "tok-a", time.Minute); err != nil && strings.Contains(err.Error(), "WRONGTYPE") {
				t.Errorf("single resent claim over a foreign counter: a raw script error (%v), not the store's", err)
			}
		})
	}
}
