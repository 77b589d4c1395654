package main

import (
	"context"
	"strings"
	"testing"

	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/migrations"
)

// TestMigrateStatusWritesNothing runs migrate status on a database
// never migrated (another application's, or one named by mistake): it
// lists every migration as pending and leaves the database as it was,
// where it created the version table.
func TestMigrateStatusWritesNothing(t *testing.T) {
	t.Parallel()
	db := testenv.MySQL(t)
	p, err := migrations.NewProvider(db.DB)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.DownTo(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	db.MustExec("DROP TABLE " + migrations.VersionTable)
	out := mustRun(t, "00007_text_and_tags.sql", "migrate", "-dsn", testenv.MySQLDSN(t, db), "status")
	if n, want := strings.Count(out, "pending"), latestMigration(t); n != want {
		t.Fatalf("status printed %d pending migrations, want %d:\n%s", n, want, out)
	}
	var tables []string
	if err := db.Select(&tables, "SHOW TABLES"); err != nil {
		t.Fatal(err)
	}
	if len(tables) != 0 {
		t.Fatalf("status left tables %v in a database never migrated", tables)
	}
}
