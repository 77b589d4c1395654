package sqldb_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/seed157d4c4d/reliablemq/internal/sqldb"
)

func TestStatementWritesValuesAsHexLiterals(t *testing.T) {
	q, args := sqldb.NewStatement(0).SQL("SELECT ").String("a'\\\x00é").SQL(", ").Bytes([]byte{0, 0xff}).
		SQL(", ").Int(-7).SQL(" IN (").Ints([]int64{1, 2}).SQL(")").Query()
	if want := `SELECT X'61275c00c3a9', X'00ff', -7 IN (1, 2)`; q != want || len(args) != 0 {
		t.Fatalf("got %q %v, want %q and no arguments", q, args, want)
	}
}

// TestStatementPassesValuesPastTheBudgetAsArguments: the values that would
// take the inlined bytes past the budget go as arguments, as they are;
// smaller values after them are still inlined while the budget allows.
func TestStatementPassesValuesPastTheBudgetAsArguments(t *testing.T) {
	big := bytes.Repeat([]byte{'x'}, sqldb.InlineBudget-10)
	bigger := strings.Repeat("y", 11)
	q, args := sqldb.NewStatement(1 << 30).Bytes(big).SQL(",").String(bigger).SQL(",").String("0123456789").SQL(",").String("z").Query()
	if !strings.HasSuffix(q, ",?,X'30313233343536373839',?") || len(args) != 2 {
		t.Fatalf("got ...%q with %d arguments", q[max(0, len(q)-60):], len(args))
	}
	if !bytes.Equal(args[0].([]byte), []byte(bigger)) || string(args[1].([]byte)) != "z" {
		t.Fatalf("arguments %q", args)
	}
	if len(q) > 2*sqldb.InlineBudget+100 {
		t.Fatalf("statement of %d bytes, past twice the budget", len(q))
	}
}
