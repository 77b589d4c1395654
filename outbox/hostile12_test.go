package outbox_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

// TestPurgeLocksOnlyTheRowsItDeletes: the retention purge must not wait
// for transactions that hold rows it does not delete: a business
// transaction with an uncommitted outbox row (Transact) and a consumer
// whose transaction confirmed a recent row (Confirm through its own
// transaction). A DELETE ... LIMIT read the table through the due index
// (every row of the status) or, on a small table, whole; under REPEATABLE
// READ it locked every row and gap it read, so it waited for them and
// meanwhile held up every enqueue behind it.
func TestPurgeLocksOnlyTheRowsItDeletes(t *testing.T) {
	t.Parallel()
	for _, old := range []int{5, 60, 300, 3000} {
		t.Run(fmt.Sprint(old, "_old"), func(t *testing.T) {
			t.Parallel()
			purgeLocksOnlyTheRowsItDeletes(t, old)
		})
	}
}

func purgeLocksOnlyTheRowsItDeletes(t *testing.T, old int) {
	db, r := setup(t, newFake())
	ctx := context.Background()
	// Confirmed rows past retention, other topics' and statuses' rows, and
	// one recent Sent row a consumer is about to confirm.
	insert := func(topic, key string, status int, age time.Duration) {
		db.MustExec("INSERT INTO mq_log (topic, key_hash, biz_key, tag, sharding_key, sharding_hash, properties, `body`,"+
			" delay_ms, status, attempts, next_attempt_at, lease_owner, last_error, msg_id, created_at, updated_at, sent_at)"+
			" VALUES (?, UNHEX(SHA2(?, 256)), ?, '', '', UNHEX(SHA2('', 256)), '{}', 'x', 0, ?, 1,"+
			" UTC_TIMESTAMP(6) - INTERVAL ? MICROSECOND, '', '', 'm', UTC_TIMESTAMP(6), UTC_TIMESTAMP(6) - INTERVAL ? MICROSECOND,"+
			" UTC_TIMESTAMP(6) - INTERVAL ? MICROSECOND)", topic, key, key, status, age.Microseconds(), age.Microseconds(), age.Microseconds())
	}
	var values []string
	for i := range old {
		values = append(values, fmt.Sprintf("('t%d', UNHEX(SHA2('old-%d', 256)), 'old-%d', '', '', UNHEX(SHA2('', 256)), '{}', 'x', 0, 2, 1,"+
			" UTC_TIMESTAMP(6) - INTERVAL 2 DAY, '', '', 'm', UTC_TIMESTAMP(6) - INTERVAL 2 DAY, UTC_TIMESTAMP(6) - INTERVAL 2 DAY,"+
			" UTC_TIMESTAMP(6) - INTERVAL 2 DAY)", i%3, i, i))
	}
	for len(values) > 0 {
		n := min(len(values), 500)
		db.MustExec("INSERT INTO mq_log (topic, key_hash, biz_key, tag, sharding_key, sharding_hash, properties, `body`," +
			" delay_ms, status, attempts, next_attempt_at, lease_owner, last_error, msg_id, created_at, updated_at, sent_at) VALUES " +
			strings.Join(values[:n], ", "))
		values = values[n:]
	}
	insert("t1", "recent-confirmed", 2, time.Minute)
	insert("t2", "dead", 3, 72*time.Hour)
	insert("t0", "to-confirm", 1, time.Second)
	if _, err := db.Exec("ANALYZE TABLE mq_log"); err != nil {
		t.Fatal(err)
	}
	// Both transactions stay open until the purge returned.
	releaseTransact := openTransact(t, r, "t1", "open")
	release := make(chan struct{})
	inTx, confirmDone := make(chan struct{}), make(chan error, 1)
	go func() {
		confirmDone <- func() error {
			tx, err := db.BeginTxx(ctx, nil)
			if err != nil {
				return err
			}
			defer tx.Rollback() //nolint:errcheck // the test's transaction
			if ok, err := r.Confirm(ctx, tx, "t0", "to-confirm"); err != nil || !ok {
				return fmt.Errorf("confirm: %v %v", ok, err)
			}
			inTx <- struct{}{}
			<-release
			return tx.Commit()
		}()
	}()
	<-inTx
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	n, err := r.Purge(pctx, 24*time.Hour, false, 100)
	cancel()
	close(release)
	for _, txErr := range []error{releaseTransact(), <-confirmDone} {
		if txErr != nil {
			t.Fatal(txErr)
		}
	}
	if err != nil || n != int64(old) {
		t.Fatalf("purged %d of %d old confirmed rows while other transactions held rows it keeps: %v", n, old, err)
	}
	var left []string
	if err := sqlx.SelectContext(ctx, db, &left, "SELECT biz_key FROM mq_log ORDER BY biz_key"); err != nil {
		t.Fatal(err)
	}
	if want := "dead open recent-confirmed to-confirm"; strings.Join(left, " ") != want {
		t.Fatalf("rows left %q, want %q", left, want)
	}
}

// TestPurgeUnderEveryDSNVariant: the retention purge's two statements hold
// under every DSN option and session setting, sql_safe_updates and the
// sql_modes included: the old confirmed row goes, the recent one stays.
func TestPurgeUnderEveryDSNVariant(t *testing.T) {
	t.Parallel()
	db, _ := setup(t, newFake())
	ctx := context.Background()
	for _, v := range testenv.MySQLVariants(t, db) {
		for _, r := range []struct {
			key string
			age time.Duration
		}{{"old", 48 * time.Hour}, {"recent", time.Minute}} {
			db.MustExec("INSERT INTO mq_log (topic, key_hash, biz_key, tag, sharding_key, sharding_hash, properties, `body`,"+
				" delay_ms, status, attempts, next_attempt_at, lease_owner, last_error, msg_id, created_at, updated_at, sent_at)"+
				" VALUES ('t', UNHEX(SHA2(?, 256)), ?, '', '', UNHEX(SHA2('', 256)), '{}', 'x', 0, 2, 1, UTC_TIMESTAMP(6), '', '', 'm',"+
				" UTC_TIMESTAMP(6), UTC_TIMESTAMP(6) - INTERVAL ? MICROSECOND, UTC_TIMESTAMP(6))", r.key, r.key, r.age.Microseconds())
		}
		n, err := relayOn(t, v.DB, newFake()).Purge(ctx, 24*time.Hour, false, 1)
		if err != nil || n != 1 {
			t.Fatalf("%s: purged %d of 1: %v", v.Name, n, err)
		}
		var left []string
		if err := db.Select(&left, "SELECT biz_key FROM mq_log"); err != nil || len(left) != 1 || left[0] != "recent" {
			t.Fatalf("%s: left %q (%v), want the recent row only", v.Name, left, err)
		}
		db.MustExec("DELETE FROM mq_log")
	}
}
