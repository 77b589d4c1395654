package migrations_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/migrations"
)

// TestAWaitForTheLockNamesItsHolder holds the migration lock on another
// connection (a run in progress, or a crashed one's connection): Up
// reports its wait as it begins, with the holder's connection id, and
// when ctx ends the error names the holder too.
func TestAWaitForTheLockNamesItsHolder(t *testing.T) {
	t.Parallel()
	db := testenv.MySQL(t)
	testenv.MigrateDownTo(t, db, 6) // Up has work to do
	ctx := context.Background()
	conn, err := db.Connx(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var holder int64
	if err := conn.GetContext(ctx, &holder, "SELECT CONNECTION_ID()"); err != nil {
		t.Fatal(err)
	}
	var got int
	if err := conn.GetContext(ctx, &got, "SELECT GET_LOCK(CONCAT('reliablemq_migrate:', SHA1(DATABASE())), 0)"); err != nil || got != 1 {
		t.Fatalf("GET_LOCK: %d, %v", got, err)
	}
	var reported []int64
	p, err := migrations.NewProvider(db.DB, migrations.OnLockWait(func(h int64) { reported = append(reported, h) }))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err = p.Up(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), fmt.Sprint("held by MySQL connection ", holder)) {
		t.Fatalf("Up while the lock is held: %v", err)
	}
	if len(reported) == 0 || reported[0] != holder {
		t.Fatalf("waits reported %v, want the holder %d first", reported, holder)
	}
}
