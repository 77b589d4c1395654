package idempotency_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/idempotency"
)

// TestRedisCompleteBatchAtTheDeleteChunkEdges: a batch completion whose
// completed items fill the script's DEL chunks (256 names) exactly, or
// one past, once and twice, completes every item, marks each claim done
// and removes each counter; one that completes none keeps every counter.
// TestRedisCompleteBatchDeletesEveryCounter completes a third fewer items
// than it claims (1, 170, 171, 172 and 400 counters), so a chunk loop
// that runs once too often when the count is a multiple of 256 (an empty
// DEL: the whole script fails, after its SETs) passed it and every other
// test.
func TestRedisCompleteBatchAtTheDeleteChunkEdges(t *testing.T) {
	t.Parallel()
	for _, b := range redisBackends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			rdb := b.rdb(t)
			s, prefix := prefixedStore(t, rdb, "E")
			for _, n := range []int{0, 256, 257, 512, 513} {
				claims := make([]idempotency.KeyToken, max(n, 3))
				for i := range claims {
					claims[i] = idempotency.KeyToken{Key: fmt.Sprint(n, "-", i), Token: fmt.Sprint("t", i)}
				}
				for i, r := range s.ClaimBatch(ctx, "g", claims, time.Minute) {
					if r.Err != nil || r.Outcome != idempotency.Acquired {
						t.Fatalf("n=%d: claim %d: %+v", n, i, r)
					}
				}
				completes := append([]idempotency.KeyToken(nil), claims...)
				if n == 0 {
					for i := range completes {
						completes[i].Token = "stale"
					}
				}
				for i, err := range s.CompleteBatch(ctx, "g", completes, time.Minute) {
					if lost := n == 0; lost != (err != nil) {
						t.Fatalf("n=%d: complete %d: %v", n, i, err)
					}
				}
				for i, c := range claims {
					claim := claimKeyName(prefix, "g", c.Key)
					counter := strings.TrimSuffix(claim, ":c") + ":n"
					held, err := rdb.Get(ctx, claim).Result()
					if err != nil {
						t.Fatal(err)
					}
					left, err := rdb.Exists(ctx, counter).Result()
					if err != nil {
						t.Fatal(err)
					}
					if n == 0 {
						if held != c.Token || left != 1 {
							t.Fatalf("n=%d: item %d was not completed, but its claim holds %q and %d counters are left", n, i, held, left)
						}
					} else if held != "done" || left != 0 {
						t.Fatalf("n=%d: item %d was completed, but its claim holds %q and %d counters are left", n, i, held, left)
					}
				}
			}
		})
	}
}
