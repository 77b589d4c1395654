package sqldb

import (
	"context"
	"database/sql"

	"github.com/jmoiron/sqlx"
)

// The stores send arguments only through statements they prepare
// themselves. A DSN's interpolateParams would otherwise write them into
// the statement's text, escaped with backslashes, and a client character
// set such as gbk, sjis or big5 reads a backslash after certain bytes as
// part of a multibyte character: the value then changes the statement. A
// prepared statement carries its arguments apart from the text, in any
// character set; it also keeps a large value within max_allowed_packet,
// where an interpolated one doubles in escaping.
//
// Without interpolateParams the driver prepares statements with arguments
// anyway, so these helpers cost nothing more there.

// preparer is a handle that can prepare: *sql.DB, *sql.Tx, *sql.Conn and
// sqlx's.
type preparer interface {
	PrepareContext(ctx context.Context, query string) (*sql.Stmt, error)
}

// Exec runs query with args on db. A handle that cannot prepare (a
// caller's own Execer) gets the arguments as they are. On a database
// handle whose sessions do not commit each statement, Exec, Get, Select
// and Scan return ErrAutocommitOff.
func Exec(ctx context.Context, db sqlx.ExecerContext, query string, args ...any) (sql.Result, error) {
	if err := CheckSession(ctx, db); err != nil {
		return nil, err
	}
	p, ok := db.(preparer)
	if len(args) == 0 || !ok {
		return db.ExecContext(ctx, query, args...)
	}
	st, err := p.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	return st.ExecContext(ctx, args...)
}

// Get is sqlx's GetContext, its arguments sent by a prepared statement.
func Get(ctx context.Context, db sqlx.QueryerContext, dest any, query string, args ...any) error {
	if err := CheckSession(ctx, db); err != nil {
		return err
	}
	p, ok := db.(preparer)
	if len(args) == 0 || !ok {
		return sqlx.GetContext(ctx, db, dest, query, args...)
	}
	st, err := sqlx.PreparexContext(ctx, p, query)
	if err != nil {
		return err
	}
	defer st.Close()
	return st.GetContext(ctx, dest, args...)
}

// Select is sqlx's SelectContext, its arguments sent by a prepared
// statement.
func Select(ctx context.Context, db sqlx.QueryerContext, dest any, query string, args ...any) error {
	if err := CheckSession(ctx, db); err != nil {
		return err
	}
	p, ok := db.(preparer)
	if len(args) == 0 || !ok {
		return sqlx.SelectContext(ctx, db, dest, query, args...)
	}
	st, err := sqlx.PreparexContext(ctx, p, query)
	if err != nil {
		return err
	}
	defer st.Close()
	return st.SelectContext(ctx, dest, args...)
}

// rowQueryer is what [Scan] reads from: a *sql.DB or *sql.Tx, sqlx's, or
// a caller's own handle.
type rowQueryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Scan reads the first row of query with args into dest
// ([sql.ErrNoRows] when there is none).
func Scan(ctx context.Context, db rowQueryer, query string, args []any, dest ...any) error {
	if err := CheckSession(ctx, db); err != nil {
		return err
	}
	p, ok := db.(preparer)
	if len(args) == 0 || !ok {
		return db.QueryRowContext(ctx, query, args...).Scan(dest...)
	}
	st, err := p.PrepareContext(ctx, query)
	if err != nil {
		return err
	}
	defer st.Close()
	return st.QueryRowContext(ctx, args...).Scan(dest...)
}
