package idempotency_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

// TestPurgeLocksOnlyTheRowsItDeletes: the store's purge must not wait for
// a transaction holding a row it keeps, such as another group's TxGuard.Do
// whose business transaction is open. A DELETE ... LIMIT scanned the whole
// table when most rows were expired, and otherwise read the first row past
// the expired range (the TxGuard's new marker, when no other is due
// sooner); under REPEATABLE READ it waited for that transaction and
// meanwhile held up every claim behind it.
func TestPurgeLocksOnlyTheRowsItDeletes(t *testing.T) {
	t.Parallel()
	for _, size := range []struct{ expired, live int }{{5, 0}, {60, 0}, {300, 30}, {3000, 0}, {3000, 300}} {
		t.Run(fmt.Sprint(size.expired, "_expired_", size.live, "_live"), func(t *testing.T) {
			t.Parallel()
			purgeLocksOnlyTheRowsItDeletes(t, size.expired, size.live)
		})
	}
}

func purgeLocksOnlyTheRowsItDeletes(t *testing.T, expired, live int) {
	db := testenv.MySQL(t)
	ctx := context.Background()
	var values []string
	row := func(group, key string, status int, expires string) {
		values = append(values, fmt.Sprintf("('%s', UNHEX(SHA2('%s', 256)), '%s', %d, 't', 1, %s, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))",
			group, key, key, status, expires))
	}
	for i := range expired {
		// Done markers past retention, and every tenth an abandoned claim.
		if i%10 == 9 {
			row(fmt.Sprint("g", i%3), fmt.Sprint("abandoned-", i), 1, "UTC_TIMESTAMP(6) - INTERVAL 2 DAY")
		} else {
			row(fmt.Sprint("g", i%3), fmt.Sprint("old-", i), 2, "UTC_TIMESTAMP(6) - INTERVAL 1 HOUR")
		}
	}
	for i := range live {
		row(fmt.Sprint("g", i%3), fmt.Sprint("live-", i), 2, "UTC_TIMESTAMP(6) + INTERVAL 1 HOUR")
	}
	for len(values) > 0 {
		n := min(len(values), 500)
		db.MustExec("INSERT INTO mq_consume_log (consumer_group, key_hash, biz_key, status, token, attempts, expires_at," +
			" created_at, updated_at) VALUES " + strings.Join(values[:n], ", "))
		values = values[n:]
	}
	if _, err := db.Exec("ANALYZE TABLE mq_consume_log"); err != nil {
		t.Fatal(err)
	}
	store, err := idempotency.NewMySQLStore(db)
	if err != nil {
		t.Fatal(err)
	}
	// Another group's transactional guard, its transaction open until the
	// purge returned.
	release := openTxGuard(t, db, "other", "order-1")
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	n, err := store.Purge(pctx, 24*time.Hour, 100)
	cancel()
	if txErr := release(); txErr != nil {
		t.Fatal(txErr)
	}
	if err != nil || n != int64(expired) {
		t.Fatalf("purged %d of %d expired rows while another group's transaction held its own marker: %v", n, expired, err)
	}
	var left int
	if err := db.Get(&left, "SELECT COUNT(*) FROM mq_consume_log"); err != nil {
		t.Fatal(err)
	}
	if left != live+1 {
		t.Fatalf("%d rows left, want the %d live ones and the TxGuard's", left, live)
	}
}

// TestPurgeUnderEveryDSNVariant: the purge's two statements (the plain
// read, the delete by primary key) hold under every DSN option and
// session setting, sql_safe_updates and the sql_modes included: expired
// markers and abandoned claims go, live ones stay.
func TestPurgeUnderEveryDSNVariant(t *testing.T) {
	t.Parallel()
	db := testenv.MySQL(t)
	ctx := context.Background()
	for _, v := range testenv.MySQLVariants(t, db) {
		db.MustExec("INSERT INTO mq_consume_log (consumer_group, key_hash, biz_key, status, token, attempts, expires_at, created_at, updated_at) VALUES" +
			" ('g', UNHEX(SHA2('old', 256)), 'old', 2, 't', 1, UTC_TIMESTAMP(6) - INTERVAL 1 HOUR, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))," +
			" ('g', UNHEX(SHA2('abandoned', 256)), 'abandoned', 1, 't', 1, UTC_TIMESTAMP(6) - INTERVAL 2 DAY, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))," +
			" ('g', UNHEX(SHA2('live', 256)), 'live', 2, 't', 1, UTC_TIMESTAMP(6) + INTERVAL 1 HOUR, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))")
		store, err := idempotency.NewMySQLStore(v.DB)
		if err != nil {
			t.Fatal(err)
		}
		if n, err := store.Purge(ctx, 24*time.Hour, 1); err != nil || n != 2 {
			t.Fatalf("%s: purged %d of 2: %v", v.Name, n, err)
		}
		var left []string
		if err := db.Select(&left, "SELECT biz_key FROM mq_consume_log"); err != nil || len(left) != 1 || left[0] != "live" {
			t.Fatalf("%s: left %q (%v), want the live marker only", v.Name, left, err)
		}
		db.MustExec("DELETE FROM mq_consume_log")
	}
}
