package idempotency_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

// TestGroupPastTheColumnUnderLooseSQLModeHostile20: consumer_group is a
// VARBINARY(255). A longer group under a non-strict sql_mode is stored
// cut, and every later statement compares the full name: the first
// delivery is Acquired and runs, its Complete finds no row (ErrLostClaim),
// and every redelivery fails for ever ("key removed repeatedly"). The
// guard must either refuse such a group up front or apply and record it.
func TestGroupPastTheColumnUnderLooseSQLModeHostile20(t *testing.T) {
	db := testenv.MySQL(t)
	loose := testenv.MySQLWith(t, db, func(c *mysql.Config) { c.Params = map[string]string{"sql_mode": "''"} })
	store, err := idempotency.NewMySQLStore(loose)
	if err != nil {
		t.Fatal(err)
	}
	g, err := idempotency.NewGuard(strings.Repeat("g", 256), store)
	if err != nil {
		return // refused up front: fine
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	runs := 0
	fn := func(context.Context) error { runs++; return nil }
	o, err := g.Do(ctx, "order-1", fn)
	if err != nil && runs == 0 {
		return // refused before the effect: fine
	}
	if err != nil || o != idempotency.Acquired {
		t.Fatalf("first delivery: %v, %v (effect ran %d times)", o, err, runs)
	}
	o, err = g.Do(ctx, "order-1", fn)
	if err != nil || o != idempotency.Done || runs != 1 {
		t.Fatalf("redelivery: %v, %v (effect ran %d times)", o, err, runs)
	}
}

// TestTxGuardGroupPastTheColumnUnderLooseSQLModeHostile20: the same for
// TxGuard: its marker commits under the cut group, and the redelivery
// then errors for ever instead of reading Done.
func TestTxGuardGroupPastTheColumnUnderLooseSQLModeHostile20(t *testing.T) {
	db := testenv.MySQL(t)
	loose := testenv.MySQLWith(t, db, func(c *mysql.Config) { c.Params = map[string]string{"sql_mode": "''"} })
	g, err := idempotency.NewTxGuard(loose, strings.Repeat("t", 256))
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	runs := 0
	fn := func(context.Context, *sqlx.Tx) error { runs++; return nil }
	o, err := g.Do(ctx, "order-1", fn)
	if err != nil && runs == 0 {
		return
	}
	if err != nil || o != idempotency.Acquired {
		t.Fatalf("first delivery: %v, %v (effect ran %d times)", o, err, runs)
	}
	o, err = g.Do(ctx, "order-1", fn)
	if err != nil || o != idempotency.Done || runs != 1 {
		t.Fatalf("redelivery: %v, %v (effect ran %d times)", o, err, runs)
	}
}

// TestPurgeWithNegativeAbandonedAfterKeepsLiveClaimsHostile20: Purge
// deletes claims whose lease ended more than abandonedAfter ago. A
// negative abandonedAfter (a computed setting gone below zero) must not
// make it delete claims whose lease is still running: a second delivery
// would then be Acquired while the first runs.
func TestPurgeWithNegativeAbandonedAfterKeepsLiveClaimsHostile20(t *testing.T) {
	db := testenv.MySQL(t)
	store, err := idempotency.NewMySQLStore(db)
	if err != nil {
		t.Fatal(err)
	}
	g, err := idempotency.NewGuard("purge-neg", store, idempotency.WithLease(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	first, err := g.Claim(ctx, "order-1")
	if err != nil || first.Outcome != idempotency.Acquired {
		t.Fatalf("first claim: %v, %v", first, err)
	}
	n, perr := store.Purge(ctx, -time.Hour, 100)
	second, err := g.Claim(ctx, "order-1")
	if err != nil {
		t.Fatal(err)
	}
	if second.Outcome != idempotency.Busy {
		t.Fatalf("Purge(-1h) = %d, %v; then a second claim during the first's lease: %v (want busy)", n, perr, second.Outcome)
	}
	if err := first.Complete(ctx); err != nil {
		t.Fatalf("first claim's Complete after the purge: %v", err)
	}
}

// TestLargeMySQLBatchStaysUnderThePlaceholderLimitHostile20: past the
// statement's inline budget each value of a batch row goes as a
// placeholder (four per row); a batch of 20,000 short keys then needs
// more than the 65,535 placeholders a statement may have. Purge was
// fixed for this; ClaimBatch and CompleteBatch must claim and complete
// every key too.
func TestLargeMySQLBatchStaysUnderThePlaceholderLimitHostile20(t *testing.T) {
	db := testenv.MySQL(t)
	store, err := idempotency.NewMySQLStore(db)
	if err != nil {
		t.Fatal(err)
	}
	g, err := idempotency.NewGuard("big-batch", store)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	keys := make([]string, 20000)
	for i := range keys {
		keys[i] = fmt.Sprint("k", i)
	}
	claims, errs := g.ClaimBatch(ctx, keys)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("claim %d of %d: %v", i, len(keys), err)
		}
		if claims[i].Outcome != idempotency.Acquired {
			t.Fatalf("claim %d: %v", i, claims[i].Outcome)
		}
	}
	for i, err := range g.CompleteBatch(ctx, claims) {
		if err != nil {
			t.Fatalf("complete %d of %d: %v", i, len(claims), err)
		}
	}
	claims, errs = g.ClaimBatch(ctx, keys)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("reclaim %d: %v", i, err)
		}
		if claims[i].Outcome != idempotency.Done {
			t.Fatalf("reclaim %d: %v", i, claims[i].Outcome)
		}
	}
}

// TestMySQLStoreRefusesAGroupPastTheColumn: a group longer than the
// column is refused up front by NewGuard, NewTxGuard and the store's own
// claims (a caller may use the store directly), whatever the sql_mode.
func TestMySQLStoreRefusesAGroupPastTheColumn(t *testing.T) {
	db := testenv.MySQL(t)
	store, err := idempotency.NewMySQLStore(db)
	if err != nil {
		t.Fatal(err)
	}
	long, fits := strings.Repeat("g", 256), strings.Repeat("g", 255)
	if _, err := idempotency.NewGuard(long, store); err == nil {
		t.Error("NewGuard took a 256-byte group")
	}
	if _, err := idempotency.NewTxGuard(db, long); err == nil {
		t.Error("NewTxGuard took a 256-byte group")
	}
	ctx := context.Background()
	if _, _, err := store.Claim(ctx, long, "k", "token-1", time.Minute); err == nil {
		t.Error("Claim took a 256-byte group")
	}
	for i, r := range store.ClaimBatch(ctx, long, []idempotency.KeyToken{{Key: "a", Token: "t-a"}, {Key: "b", Token: "t-b"}}, time.Minute) {
		if r.Err == nil {
			t.Errorf("ClaimBatch took a 256-byte group for item %d", i)
		}
	}
	if o, _, err := store.Claim(ctx, fits, "k", "token-2", time.Minute); err != nil || o != idempotency.Acquired {
		t.Errorf("a 255-byte group: %v, %v", o, err)
	}
}
