package idempotency_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

// deliverAtOnce runs n deliveries of order at once through g, each
// starting once all have begun, and returns how many were Acquired and
// the errors.
func deliverAtOnce(t *testing.T, g *idempotency.TxGuard, order string, n int, fn func(context.Context, *sqlx.Tx) error) (int32, []error) {
	t.Helper()
	var (
		wg       sync.WaitGroup
		start    = make(chan struct{})
		acquired atomic.Int32
		mu       sync.Mutex
		errs     []error
	)
	for range n {
		wg.Go(func() {
			<-start
			o, err := g.Do(context.Background(), order, fn)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
			} else if o == idempotency.Acquired {
				acquired.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	return acquired.Load(), errs
}

// TestTxGuardManyDuplicatesOfAnExpiredMarker: deliveries of a key whose
// done marker expired all hold its row shared and then want it exclusive
// to take it over; one takes it over and the others, once it commits,
// see Done. None may fail, nor run fn a second time.
func TestTxGuardManyDuplicatesOfAnExpiredMarker(t *testing.T) {
	t.Parallel()
	db, g := contendedTxGuard(t)
	for k := range 5 {
		order := fmt.Sprintf("e-%d", k)
		if _, err := g.Do(context.Background(), order, issue(order)); err != nil {
			t.Fatal(err)
		}
		db.MustExec("UPDATE mq_consume_log SET expires_at = UTC_TIMESTAMP(6) - INTERVAL 1 SECOND")
		db.MustExec("DELETE FROM coupon")
		acquired, errs := deliverAtOnce(t, g, order, 16, issue(order))
		if len(errs) > 0 || acquired != 1 || issued(t, db, order) != 1 {
			t.Fatalf("%s: %d acquired, %d coupons, errors %v; want 1, 1, none", order, acquired, issued(t, db, order), errs)
		}
	}
}

// TestTxGuardDuplicatesOfARolledBackFirstDelivery: the first delivery's
// fn fails while the others wait on its row; one of them must then run
// fn and the rest see Done, none failing.
func TestTxGuardDuplicatesOfARolledBackFirstDelivery(t *testing.T) {
	t.Parallel()
	db, g := contendedTxGuard(t)
	for k := range 5 {
		order := fmt.Sprintf("r-%d", k)
		var first atomic.Bool
		acquired, errs := deliverAtOnce(t, g, order, 8, func(ctx context.Context, tx *sqlx.Tx) error {
			if !first.Swap(true) {
				// Let the duplicates queue on the row, then fail. Polled
				// every 150 ms: MariaDB 10.11 refreshes its view of
				// transactions only after 100 ms without a read.
				for range 40 {
					var n int
					if err := db.Get(&n, "SELECT COUNT(*) FROM information_schema.INNODB_TRX t"+
						" JOIN information_schema.PROCESSLIST l ON l.ID = t.trx_mysql_thread_id"+
						" WHERE t.trx_state = 'LOCK WAIT' AND l.DB = DATABASE()"); err != nil {
						return err
					}
					if n >= 3 {
						break
					}
					time.Sleep(150 * time.Millisecond)
				}
				return errFirst
			}
			return issue(order)(ctx, tx)
		})
		var other []error
		for _, err := range errs {
			if !errors.Is(err, errFirst) {
				other = append(other, err)
			}
		}
		if len(other) > 0 || acquired != 1 || issued(t, db, order) != 1 {
			t.Fatalf("%s: %d acquired, %d coupons, errors %v; want 1 (the successor), 1, none but the first's", order,
				acquired, issued(t, db, order), errs)
		}
	}
}

var errFirst = errors.New("first delivery fails")

// contendedTxGuard returns a coupon database with room for 32 connections
// and a TxGuard on it.
func contendedTxGuard(t *testing.T) (*sqlx.DB, *idempotency.TxGuard) {
	t.Helper()
	db := couponDB(t)
	db.SetMaxOpenConns(32)
	g, err := idempotency.NewTxGuard(db, testenv.Name(t, "G"))
	if err != nil {
		t.Fatal(err)
	}
	return db, g
}
