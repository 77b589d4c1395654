package idempotency_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

func couponDB(t *testing.T) *sqlx.DB {
	t.Helper()
	db := testenv.MySQL(t)
	db.MustExec("CREATE TABLE coupon (order_id VARCHAR(64) NOT NULL, n INT NOT NULL)")
	return db
}

func issued(t *testing.T, db *sqlx.DB, order string) int {
	t.Helper()
	var n int
	if err := db.Get(&n, "SELECT COUNT(*) FROM coupon WHERE order_id = ?", order); err != nil {
		t.Fatal(err)
	}
	return n
}

func issue(order string) func(context.Context, *sqlx.Tx) error {
	return func(ctx context.Context, tx *sqlx.Tx) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO coupon (order_id, n) VALUES (?, 1)", order)
		return err
	}
}

func TestTxGuardCommitsEffectAndMarkerTogether(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := couponDB(t)
	g, err := idempotency.NewTxGuard(db, testenv.Name(t, "G"), idempotency.WithRetention(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	o, err := g.Do(ctx, "o-1", func(ctx context.Context, tx *sqlx.Tx) error {
		if err := issue("o-1")(ctx, tx); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) || o != idempotency.Acquired || issued(t, db, "o-1") != 0 {
		t.Fatalf("failed handler: %v %v, %d coupons; want rollback of effect and marker", o, err, issued(t, db, "o-1"))
	}
	for i, want := range []idempotency.Outcome{idempotency.Acquired, idempotency.Done, idempotency.Done} {
		o, err := g.Do(ctx, "o-1", issue("o-1"))
		if err != nil || o != want {
			t.Fatalf("delivery %d: %v %v, want %v", i, o, err, want)
		}
	}
	if n := issued(t, db, "o-1"); n != 1 {
		t.Fatalf("%d coupons, want 1", n)
	}
	time.Sleep(1200 * time.Millisecond)
	if o, err := g.Do(ctx, "o-1", issue("o-1")); err != nil || o != idempotency.Acquired {
		t.Fatalf("after retention: %v %v; documented to run again", o, err)
	}
}

func TestTxGuardConcurrentDuplicatesApplyOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := couponDB(t)
	db.SetMaxOpenConns(16)
	g, err := idempotency.NewTxGuard(db, testenv.Name(t, "G"))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 12 {
		wg.Go(func() {
			for _, order := range []string{"a", "b", "c"} {
				for try := 0; ; try++ { // a deadlock between duplicate inserts is a retry
					_, err := g.Do(ctx, order, func(ctx context.Context, tx *sqlx.Tx) error {
						time.Sleep(5 * time.Millisecond) // widen the race window
						return issue(order)(ctx, tx)
					})
					if err == nil {
						break
					}
					if try == 50 {
						t.Errorf("order %s: %v", order, err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	for _, order := range []string{"a", "b", "c"} {
		if n := issued(t, db, order); n != 1 {
			t.Errorf("order %s: %d coupons, want 1", order, n)
		}
	}
}

// TestTxGuardKeysOfEveryByte: the marker's key is written into the
// statements as a hex literal, whatever its bytes.
func TestTxGuardKeysOfEveryByte(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := couponDB(t)
	g, err := idempotency.NewTxGuard(db, testenv.Name(t, "G"))
	if err != nil {
		t.Fatal(err)
	}
	var all []byte
	for i := range 256 {
		all = append(all, byte(i))
	}
	for _, key := range []string{string(all), string(all[1:]), strings.Repeat(string(all), 60<<10/256)} {
		for i, want := range []idempotency.Outcome{idempotency.Acquired, idempotency.Done} {
			if o, err := g.Do(ctx, key, issue("o")); err != nil || o != want {
				t.Fatalf("key of %d bytes, delivery %d: %v %v, want %v", len(key), i, o, err, want)
			}
		}
	}
	var stored []byte
	if err := db.Get(&stored, "SELECT biz_key FROM mq_consume_log WHERE LENGTH(biz_key) = 256"); err != nil || string(stored) != string(all) {
		t.Fatalf("stored key %q, %v", stored, err)
	}
	if n := issued(t, db, "o"); n != 3 {
		t.Fatalf("%d effects, want 3", n)
	}
}
