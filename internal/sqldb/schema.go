package sqldb

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/jmoiron/sqlx"
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

// Check returns an error naming the first column that is not a binary
// string. The columns' types are read from the result of a query that
// returns no rows; once a check passed, Check returns nil without asking
// again. It is safe for concurrent use.
func (n *Names) Check(ctx context.Context, db *sqlx.DB) error {
	if n.ok.Load() {
		return nil
	}
	rows, err := db.QueryContext(ctx, n.query)
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
