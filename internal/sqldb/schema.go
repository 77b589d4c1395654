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
	query string
	ok    atomic.Bool
}

// NewNames returns the check of cols of table (a valid table name).
func NewNames(table string, cols ...string) *Names {
	return &Names{table: table, query: "SELECT " + strings.Join(cols, ", ") + " FROM " + Quote(table) + " LIMIT 0"}
}

// Querier runs a query: a database handle, a transaction or a connection.
type Querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// Check returns an error naming the first column that is not a binary
// string. The columns' types are read through q, from the result of a
// query that returns no rows; a store called with its caller's
// transaction reads through it, as on a handle of one connection, which
// that transaction holds, another connection would never come. Once a
// check passed, Check returns nil without asking again. It is safe for
// concurrent use.
func (n *Names) Check(ctx context.Context, q Querier) error {
	if n.ok.Load() {
		return nil
	}
	rows, err := q.QueryContext(ctx, n.query)
	if err != nil {
		return err
	}
	defer rows.Close()
	types, err := rows.ColumnTypes()
	if err != nil {
		return err
	}
	for _, ct := range types {
		switch typ := ct.DatabaseTypeName(); typ {
		case "VARBINARY", "BINARY", "BLOB", "TINYBLOB", "MEDIUMBLOB", "LONGBLOB":
		default:
			return fmt.Errorf("sqldb: column %s.%s is %s, not a binary string: the table predates migration 00004, so names differing only in case would share rows; apply the migrations",
				n.table, ct.Name(), typ)
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	n.ok.Store(true)
	return nil
}
