package idempotency_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/idempotency"
)

// TestRedisCompleteBatchDeletesEveryCounter: a batch completion removes
// the counter of every item it completes and of none it does not, in
// batches larger than one DEL of the script takes (256 names), on every
// backend: a counter left behind would make the key's next claim, once
// its done marker expires, count on from the old attempts.
func TestRedisCompleteBatchDeletesEveryCounter(t *testing.T) {
	t.Parallel()
	for _, b := range redisBackends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			rdb := b.rdb(t)
			s, prefix := prefixedStore(t, rdb, "C")
			for _, n := range []int{1, 255, 256, 257, 600} {
				claims := make([]idempotency.KeyToken, n)
				for i := range claims {
					claims[i] = idempotency.KeyToken{Key: fmt.Sprint(n, "-", i), Token: fmt.Sprint("t", i)}
				}
				for i, r := range s.ClaimBatch(ctx, "g", claims, time.Minute) {
					if r.Err != nil || r.Outcome != idempotency.Acquired || r.Attempts != 1 {
						t.Fatalf("n=%d: claim %d: %+v", n, i, r)
					}
				}
				// Every third item with a stale token: lost, its counter kept.
				completes := append([]idempotency.KeyToken(nil), claims...)
				for i := range completes {
					if i%3 == 2 {
						completes[i].Token = "stale"
					}
				}
				for i, err := range s.CompleteBatch(ctx, "g", completes, time.Minute) {
					if lost := i%3 == 2; lost != (err != nil) {
						t.Fatalf("n=%d: complete %d: %v", n, i, err)
					}
				}
				for i, c := range claims {
					counter := strings.TrimSuffix(claimKeyName(prefix, "g", c.Key), ":c") + ":n"
					left, err := rdb.Exists(ctx, counter).Result()
					if err != nil {
						t.Fatal(err)
					}
					if want := int64(0); i%3 == 2 {
						if left != 1 {
							t.Fatalf("n=%d: item %d was not completed, but its counter is gone", n, i)
						}
					} else if left != want {
						t.Fatalf("n=%d: item %d was completed, but its counter is left", n, i)
					}
				}
			}
		})
	}
}
