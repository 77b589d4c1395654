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

// TestStatementTextIsUTF8AndAlwaysInlined: text is made valid UTF-8 and
// cut at a character boundary, names its character set, and is inlined
// even past the budget (an argument would be read in the connection's
// character set).
func TestStatementTextIsUTF8AndAlwaysInlined(t *testing.T) {
	q, args := sqldb.NewStatement(0).Text("é\xff").Query()
	if q != `_utf8mb4 X'c3a9efbfbd'` || len(args) != 0 {
		t.Fatalf("inlined: %q %q", q, args)
	}
	long := strings.Repeat("é", sqldb.MaxText) // twice MaxText bytes
	q, args = sqldb.NewStatement(0).Bytes(make([]byte, sqldb.InlineBudget-10)).SQL(", ").Text(long).Query()
	hex := strings.Repeat("c3a9", (sqldb.MaxText-1)/2)
	if !strings.HasSuffix(q, ", _utf8mb4 X'"+hex+"'") || len(args) != 0 {
		t.Fatalf("past the budget: ...%q, %d arguments", q[len(q)-40:], len(args))
	}
}
