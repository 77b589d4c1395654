package idempotency_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

// TestRedisCompletionAndReleaseRefuseTheDoneToken: "done" is the done
// marker's value; a completion or release with it as its token would
// match every done key (a release would delete the marker and let a
// duplicate through). A batch refuses such items alone, the others'
// results in their places, and a batch of nothing else runs no script.
func TestRedisCompletionAndReleaseRefuseTheDoneToken(t *testing.T) {
	t.Parallel()
	for _, b := range redisBackends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			s, _ := prefixedStore(t, b.rdb(t), "idem")
			refused := func(err error) bool { return err != nil && !errors.Is(err, idempotency.ErrLostClaim) }
			if o, _, err := s.Claim(ctx, "g", "k", "t", time.Minute); err != nil || o != idempotency.Acquired {
				t.Fatalf("claim: %v %v", o, err)
			}
			if err := s.Complete(ctx, "g", "k", "t", time.Minute); err != nil {
				t.Fatal(err)
			}
			if err := s.Complete(ctx, "g", "k", "done", time.Minute); !refused(err) {
				t.Errorf("Complete with the token \"done\": %v, want it refused", err)
			}
			for _, forget := range []bool{false, true} {
				if err := s.Release(ctx, "g", "k", "done", forget); !refused(err) {
					t.Errorf("Release (forget %v) with the token \"done\": %v, want it refused", forget, err)
				}
			}
			errs := s.CompleteBatch(ctx, "g", []idempotency.KeyToken{{Key: "k", Token: "done"}, {Key: "k", Token: "t"}}, time.Minute)
			if !refused(errs[0]) || !errors.Is(errs[1], idempotency.ErrLostClaim) {
				t.Errorf("CompleteBatch with the token \"done\": %v, want it refused and the other item lost", errs)
			}
			errs = s.CompleteBatch(ctx, "g", []idempotency.KeyToken{{Key: "k", Token: "done"}, {Key: "j", Token: "done"}}, time.Minute)
			if len(errs) != 2 || !refused(errs[0]) || !refused(errs[1]) {
				t.Errorf("CompleteBatch of \"done\" tokens only: %v, want both refused", errs)
			}
			if o, _, err := s.Claim(ctx, "g", "k", "t2", time.Minute); err != nil || o != idempotency.Done {
				t.Errorf("k after the refused calls: %v, %v; want still Done", o, err)
			}
		})
	}
}

// TestMySQLRefusesTheEmptyToken: a released claim's row holds the empty
// token; a completion with it would mark done a key whose effect never
// ran (the next delivery is then acknowledged as a duplicate: the message
// is lost), and a release or forget would free a key it does not hold. A
// batch refuses such items alone, the others' results in their places.
func TestMySQLRefusesTheEmptyToken(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := idempotency.NewMySQLStore(testenv.MySQL(t))
	if err != nil {
		t.Fatal(err)
	}
	refused := func(err error) bool { return err != nil && !errors.Is(err, idempotency.ErrLostClaim) }
	if _, _, err := s.Claim(ctx, "g", "k", "", time.Minute); !refused(err) {
		t.Errorf("Claim with an empty token: %v, want it refused", err)
	}
	if o, _, err := s.Claim(ctx, "g", "k", "t", time.Minute); err != nil || o != idempotency.Acquired {
		t.Fatalf("claim: %v %v", o, err)
	}
	if err := s.Release(ctx, "g", "k", "t", false); err != nil {
		t.Fatal(err)
	}
	if err := s.Complete(ctx, "g", "k", "", time.Minute); !refused(err) {
		t.Errorf("Complete with an empty token: %v, want it refused", err)
	}
	for _, forget := range []bool{false, true} {
		if err := s.Release(ctx, "g", "k", "", forget); !refused(err) {
			t.Errorf("Release (forget %v) with an empty token: %v, want it refused", forget, err)
		}
	}
	errs := s.CompleteBatch(ctx, "g", []idempotency.KeyToken{{Key: "k", Token: ""}, {Key: "k", Token: "t"}}, time.Minute)
	if len(errs) != 2 || !refused(errs[0]) || !errors.Is(errs[1], idempotency.ErrLostClaim) {
		t.Errorf("CompleteBatch with an empty token: %v, want it refused and the released claim lost", errs)
	}
	rs := s.ClaimBatch(ctx, "g", []idempotency.KeyToken{{Key: "j", Token: ""}, {Key: "k", Token: "u"}}, time.Minute)
	if len(rs) != 2 || !refused(rs[0].Err) || rs[1].Err != nil || rs[1].Outcome != idempotency.Acquired || rs[1].Attempts != 2 {
		t.Errorf("ClaimBatch with an empty token: %+v, want it refused and k acquired (attempt 2)", rs)
	}
}
