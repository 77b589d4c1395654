package main

import (
	"context"
	"fmt"
	"io/fs"
	"strings"
	"testing"

	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/migrations"
)

// TestMigrateUpListsWhatAppliedBeforeAFailure fails 00007 after 00006
// applied: the output names 00006 as applied (it stays so) and the error
// names the file that failed.
func TestMigrateUpListsWhatAppliedBeforeAFailure(t *testing.T) {
	t.Parallel()
	db := testenv.MySQL(t)
	testenv.MigrateDownTo(t, db, 5)
	db.MustExec("DROP TABLE mq_log") // 00007 alters it
	out, err := runCmd(t, "migrate", "-dsn", testenv.MySQLDSN(t, db), "up")
	if err == nil || !strings.Contains(out, "applied 00006_dead_letter_replay_of.sql") ||
		!strings.Contains(err.Error(), "00007_text_and_tags.sql failed") {
		t.Fatalf("error %v, output:\n%s", err, out)
	}
}

// TestMigrateUpOnANewerDatabase runs up against a database a newer
// release migrated: nothing to apply, and the output says why rather than
// "up to date".
func TestMigrateUpOnANewerDatabase(t *testing.T) {
	t.Parallel()
	db := testenv.MySQL(t)
	if err := migrations.Up(context.Background(), db.DB); err != nil {
		t.Fatal(err)
	}
	n := latestMigration(t)
	db.MustExec("INSERT INTO "+migrations.VersionTable+" (version_id, is_applied) VALUES (?, 1)", n+1)
	out := mustRun(t, fmt.Sprintf("newer than this binary's latest (%d)", n), "migrate", "-dsn", testenv.MySQLDSN(t, db), "up")
	if !strings.Contains(out, fmt.Sprintf("version %d", n+1)) {
		t.Fatalf("output does not name the database's version:\n%s", out)
	}
}

// latestMigration is the number of migration files, the version of the
// last one.
func latestMigration(t *testing.T) int {
	t.Helper()
	files, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil || len(files) == 0 {
		t.Fatalf("migration files: %v %v", files, err)
	}
	return len(files)
}
