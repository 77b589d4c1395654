package idempotency_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/idempotency"
)

// TestRedisCompleteBatchDeletesEveryCounter: a batch completion marks
// done and removes the counter of every item it completes, and of none it
// does not, on every backend, whatever the number of completions against
// the script's DEL chunks of 256 names: none, fewer, exactly one or two
// chunks (a loop that runs once too often then sends an empty DEL, and
// the whole script fails after its SETs), one past. A counter left behind
// would make the key's next claim, once its done marker expires, count on
// from the old attempts.
func TestRedisCompleteBatchDeletesEveryCounter(t *testing.T) {
	t.Parallel()
	cases := []struct {
		claimed int
		lost    func(i int) bool // the items completed with a stale token
	}{
		{3, func(int) bool { return true }},
		{1, func(int) bool { return false }},
		{255, func(i int) bool { return i%3 == 2 }},
		{256, func(int) bool { return false }},
		{257, func(int) bool { return false }},
		{512, func(int) bool { return false }},
		{513, func(int) bool { return false }},
		{600, func(i int) bool { return i%3 == 2 }},
	}
	for _, b := range redisBackends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			rdb := b.rdb(t)
			s, prefix := prefixedStore(t, rdb, "C")
			for n, c := range cases {
				claims := make([]idempotency.KeyToken, c.claimed)
				for i := range claims {
					claims[i] = idempotency.KeyToken{Key: fmt.Sprint(n, "-", i), Token: fmt.Sprint("t", i)}
				}
				for i, r := range s.ClaimBatch(ctx, "g", claims, time.Minute) {
					if r.Err != nil || r.Outcome != idempotency.Acquired || r.Attempts != 1 {
						t.Fatalf("case %d: claim %d: %+v", n, i, r)
					}
				}
				completes := append([]idempotency.KeyToken(nil), claims...)
				for i := range completes {
					if c.lost(i) {
						completes[i].Token = "stale"
					}
				}
				for i, err := range s.CompleteBatch(ctx, "g", completes, time.Minute) {
					if c.lost(i) != (err != nil) {
						t.Fatalf("case %d: complete %d: %v", n, i, err)
					}
				}
				for i, k := range claims {
					claim := claimKeyName(prefix, "g", k.Key)
					held, err := rdb.Get(ctx, claim).Result()
					if err != nil {
						t.Fatal(err)
					}
					left, err := rdb.Exists(ctx, strings.TrimSuffix(claim, ":c")+":n").Result()
					if err != nil {
						t.Fatal(err)
					}
					if c.lost(i) {
						if held != k.Token || left != 1 {
							t.Fatalf("case %d: item %d was not completed, but its claim holds %q and %d counters are left", n, i, held, left)
						}
					} else if held != "done" || left != 0 {
						t.Fatalf("case %d: item %d was completed, but its claim holds %q and %d counters are left", n, i, held, left)
					}
				}
			}
		})
	}
}
