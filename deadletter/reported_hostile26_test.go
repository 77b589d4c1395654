package deadletter_test

import (
	"context"
	"strings"
	"testing"

	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/deadletter"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/migrations"
)

// TestParkBeforeMigration9FailsNamingTheColumn pins what this version
// does on a database migrated down to 8 (no reported column): a park
// fails, with the database's error naming the column, and records
// nothing (the consumer makes it a retry and, after five, a trouble
// alert); it never records a message that would then never be reported.
// Migrated up again, the same park records it, unreported.
func TestParkBeforeMigration9FailsNamingTheColumn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.MySQL(t)
	testenv.MigrateDownTo(t, db, 8)
	dead, err := deadletter.NewTable(db)
	if err != nil {
		t.Fatal(err)
	}
	dl := &consumer.DeadLetter{Group: "G", Topic: "T", MsgID: "m1", Attempts: 1, LastError: "boom", Cause: consumer.CausePermanent}
	inserted, err := dead.Park(ctx, dl)
	if err == nil || inserted || !strings.Contains(err.Error(), "reported") {
		t.Fatalf("park at schema 8: inserted %v, %v; want an error naming the reported column", inserted, err)
	}
	if err := dead.Reported(ctx, dl); err == nil {
		t.Fatal("reported at schema 8: no error")
	}
	if dls, err := dead.List(ctx, deadletter.Filter{}); err != nil || len(dls) != 0 {
		t.Fatalf("at schema 8: %d entries, %v; want none", len(dls), err)
	}
	if err := migrations.Up(ctx, db.DB); err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{true, true} {
		if inserted, err := dead.Park(ctx, dl); err != nil || inserted != want {
			t.Fatalf("park %d after migrating up: inserted %v, %v; want %v", i, inserted, err, want)
		}
	}
}
