package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"runtime"
	"sync"
	"weak"

	"github.com/jmoiron/sqlx"
)

// ErrAutocommitOff: the sessions of a database handle run with
// autocommit=0 (a DSN's autocommit=0, or the server's default). Every
// statement a store runs alone then opens a transaction that nothing
// commits: its writes stay invisible and hold their locks on that pooled
// connection, and its reads see one snapshot for ever. The stores refuse
// such a handle.
var ErrAutocommitOff = errors.New("sqldb: the database handle's sessions run with autocommit=0, so a statement run alone never commits; open it without autocommit=0")

// autocommitting holds the handles whose sessions were found to commit
// each statement run alone, by weak pointer, so a handle stays
// collectable; its entry goes with it.
var autocommitting sync.Map // weak.Pointer[sql.DB] -> struct{}

// CheckSession returns ErrAutocommitOff when h is a database handle whose
// sessions run with autocommit=0; the stores call it before a transaction
// of their own, and the helpers of this package before a statement run
// alone. The server is asked once per handle; a transaction or a caller's
// own handle is not checked (its owner commits).
func CheckSession(ctx context.Context, h any) error {
	var db *sql.DB
	switch v := h.(type) {
	case *sqlx.DB:
		db = v.DB
	case *sql.DB:
		db = v
	default:
		return nil
	}
	key := weak.Make(db)
	if _, ok := autocommitting.Load(key); ok {
		return nil
	}
	var on int
	if err := db.QueryRowContext(ctx, "SELECT @@autocommit").Scan(&on); err != nil {
		return err
	}
	if on == 0 {
		return ErrAutocommitOff
	}
	if _, loaded := autocommitting.LoadOrStore(key, struct{}{}); !loaded {
		runtime.AddCleanup(db, func(k weak.Pointer[sql.DB]) { autocommitting.Delete(k) }, key)
	}
	return nil
}
