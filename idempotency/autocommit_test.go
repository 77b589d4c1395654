package idempotency_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/sqldb"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

// TestMySQLStoresRefuseAutocommitOff: on a handle whose sessions run with
// autocommit=0 a claim or a completion would open a transaction nothing
// commits (its row invisible to every other consumer, its lock held on a
// pooled connection) and a status read would see one snapshot for ever.
// Every call refuses the handle with a clear error and writes nothing.
func TestMySQLStoresRefuseAutocommitOff(t *testing.T) {
	t.Parallel()
	db := testenv.MySQL(t)
	off := testenv.MySQLAutocommitOff(t, db)
	ctx := context.Background()
	group := testenv.Name(t, "g")
	g := mysqlGuard(t, off, group)
	refused := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, sqldb.ErrAutocommitOff) {
			t.Fatalf("%s: %v, want the handle refused", what, err)
		}
	}
	_, err := g.Claim(ctx, "k")
	refused("Claim", err)
	_, errs := g.ClaimBatch(ctx, []string{"k1", "k2"})
	for _, err := range errs {
		refused("ClaimBatch", err)
	}
	store, err := idempotency.NewMySQLStore(off)
	if err != nil {
		t.Fatal(err)
	}
	_, err = store.Lookup(ctx, "k", group)
	refused("Lookup", err)
	tg, err := idempotency.NewTxGuard(off, group+"-tx")
	if err != nil {
		t.Fatal(err)
	}
	ran := false
	_, err = tg.Do(ctx, "k", func(context.Context, *sqlx.Tx) error { ran = true; return nil })
	refused("TxGuard.Do", err)
	if ran {
		t.Fatal("TxGuard.Do ran the effect on a refused handle")
	}
	var n int
	if err := db.Get(&n, "SELECT COUNT(*) FROM mq_consume_log WHERE consumer_group IN (?, ?)", group, group+"-tx"); err != nil || n != 0 {
		t.Fatalf("%d rows written through the refused handle (%v)", n, err)
	}
}
