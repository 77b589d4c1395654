package sqldb_test

import (
	"strings"
	"testing"

	"github.com/seed157d4c4d/reliablemq/internal/sqldb"
)

// TestStatementHostile5BudgetEdges: a value of exactly the budget is
// inlined, one byte more goes as an argument; values summing to exactly
// the budget are all inlined, the next (even empty) value too, one more
// byte is not; nothing but hex digits, placeholders and the code's SQL
// reaches the text.
func TestStatementHostile5BudgetEdges(t *testing.T) {
	b := sqldb.InlineBudget
	for _, tc := range []struct {
		sizes []int
		args  int
	}{
		{[]int{b - 1}, 0}, {[]int{b}, 0}, {[]int{b + 1}, 1},
		{[]int{b - 1, 1}, 0}, {[]int{b - 1, 2}, 1}, {[]int{b, 0}, 0}, {[]int{b, 1, 0}, 1},
		{[]int{b + 1, b}, 1}, {[]int{1, b}, 1}, {[]int{b / 2, b / 2, 0, 1}, 1},
	} {
		st := sqldb.NewStatement(0)
		for i, n := range tc.sizes {
			if i > 0 {
				st.SQL(",")
			}
			st.String(strings.Repeat("'", n))
		}
		q, args := st.Query()
		if len(args) != tc.args {
			t.Errorf("sizes %v: %d arguments, want %d", tc.sizes, len(args), tc.args)
		}
		if strings.Trim(q, "X'27,?") != "" || strings.Count(q, "?") != len(args) {
			t.Errorf("sizes %v: unexpected text in the statement", tc.sizes)
		}
		if len(q) > 2*b+100 {
			t.Errorf("sizes %v: %d bytes of text", tc.sizes, len(q))
		}
	}
}
