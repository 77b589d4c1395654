package idempotency_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

// TestTxGuardConcurrentDuplicateSeesMarker: TxGuard's doc says a
// concurrent duplicate waits on the row lock, then sees the committed
// marker. Three deliveries of a key at once (the coupon example's case)
// must give one Acquired and two Done, none an error: the duplicates used
// to take the row's shared lock and then each want it exclusive to check
// for a take-over, and InnoDB killed one as a deadlock victim (Error 1213).
func TestTxGuardConcurrentDuplicateSeesMarker(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := couponDB(t)
	db.SetMaxOpenConns(8)
	g, err := idempotency.NewTxGuard(db, testenv.Name(t, "G"))
	if err != nil {
		t.Fatal(err)
	}
	for k := range 10 {
		order := fmt.Sprintf("o-%d", k)
		var wg sync.WaitGroup
		var acquired, done atomic.Int32
		for range 3 {
			wg.Go(func() {
				o, err := g.Do(ctx, order, func(ctx context.Context, tx *sqlx.Tx) error {
					time.Sleep(20 * time.Millisecond) // the duplicates queue on the row meanwhile
					return issue(order)(ctx, tx)
				})
				switch {
				case err != nil:
					t.Errorf("%s: %v %v; want Acquired or Done, no error", order, o, err)
				case o == idempotency.Acquired:
					acquired.Add(1)
				case o == idempotency.Done:
					done.Add(1)
				}
			})
		}
		wg.Wait()
		if n := issued(t, db, order); n != 1 || acquired.Load() != 1 {
			t.Errorf("%s: %d coupons, %d acquired, %d done; want 1, 1", order, n, acquired.Load(), done.Load())
		}
	}
}
