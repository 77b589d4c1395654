package idempotency_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

// numbered inserts n rows into mq_consume_log for group (keys "0" to
// n-1), status and expires_at as given, in one statement: a cross join of
// digit tables numbers them (MySQL 8 and MariaDB alike).
func numbered(t *testing.T, db *sqlx.DB, group string, n, status int, expires string) {
	t.Helper()
	digits := "(SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4" +
		" UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9)"
	db.MustExec(fmt.Sprintf("INSERT INTO mq_consume_log (consumer_group, key_hash, biz_key, status, token, attempts,"+
		" expires_at, created_at, updated_at) SELECT X'%x', UNHEX(SHA2(CAST(x.n AS CHAR), 256)), CAST(x.n AS CHAR), %d, 't', 1, %s,"+
		" UTC_TIMESTAMP(6), UTC_TIMESTAMP(6) FROM (SELECT a.d + 10*b.d + 100*c.d + 1000*e.d + 10000*f.d AS n"+
		" FROM %s a, %s b, %s c, %s e, %s f) x WHERE x.n < %d", group, status, expires, digits, digits, digits, digits, digits, n))
}

// TestPurgeLargeBatchStaysUnderThePlaceholderLimit: the purge deletes the keys
// it read by listing them in its DELETE, so the statement grew with the
// batch: past the inline budget each key went as two placeholders, and
// 40,000 markers of a group named with 255 bytes made a DELETE with more
// than the 65,535 placeholders a statement may have (error 1390). A large
// batch failed where the DELETE ... LIMIT it replaced ran. Every marker
// must go, whatever the batch.
func TestPurgeLargeBatchStaysUnderThePlaceholderLimit(t *testing.T) {
	t.Parallel()
	db := testenv.MySQL(t)
	const rows = 40000
	group := strings.Repeat("g", 255)
	numbered(t, db, group, rows, 2, "UTC_TIMESTAMP(6) - INTERVAL 1 HOUR")
	store, err := idempotency.NewMySQLStore(db)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	n, err := store.Purge(ctx, time.Hour, 100000)
	if err != nil || n != rows {
		t.Fatalf("purged %d of %d with a batch of 100000: %v", n, rows, err)
	}
	var left int
	if err := db.Get(&left, "SELECT COUNT(*) FROM mq_consume_log"); err != nil || left != 0 {
		t.Fatalf("%d rows left (%v)", left, err)
	}
}
