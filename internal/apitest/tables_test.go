package apitest_test

import (
	"context"
	"testing"

	"github.com/seed157d4c4d/reliablemq/deadletter"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

// TestReservedWordsWorkAsTableNames: WithTable accepts any plain
// identifier, reserved words included ("order", "group"), and the stores
// splice it into SQL unquoted. The constructor says yes and every
// statement then fails with a syntax error at run time: a consumer with
// such a guard retries every message forever (a store error per claim),
// a dead-letter table cannot park. Either quote the name or refuse it in
// the constructor.
func TestReservedWordsWorkAsTableNames(t *testing.T) {
	db := testenv.MySQL(t)
	ctx := context.Background()
	for _, q := range []string{"CREATE TABLE `group` LIKE mq_consume_log", "CREATE TABLE `order` LIKE mq_dead_letter"} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	s, err := idempotency.NewMySQLStore(db, idempotency.WithTable("group"))
	if err == nil {
		g, gerr := idempotency.NewGuard("g1", s)
		if gerr != nil {
			t.Fatal(gerr)
		}
		if _, cerr := g.Claim(ctx, "k1"); cerr != nil {
			t.Errorf("idempotency.WithTable(\"group\") accepted by NewMySQLStore, then Claim fails: %v", cerr)
		}
	}
	dl, err := deadletter.NewTable(db, deadletter.WithTable("order"))
	if err == nil {
		if _, lerr := dl.List(ctx, deadletter.Filter{Group: "g1"}); lerr != nil {
			t.Errorf("deadletter.WithTable(\"order\") accepted by NewTable, then List fails: %v", lerr)
		}
	}
}
