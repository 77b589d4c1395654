package idempotency_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

// TestBatchCompleteLocksOnlyItsOwnRows: a batch completion (the
// consumer's completer sends up to 512 claims in one UPDATE) must lock
// the rows of its own claims only. On a small table (a new deployment:
// a few hundred rows) the optimizer scans the whole primary key for a
// long IN list, and under REPEATABLE READ such an UPDATE locks every row
// it reads: it then waits for any other transaction holding a row of the
// table, such as another group's TxGuard.Do whose business transaction is
// open, and holds up every claim behind it. The completions failed at
// the consumer's 10 s bound, logged as handled but not recorded.
func TestBatchCompleteLocksOnlyItsOwnRows(t *testing.T) {
	t.Parallel()
	db := testenv.MySQL(t)
	ctx := context.Background()
	g := mysqlGuard(t, db, "g")
	keys := func(prefix string, n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprint(prefix, i)
		}
		return out
	}
	old, errs := g.ClaimBatch(ctx, keys("old-", 300))
	for _, err := range append(errs, g.CompleteBatch(ctx, old)...) {
		if err != nil {
			t.Fatal(err)
		}
	}
	claims, errs := g.ClaimBatch(ctx, keys("new-", 512))
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Exec("ANALYZE TABLE mq_consume_log"); err != nil {
		t.Fatal(err)
	}
	// Another group's transactional guard, its transaction open until the
	// completion returned.
	release := openTxGuard(t, db, "other", "order-1")
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	errs = g.CompleteBatch(cctx, claims)
	cancel()
	if err := release(); err != nil {
		t.Error(err)
	}
	failed := 0
	for _, err := range errs {
		if err != nil {
			failed++
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d completions failed while another group's transaction held its own row: %v", failed, len(claims), errs[0])
	}
}

// openTxGuard runs TxGuard.Do of group for key on db and returns once its
// business transaction is open, holding the key's row; release lets it
// commit and returns Do's error.
func openTxGuard(t *testing.T, db *sqlx.DB, group, key string) (release func() error) {
	t.Helper()
	tg, err := idempotency.NewTxGuard(db, group)
	if err != nil {
		t.Fatal(err)
	}
	inTx, end, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		_, err := tg.Do(context.Background(), key, func(context.Context, *sqlx.Tx) error {
			close(inTx)
			<-end
			return nil
		})
		done <- err
	}()
	select {
	case <-inTx:
	case err := <-done:
		t.Fatalf("TxGuard.Do returned before its transaction was open: %v", err)
	}
	return func() error {
		close(end)
		return <-done
	}
}
