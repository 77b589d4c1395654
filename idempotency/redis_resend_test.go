package idempotency_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/idempotency"
)

// TestRedisCompletionWhoseReplyWasLost: go-redis sends a script call again
// when the connection fails after the request went out (io.EOF, a read
// timeout: a Redis stalled by a fork or an fsync for longer than the
// client's ReadTimeout). A completion run twice found the done marker its
// first run wrote and answered ErrLostClaim: the consumer logged at Error
// and reported ClaimLost (an effect perhaps applied twice) for a
// completion that was recorded. The client's own resend now succeeds; a
// second Complete of the same claim (another call) is still ErrLostClaim.
func TestRedisCompletionWhoseReplyWasLost(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, arm, dropped := flakyRedis(t)
	g := redisGuard(t, rdb, "g")
	c := claimKey(t, g, "order-1")
	arm()
	if err := c.Complete(ctx); err != nil {
		t.Fatalf("completion whose first reply was lost: %v", err)
	}
	if dropped() != 1 {
		t.Fatalf("%d replies dropped, want 1 (the premise)", dropped())
	}
	if err := c.Complete(ctx); !errors.Is(err, idempotency.ErrLostClaim) {
		t.Fatalf("a second Complete of the claim: %v, want ErrLostClaim", err)
	}
	if c := claimKey(t, g, "order-1"); c.Outcome != idempotency.Done {
		t.Fatalf("claim after the completion: %v", c.Outcome)
	}

	cs, errs := g.ClaimBatch(ctx, []string{"order-2", "order-3"})
	for i, err := range errs {
		if err != nil || cs[i].Outcome != idempotency.Acquired {
			t.Fatalf("claim batch item %d: %v %v", i, cs[i].Outcome, err)
		}
	}
	// A claim twice in one batch: the second is another completion.
	arm()
	for i, err := range g.CompleteBatch(ctx, []*idempotency.Claim{cs[0], cs[1], cs[0]}) {
		if lost := i == 2; lost != errors.Is(err, idempotency.ErrLostClaim) || (!lost && err != nil) {
			t.Fatalf("batch completion whose first reply was lost, item %d: %v", i, err)
		}
	}
	if dropped() != 2 {
		t.Fatalf("%d replies dropped, want 2 (the premise)", dropped())
	}
	for i, err := range g.CompleteBatch(ctx, cs) {
		if !errors.Is(err, idempotency.ErrLostClaim) {
			t.Fatalf("a second CompleteBatch, item %d: %v, want ErrLostClaim", i, err)
		}
	}
}

// TestRedisClaimAfterADoneMarkerWasRemoved: a completion deletes the
// counter and leaves its record at a name no claim reads; a done marker
// deleted (by hand, or evicted) while the record lives must not fail the
// next claims of the key as holding a value the store did not write.
// They count from 1.
func TestRedisClaimAfterADoneMarkerWasRemoved(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, _, _ := flakyRedis(t)
	g := redisGuard(t, rdb, "g")
	var keys []string
	for _, k := range []string{"one", "batch-1", "batch-2"} {
		c := claimKey(t, g, k)
		if err := c.Complete(ctx); err != nil {
			t.Fatal(err)
		}
		name := claimKeyName("reliablemq:idem:", "g", k)
		record := strings.TrimSuffix(name, ":c") + ":d"
		if n, err := rdb.Exists(ctx, record).Result(); err != nil || n != 1 {
			t.Fatalf("%s after completing: %d %v, want the completion's record (the premise)", record, n, err)
		}
		if err := rdb.Del(ctx, name).Err(); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	if c := claimKey(t, g, keys[0]); c.Outcome != idempotency.Acquired || c.Attempt != 1 {
		t.Fatalf("claim after the done marker was removed: %v attempt %d, want Acquired attempt 1", c.Outcome, c.Attempt)
	}
	cs, errs := g.ClaimBatch(ctx, keys[1:])
	for i, err := range errs {
		if err != nil || cs[i].Outcome != idempotency.Acquired || cs[i].Attempt != 1 {
			t.Fatalf("batch claim %d after the done marker was removed: %v attempt %d, %v", i, cs[i].Outcome, cs[i].Attempt, err)
		}
	}
}

// TestRedisCompletionRefusesTheDoneToken: "done" is the done marker's
// value; a completion with it as its token would match every done key.
func TestRedisCompletionRefusesTheDoneToken(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, _, _ := flakyRedis(t)
	s, err := idempotency.NewRedisStore(rdb)
	if err != nil {
		t.Fatal(err)
	}
	if o, _, err := s.Claim(ctx, "g", "k", "t", time.Minute); err != nil || o != idempotency.Acquired {
		t.Fatalf("claim: %v %v", o, err)
	}
	if err := s.Complete(ctx, "g", "k", "t", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.Complete(ctx, "g", "k", "done", time.Minute); err == nil || errors.Is(err, idempotency.ErrLostClaim) {
		t.Fatalf("Complete with the token \"done\": %v, want it refused", err)
	}
	errs := s.CompleteBatch(ctx, "g", []idempotency.KeyToken{{Key: "k", Token: "done"}, {Key: "k", Token: "t"}}, time.Minute)
	if errs[0] == nil || errors.Is(errs[0], idempotency.ErrLostClaim) || !errors.Is(errs[1], idempotency.ErrLostClaim) {
		t.Fatalf("CompleteBatch with the token \"done\": %v, want it refused and the other item lost", errs)
	}
}
