package idempotency_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

// guardOn returns a guard for group over the store new makes.
func guardOn[S idempotency.Store](t *testing.T, new func() (S, error), group string, opts ...idempotency.GuardOption) *idempotency.Guard {
	t.Helper()
	s, err := new()
	if err != nil {
		t.Fatal(err)
	}
	g, err := idempotency.NewGuard(group, s, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func mysqlGuard(t *testing.T, db *sqlx.DB, group string, opts ...idempotency.GuardOption) *idempotency.Guard {
	t.Helper()
	return guardOn(t, func() (*idempotency.MySQLStore, error) { return idempotency.NewMySQLStore(db) }, group, opts...)
}

func claimKey(t *testing.T, g *idempotency.Guard, key string) *idempotency.Claim {
	t.Helper()
	c, err := g.Claim(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestLeasesHoldAcrossSessionTimeZones: two instances whose MySQL sessions
// run 15 hours apart share one guard. A live claim is never taken over
// (the effect would run twice), and a claim left by a crash is free once
// its lease ends, not hours later.
func TestLeasesHoldAcrossSessionTimeZones(t *testing.T) {
	t.Parallel()
	db := testenv.MySQL(t)
	east, west := testenv.MySQLSessions(t, db)
	for _, tc := range []struct {
		name           string
		holder, second *sqlx.DB
	}{{"held east, claimed west", east, west}, {"held west, claimed east", west, east}} {
		t.Run(tc.name, func(t *testing.T) {
			group := testenv.Name(t, "g")
			first := mysqlGuard(t, tc.holder, group, idempotency.WithLease(time.Minute))
			other := mysqlGuard(t, tc.second, group, idempotency.WithLease(time.Minute))
			if c := claimKey(t, first, "live"); c.Outcome != idempotency.Acquired {
				t.Fatalf("first claim: %v", c.Outcome)
			}
			if c := claimKey(t, other, "live"); c.Outcome != idempotency.Busy {
				t.Fatalf("a live claim from another time zone: %v, want Busy", c.Outcome)
			}
			short := mysqlGuard(t, tc.holder, group, idempotency.WithLease(time.Second))
			if c := claimKey(t, short, "crashed"); c.Outcome != idempotency.Acquired {
				t.Fatalf("claim: %v", c.Outcome)
			}
			time.Sleep(1500 * time.Millisecond) // the holder "crashed"; its lease ends
			if c := claimKey(t, other, "crashed"); c.Outcome != idempotency.Acquired || c.Attempt != 2 {
				t.Fatalf("an expired claim from another time zone: %v attempt %d, want Acquired attempt 2", c.Outcome, c.Attempt)
			}
		})
	}
}

// TestGuardUnderEveryDSNVariant runs a claim, a duplicate and a
// completion through handles opened with each DSN option and session
// setting, and across them.
func TestGuardUnderEveryDSNVariant(t *testing.T) {
	t.Parallel()
	db := testenv.MySQL(t)
	ctx := context.Background()
	for _, v := range testenv.MySQLVariants(t, db) {
		t.Run(v.Name, func(t *testing.T) {
			group := testenv.Name(t, "g")
			g := mysqlGuard(t, v.DB, group)
			c := claimKey(t, g, "k")
			if c.Outcome != idempotency.Acquired {
				t.Fatalf("claim: %v", c.Outcome)
			}
			if d := claimKey(t, g, "k"); d.Outcome != idempotency.Busy {
				t.Fatalf("duplicate while processing: %v", d.Outcome)
			}
			if err := c.Complete(ctx); err != nil {
				t.Fatal(err)
			}
			if d := claimKey(t, mysqlGuard(t, db, group), "k"); d.Outcome != idempotency.Done {
				t.Fatalf("duplicate after completion, seen from the default handle: %v", d.Outcome)
			}
			tg, err := idempotency.NewTxGuard(v.DB, group+"-tx")
			if err != nil {
				t.Fatal(err)
			}
			runs := 0
			for range 2 {
				if _, err := tg.Do(ctx, "k", func(context.Context, *sqlx.Tx) error { runs++; return nil }); err != nil {
					t.Fatal(err)
				}
			}
			if runs != 1 {
				t.Fatalf("transactional guard ran the effect %d times", runs)
			}
		})
	}
}

// TestGroupsDifferingOnlyInCaseAreDistinct: RocketMQ names are
// case-sensitive, so are the guard's groups; so is everything else a
// byte-for-byte comparison tells apart (trailing spaces).
func TestGroupsDifferingOnlyInCaseAreDistinct(t *testing.T) {
	t.Parallel()
	db := testenv.MySQL(t)
	ctx := context.Background()
	for _, group := range []string{"Coupons", "coupons", "COUPONS", "coupons ", " coupons"} {
		c := claimKey(t, mysqlGuard(t, db, group), "order-1")
		if c.Outcome != idempotency.Acquired {
			t.Fatalf("group %s: %v, want Acquired (another case variant's marker)", group, c.Outcome)
		}
		if err := c.Complete(ctx); err != nil {
			t.Fatal(err)
		}
		tg, err := idempotency.NewTxGuard(db, group)
		if err != nil {
			t.Fatal(err)
		}
		ran := false
		if _, err := tg.Do(ctx, "order-2", func(context.Context, *sqlx.Tx) error { ran = true; return nil }); err != nil || !ran {
			t.Fatalf("transactional guard, group %s: ran %v, %v", group, ran, err)
		}
	}
}

// TestDoBoundsTheEffectByTheLease: Guard.Do's effect sees a ctx that ends
// no later than the claim's lease, and the claim exposes its token.
func TestDoBoundsTheEffectByTheLease(t *testing.T) {
	t.Parallel()
	g := mysqlGuard(t, testenv.MySQL(t), testenv.Name(t, "g"), idempotency.WithLease(time.Second))
	_, err := g.Do(context.Background(), "k", func(ctx context.Context) error {
		d, ok := ctx.Deadline()
		if limit := time.Now().Add(time.Second); !ok || d.After(limit) {
			t.Errorf("effect deadline %v (set %v), want by %v", d, ok, limit)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	c := claimKey(t, g, "other")
	if len(c.Token()) != 32 || c.Deadline().After(time.Now().Add(time.Second)) {
		t.Fatalf("token %q, deadline %v", c.Token(), c.Deadline())
	}
}

// TestReleasedClaimIsLost: after Release, the old holder can neither
// complete nor release again (ErrLostClaim), on every store alike, and the
// key is free for the next claim.
func TestReleasedClaimIsLost(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			g, err := idempotency.NewGuard(testenv.Name(t, "g"), b.store(t))
			if err != nil {
				t.Fatal(err)
			}
			c := claimKey(t, g, "k")
			if err := c.Release(ctx); err != nil {
				t.Fatal(err)
			}
			if err := c.Release(ctx); !errors.Is(err, idempotency.ErrLostClaim) {
				t.Errorf("second release: %v, want ErrLostClaim", err)
			}
			if err := c.Complete(ctx); !errors.Is(err, idempotency.ErrLostClaim) {
				t.Errorf("complete after release: %v, want ErrLostClaim", err)
			}
			if n := claimKey(t, g, "k"); n.Outcome != idempotency.Acquired || n.Attempt != 2 {
				t.Errorf("next claim: %v attempt %d, want Acquired attempt 2", n.Outcome, n.Attempt)
			}
		})
	}
}
