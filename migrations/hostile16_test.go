package migrations_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/migrations"
)

// waitForWaiters blocks until n sessions on db's database wait in the
// server for a lock (a table's metadata lock or a named lock), and fails
// the test after a minute.
func waitForWaiters(t *testing.T, db *sqlx.DB, n int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		var waiting int
		if err := db.Get(&waiting, `SELECT COUNT(*) FROM information_schema.PROCESSLIST
			WHERE DB = DATABASE() AND (STATE LIKE '%metadata lock%' OR STATE LIKE '%User lock%')`); err != nil {
			t.Fatal(err)
		}
		if waiting >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions waiting for a lock after a minute, want %d", waiting, n)
		}
		<-tick.C
	}
}

// TestConcurrentUpsTakeTurns runs two Ups of one database at once, as two
// instances deploying together do: the first is held inside migration
// 00004 (an open transaction has read mq_log) while the second starts.
// Both must succeed and apply each migration once.
func TestConcurrentUpsTakeTurns(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.MySQL(t)
	testenv.MigrateDownTo(t, db, 3)
	blocker, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Rollback()
	var n int
	if err := blocker.Get(&n, "SELECT COUNT(*) FROM mq_log"); err != nil { // holds mq_log's metadata lock
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	up := func(i int) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = migrations.Up(ctx, testenv.MySQLWith(t, db, func(*mysql.Config) {}).DB)
		}()
	}
	up(0)
	waitForWaiters(t, db, 1) // the first waits in 00004's ALTER TABLE mq_log
	up(1)
	waitForWaiters(t, db, 2) // the second waits too: for the lock, or (unlocked) in the same ALTER
	if err := blocker.Rollback(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("a concurrent up failed: %v", err)
	}
	var versions []int64
	if err := db.Select(&versions, "SELECT version_id FROM "+migrations.VersionTable+" WHERE version_id > 0 ORDER BY id"); err != nil {
		t.Fatal(err)
	}
	if n := latest(t); len(versions) != n {
		t.Fatalf("versions recorded %v, want 1 to %d once each", versions, n)
	}
}

// TestDownUnderLooseSQLModeFailsInsteadOfCutting rolls back 00007 on a
// session whose sql_mode is loose, with a dead letter whose tag is longer
// than the 255 bytes the older column holds: the down must fail, as its
// file says, and the tag stay whole, where a loose session would cut it.
func TestDownUnderLooseSQLModeFailsInsteadOfCutting(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	loose := testenv.MySQLWith(t, testenv.MySQL(t), func(c *mysql.Config) {
		c.Params = map[string]string{"sql_mode": "''"}
	})
	tag := strings.Repeat("T", 300)
	loose.MustExec(`INSERT INTO mq_dead_letter (consumer_group, topic, msg_id, biz_keys, tags, sharding_key, sharding_hash,
		properties, `+"`body`"+`, attempts, last_error, cause, status, reason, created_at, updated_at)
		VALUES ('g', 't', 'm', 'k', ?, '', REPEAT('s', 32), '{}', 'b', 1, '', 'retries', 1, '', NOW(6), NOW(6))`, tag)
	p, err := migrations.NewProvider(loose.DB)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.DownTo(ctx, 6); err == nil {
		t.Error("down of 00007 succeeded with a 300-byte tag")
	}
	var got string
	if err := loose.Get(&got, "SELECT tags FROM mq_dead_letter"); err != nil {
		t.Fatal(err)
	}
	if got != tag {
		t.Fatalf("tag cut to %d bytes by the down", len(got))
	}
}

// TestMigrationsRestoreTheSessionSQLMode runs Up and Status on a pool of
// one connection whose DSN sets a sql_mode: afterwards the connection
// still has it.
func TestMigrationsRestoreTheSessionSQLMode(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.MySQLWith(t, testenv.MySQL(t), func(c *mysql.Config) {
		c.Params = map[string]string{"sql_mode": "'ANSI_QUOTES,NO_BACKSLASH_ESCAPES'"}
	})
	db.SetMaxOpenConns(1)
	var before string
	if err := db.Get(&before, "SELECT @@SESSION.sql_mode"); err != nil {
		t.Fatal(err)
	}
	if err := migrations.Up(ctx, db.DB); err != nil {
		t.Fatal(err)
	}
	p, err := migrations.NewProvider(db.DB)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Status(ctx); err != nil {
		t.Fatal(err)
	}
	var after string
	if err := db.Get(&after, "SELECT @@SESSION.sql_mode"); err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Fatalf("sql_mode %q after the migrations, was %q", after, before)
	}
}

// TestStatusUnderParseTimeOffAndAnotherZone applies the last migration on
// a session eight hours ahead of UTC whose handle has parseTime off, as an
// application's may: Status must work there (it failed to scan the time),
// and say when in UTC the migration was applied (it gave the session's
// wall clock).
func TestStatusUnderParseTimeOffAndAnotherZone(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.MySQL(t)
	east := testenv.MySQLWith(t, db, func(c *mysql.Config) {
		c.ParseTime = false
		c.Params = map[string]string{"time_zone": "'+08:00'"}
	})
	p, err := migrations.NewProvider(east.DB)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Down(ctx); err != nil {
		t.Fatal(err)
	}
	utcNow := func() time.Time {
		var s string
		if err := db.Get(&s, "SELECT CAST(UTC_TIMESTAMP() AS CHAR)"); err != nil {
			t.Fatal(err)
		}
		at, err := time.Parse(time.DateTime, s)
		if err != nil {
			t.Fatal(err)
		}
		return at
	}
	before := utcNow()
	if _, err := p.Up(ctx); err != nil {
		t.Fatal(err)
	}
	after := utcNow()
	st, err := p.Status(ctx)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	last := st[len(st)-1]
	if at := last.AppliedAt; at.Before(before) || at.After(after) {
		t.Fatalf("migration %d applied at %v, but it ran between %v and %v (UTC)", last.Source.Version, at, before, after)
	}
}
