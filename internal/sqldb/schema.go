package sqldb

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync/atomic"
)

// Names checks that a table's name columns (topics, consumer groups) are
// binary strings, compared byte for byte as the broker compares names. On
// a schema from before migration 00004 they are case-insensitive: names
// differing only in case (groups Coupons and coupons) then share rows, and
// a store would take one group's done marker, outbox key or dead letter
// for the other's and skip its message without an error. The stores call
// [Names.Check] before the statements that rely on it.
type Names struct {
	table string
	cols  []string
	query string
	ok    atomic.Bool
}

// NewNames returns the check of cols of table (a valid table name).
func NewNames(table string, cols ...string) *Names {
	collations := make([]string, len(cols))
	for i, c := range cols {
		collations[i] = "COLLATION(MAX(" + c + "))"
	}
	return &Names{table: table, cols: cols,
		query: "SELECT " + strings.Join(collations, ", ") + " FROM " + Quote(table) + " WHERE FALSE"}
}

// Querier reads one row: a database handle, a transaction, a connection,
// or a caller's outbox.Execer (which has nothing more).
type Querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Check returns an error naming the first column that is not a binary
// string. The columns' collations are read through q, in the one row of
// an aggregate over no rows (a binary string's is "binary"); a store
// called with its caller's transaction reads through it, as on a handle
// of one connection, which that transaction holds, another connection
// would never come. Once a check passed, Check returns nil without asking
// again. It is safe for concurrent use.
func (n *Names) Check(ctx context.Context, q Querier) error {
	if n.ok.Load() {
		return nil
	}
	collations := make([]sql.NullString, len(n.cols))
	dest := make([]any, len(n.cols))
	for i := range collations {
		dest[i] = &collations[i]
	}
	if err := q.QueryRowContext(ctx, n.query).Scan(dest...); err != nil {
		return err
	}
	for i, c := range collations {
		if c.String != "binary" {
			return fmt.Errorf("sqldb: column %s.%s has collation %s, not a binary string: the table predates migration 00004, so names differing only in case would share rows; apply the migrations",
				n.table, n.cols[i], c.String)
		}
	}
	n.ok.Store(true)
	return nil
}
