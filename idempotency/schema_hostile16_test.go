package idempotency_test

import (
	"context"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/migrations"
)

// TestOldSchemaWithCaseInsensitiveGroupsIsRefused runs the stores on a
// schema from before migration 00004, where groups compare without case:
// group coupons found group Coupons' done marker for key k, and its claim
// said Done (no error), so coupons skipped the message. Claims of every
// kind must fail there instead, and work once the schema is current.
func TestOldSchemaWithCaseInsensitiveGroupsIsRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.MySQL(t)
	testenv.MigrateDownTo(t, db, 3)
	db.MustExec(`INSERT INTO mq_consume_log (consumer_group, key_hash, biz_key, status, token, attempts, expires_at, created_at, updated_at)
		VALUES ('Coupons', UNHEX(SHA2('k', 256)), 'k', 2, '', 0, UTC_TIMESTAMP(6) + INTERVAL 1 DAY, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))`)
	s, err := idempotency.NewMySQLStore(db)
	if err != nil {
		t.Fatal(err)
	}
	tg, err := idempotency.NewTxGuard(db, "coupons")
	if err != nil {
		t.Fatal(err)
	}
	// claims claims k of group coupons each way: the outcomes, then the
	// errors of the single claim, the batch claim and the TxGuard.
	claims := func() (outcomes [3]idempotency.Outcome, single, batch, tx error) {
		outcomes[0], _, single = s.Claim(ctx, "coupons", "k", "t1", time.Minute)
		r := s.ClaimBatch(ctx, "coupons", []idempotency.KeyToken{{Key: "k", Token: "t2"}}, time.Minute)
		outcomes[1], batch = r[0].Outcome, r[0].Err
		outcomes[2], tx = tg.Do(ctx, "k", func(context.Context, *sqlx.Tx) error { return nil })
		return outcomes, single, batch, tx
	}
	outcomes, single, batch, tx := claims()
	if single == nil || batch == nil || tx == nil {
		t.Fatalf("at schema version 3, group coupons' claims of Coupons' done key: outcomes %v, errors %v, %v, %v",
			outcomes, single, batch, tx)
	}
	if err := migrations.Up(ctx, db.DB); err != nil {
		t.Fatal(err)
	}
	outcomes, single, batch, _ = claims()
	if single != nil || batch != nil || outcomes[0] != idempotency.Acquired || outcomes[1] != idempotency.Busy {
		t.Fatalf("after the upgrade: outcomes %v, errors %v, %v", outcomes, single, batch)
	}
}
