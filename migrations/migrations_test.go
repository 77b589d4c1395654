package migrations_test

import (
	"context"
	"io/fs"
	"testing"

	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/migrations"
)

func tables(t *testing.T, db interface {
	SelectContext(context.Context, any, string, ...any) error
}) map[string]bool {
	t.Helper()
	var names []string
	if err := db.SelectContext(context.Background(), &names, "SHOW TABLES"); err != nil {
		t.Fatal(err)
	}
	m := map[string]bool{}
	for _, n := range names {
		m[n] = true
	}
	return m
}

func TestUpDownUpAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.MySQL(t) // applied Up once already
	want := []string{"mq_consume_log", "mq_dead_letter", "mq_log"}
	migrationFiles := latest(t)
	for _, name := range want {
		if !tables(t, db)[name] {
			t.Fatalf("table %s missing after up", name)
		}
	}
	p, err := migrations.NewProvider(db.DB)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.DownTo(ctx, 0); err != nil {
		t.Fatalf("down: %v", err)
	}
	for _, name := range want {
		if tables(t, db)[name] {
			t.Fatalf("table %s still there after down", name)
		}
	}
	if err := migrations.Up(ctx, db.DB); err != nil {
		t.Fatalf("up again: %v", err)
	}
	if err := migrations.Up(ctx, db.DB); err != nil {
		t.Fatalf("up when current: %v", err)
	}
	st, err := p.Status(ctx)
	if err != nil || len(st) != migrationFiles {
		t.Fatalf("status %v %v", st, err)
	}
	for _, s := range st {
		if s.State != "applied" {
			t.Fatalf("migration %d state %s", s.Source.Version, s.State)
		}
	}
}

// TestUpgradeKeepsRowsAndSeparatesNamesByCase applies the schema up to
// version 3, writes rows as an older version did, upgrades, and checks
// that the rows are intact and that names differing only in case no
// longer collide.
func TestUpgradeKeepsRowsAndSeparatesNamesByCase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.MySQL(t)
	testenv.MigrateDownTo(t, db, 3)
	db.MustExec(`INSERT INTO mq_log (topic, key_hash, biz_key, tag, sharding_key, sharding_hash, properties, body, delay_ms,
		status, attempts, next_attempt_at, lease_owner, last_error, msg_id, created_at, updated_at)
		VALUES ('OrderEvents', REPEAT('k', 32), 'k', '', '', REPEAT('s', 32), '{}', 'b', 0, 0, 0, NOW(6), '', '', '', NOW(6), NOW(6))`)
	db.MustExec(`INSERT INTO mq_consume_log (consumer_group, key_hash, biz_key, status, token, attempts, expires_at, created_at, updated_at)
		VALUES ('Coupons', REPEAT('k', 32), 'k', 2, 't', 0, NOW(6), NOW(6), NOW(6))`)
	dup := func() error {
		_, err := db.Exec(`INSERT INTO mq_consume_log (consumer_group, key_hash, biz_key, status, token, attempts, expires_at, created_at, updated_at)
			VALUES ('coupons', REPEAT('k', 32), 'k', 2, 't', 0, NOW(6), NOW(6), NOW(6))`)
		return err
	}
	if dup() == nil {
		t.Fatal("version 3 told Coupons and coupons apart; the test no longer shows the upgrade's point")
	}
	if err := migrations.Up(ctx, db.DB); err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	if err := dup(); err != nil {
		t.Fatalf("after the upgrade, group coupons still collides with Coupons: %v", err)
	}
	var topic string
	if err := db.Get(&topic, "SELECT topic FROM mq_log WHERE biz_key = 'k'"); err != nil || topic != "OrderEvents" {
		t.Fatalf("row lost or altered by the upgrade: %q %v", topic, err)
	}
	var n int
	if err := db.Get(&n, "SELECT COUNT(*) FROM mq_log WHERE topic = 'orderevents'"); err != nil || n != 0 {
		t.Fatalf("topic orderevents matches OrderEvents: %d %v", n, err)
	}
}

// TestUpDownUnderEveryDSNVariant rolls the schema all the way down and up
// again through every configuration a deploy step may connect with, the
// sql_modes among them (ANSI; ORACLE on MariaDB, where body is a reserved
// word).
func TestUpDownUnderEveryDSNVariant(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.MySQL(t)
	for _, v := range testenv.MySQLVariants(t, db) {
		p, err := migrations.NewProvider(v.DB.DB)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.DownTo(ctx, 0); err != nil {
			t.Fatalf("%s: down: %v", v.Name, err)
		}
		if err := migrations.Up(ctx, v.DB.DB); err != nil {
			t.Fatalf("%s: up: %v", v.Name, err)
		}
	}
}

// latest is the number of migration files, the version of the last one.
func latest(t *testing.T) int {
	t.Helper()
	files, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil || len(files) == 0 {
		t.Fatalf("migration files: %v %v", files, err)
	}
	return len(files)
}
