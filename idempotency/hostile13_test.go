package idempotency_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/sqldb"
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

// TestPurgeLargeBatchStaysUnderThePacketLimit: the purge deletes the keys
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

// globalAutocommitOff sets the server's default autocommit to 0 for the
// connections made while set runs, and restores it after (and, whatever
// happens, when the test ends).
func globalAutocommitOff(t *testing.T, db *sqlx.DB, set func()) {
	t.Helper()
	restore := func() { db.MustExec("SET GLOBAL autocommit = 1") }
	t.Cleanup(restore)
	db.MustExec("SET GLOBAL autocommit = 0")
	defer restore()
	set()
}

// TestServerDefaultAutocommitOff: a server whose default is autocommit=0
// (SET GLOBAL, or autocommit=0 in its configuration) is refused on a
// handle that does not set it; a DSN's autocommit=1 overrides it and its
// claims commit.
func TestServerDefaultAutocommitOff(t *testing.T) {
	db := testenv.MySQL(t)
	ctx := context.Background()
	var plain, on *sqlx.DB
	var errPlain, errOn error
	globalAutocommitOff(t, db, func() {
		plain = testenv.MySQLWith(t, db, func(*mysql.Config) {})
		on = testenv.MySQLWith(t, db, func(c *mysql.Config) { c.Params = map[string]string{"autocommit": "1"} })
		for _, h := range []*sqlx.DB{plain, on} {
			h.SetMaxOpenConns(1)
			h.SetConnMaxLifetime(0)
			h.SetConnMaxIdleTime(0)
		}
		_, errPlain = mysqlGuard(t, plain, "g").Claim(ctx, "plain")
		_, errOn = mysqlGuard(t, on, "g").Claim(ctx, "on")
	})
	if !errors.Is(errPlain, sqldb.ErrAutocommitOff) {
		t.Fatalf("claim on the server's autocommit=0: %v, want the handle refused", errPlain)
	}
	if errOn != nil {
		t.Fatalf("claim with the DSN's autocommit=1: %v", errOn)
	}
	var n int
	if err := db.Get(&n, "SELECT COUNT(*) FROM mq_consume_log"); err != nil || n != 1 {
		t.Fatalf("%d claims committed (%v), want the autocommit=1 handle's", n, err)
	}
}

// TestServerDefaultTurnedOffAfterTheCheck: a handle checked once goes on
// making connections; those made after the server's default turned to
// autocommit=0 must not take claims that never commit. Known gap: the
// check is per handle (sqldb.CheckSession), so such a claim returns as
// taken and is rolled back when its connection closes; telling it needs a
// check per pooled connection. The README says so.
func TestServerDefaultTurnedOffAfterTheCheck(t *testing.T) {
	t.Skip("known gap: autocommit is checked once per handle, not per connection (see the README)")
	db := testenv.MySQL(t)
	ctx := context.Background()
	h := testenv.MySQLWith(t, db, func(*mysql.Config) {})
	h.SetMaxIdleConns(0) // every statement on a new connection
	g := mysqlGuard(t, h, "g")
	if _, err := g.Claim(ctx, "before"); err != nil {
		t.Fatal(err)
	}
	var err error
	globalAutocommitOff(t, db, func() { _, err = g.Claim(ctx, "after") })
	var n int
	if err2 := db.Get(&n, "SELECT COUNT(*) FROM mq_consume_log WHERE biz_key = 'after'"); err2 != nil {
		t.Fatal(err2)
	}
	if err == nil && n == 0 {
		t.Fatal("a claim on a connection made with autocommit=0 returned as taken, and its row was never committed")
	}
}
