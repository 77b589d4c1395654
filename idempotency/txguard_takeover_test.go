package idempotency_test

import (
	"context"
	"testing"

	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/idempotency"
)

// TestTxGuardTakesOverAClaimThatEnded: a claim-mode Guard sharing the
// table claimed a key, then released it (its handler failed) or died
// (its lease ended). TxGuard answered Busy for ever: a consumer retrying
// on Busy, as it must, never got through. An ended claim is taken over;
// a live one is still Busy.
func TestTxGuardTakesOverAClaimThatEnded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := couponDB(t)
	store, err := idempotency.NewMySQLStore(db)
	if err != nil {
		t.Fatal(err)
	}
	claims, err := idempotency.NewGuard("coupons", store)
	if err != nil {
		t.Fatal(err)
	}
	tg, err := idempotency.NewTxGuard(db, "coupons")
	if err != nil {
		t.Fatal(err)
	}
	issue := func(order string) idempotency.Outcome {
		t.Helper()
		o, err := tg.Do(ctx, order, func(ctx context.Context, tx *sqlx.Tx) error {
			_, err := tx.ExecContext(ctx, "INSERT INTO coupon (order_id, n) VALUES (?, 1)", order)
			return err
		})
		if err != nil {
			t.Fatalf("%s: %v", order, err)
		}
		return o
	}
	for _, tc := range []struct {
		order string
		end   func(c *idempotency.Claim)
	}{
		{"o-released", func(c *idempotency.Claim) {
			if err := c.Release(ctx); err != nil {
				t.Fatal(err)
			}
		}},
		{"o-lease-over", func(*idempotency.Claim) {
			// The holder died; its lease ran out.
			db.MustExec("UPDATE mq_consume_log SET expires_at = UTC_TIMESTAMP(6) - INTERVAL 1 SECOND WHERE biz_key = 'o-lease-over'")
		}},
	} {
		c, err := claims.Claim(ctx, tc.order)
		if err != nil || c.Outcome != idempotency.Acquired {
			t.Fatalf("claim %s: %+v %v", tc.order, c, err)
		}
		if o := issue(tc.order); o != idempotency.Busy {
			t.Fatalf("%s while claimed: %v, want Busy", tc.order, o)
		}
		tc.end(c)
		if o := issue(tc.order); o != idempotency.Acquired || issued(t, db, tc.order) != 1 {
			t.Fatalf("%s after its claim ended: %v, %d coupons; want Acquired, one", tc.order, o, issued(t, db, tc.order))
		}
		if o := issue(tc.order); o != idempotency.Done {
			t.Fatalf("%s again: %v, want Done", tc.order, o)
		}
	}
}
