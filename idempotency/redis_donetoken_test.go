package idempotency_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/idempotency"
)

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
