package outbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/outbox"
)

// smallPacket opens db's database again with the driver's
// max_allowed_packet at 1 MiB, the least the README supports: the driver
// then refuses any larger statement itself (mysql.ErrPktTooLarge), as a
// server set so would, without changing the server's global setting
// under the other packages' tests.
func smallPacket(t *testing.T, db *sqlx.DB) *sqlx.DB {
	t.Helper()
	return testenv.MySQLWith(t, db, func(c *mysql.Config) { c.MaxAllowedPacket = 1 << 20 })
}

// TestPurgeLargeBatchStaysUnder1MiB: the purge lists the ids it read in
// its DELETE, so the statement grew with the batch: 100,000 ids of 16
// digits made a DELETE of some 1.8 MB, past a max_allowed_packet of
// 1 MiB, which the README supports ("statements stay under 1 MiB"); the
// server refused it where the DELETE ... LIMIT it replaced ran.
func TestPurgeLargeBatchStaysUnder1MiB(t *testing.T) {
	t.Parallel()
	db, _ := setup(t, newFake())
	db.MustExec("ALTER TABLE mq_log AUTO_INCREMENT = 1000000000000000")
	const rows = 100000
	digits := "(SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4" +
		" UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9)"
	db.MustExec("INSERT INTO mq_log (topic, key_hash, biz_key, tag, sharding_key, sharding_hash, properties, `body`," +
		" delay_ms, status, attempts, next_attempt_at, lease_owner, last_error, msg_id, created_at, updated_at, sent_at)" +
		" SELECT 't', UNHEX(SHA2(CAST(x.n AS CHAR), 256)), CAST(x.n AS CHAR), '', '', UNHEX(SHA2('', 256)), '{}', 'x', 0, 2, 1," +
		" UTC_TIMESTAMP(6) - INTERVAL 2 DAY, '', '', 'm', UTC_TIMESTAMP(6) - INTERVAL 2 DAY, UTC_TIMESTAMP(6) - INTERVAL 2 DAY," +
		" UTC_TIMESTAMP(6) - INTERVAL 2 DAY FROM (SELECT a.d + 10*b.d + 100*c.d + 1000*e.d + 10000*f.d AS n" +
		" FROM " + digits + " a, " + digits + " b, " + digits + " c, " + digits + " e, " + digits + " f) x")
	r, err := outbox.NewRelay(smallPacket(t, db), newFake())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	n, err := r.Purge(ctx, time.Hour, false, rows)
	if err != nil || n != rows {
		t.Fatalf("purged %d of %d with a batch of %d: %v", n, rows, rows, err)
	}
	if left := count(t, db, "SELECT COUNT(*) FROM mq_log"); left != 0 {
		t.Fatalf("%d rows left", left)
	}
}
