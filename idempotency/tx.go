package idempotency

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/internal/sqldb"
	"github.com/seed157d4c4d/reliablemq/internal/token"
)

// TxGuard is the transactional mode: the dedup row is inserted in the same
// MySQL transaction as the business effects, so the effects and the marker
// commit or roll back together. That gives exactly-once effects when the
// business data lives in the same database, with no lease: a crash rolls
// both back, and a concurrent duplicate waits on the row lock, then sees
// the committed marker. It is safe for concurrent use.
type TxGuard struct {
	db        *sqlx.DB
	group     string
	retention time.Duration
	q         queries
	takeOver  string
	state     string
	names     *sqldb.Names
}

// NewTxGuard returns a transactional guard for group on db.
func NewTxGuard(db *sqlx.DB, group string, opts ...TxGuardOption) (*TxGuard, error) {
	c := defaults()
	for _, o := range opts {
		o.applyTxGuard(&c)
	}
	err := c.check(false)
	if db == nil {
		err = errors.Join(err, errors.New("idempotency: nil db"))
	}
	if group == "" {
		err = errors.Join(err, errors.New("idempotency: empty group"))
	}
	err = errors.Join(err, checkGroup(group))
	if err != nil {
		return nil, err
	}
	return &TxGuard{
		db: db, group: group, retention: c.retention, q: newQueries(c.table), names: sqldb.NewNames(c.table, "consumer_group"),
		// Followed by the token and the retention (appendLease), the key
		// and " AND expires_at < UTC_TIMESTAMP(6)": an expired row (a done
		// marker past its retention, a claim past its lease or released)
		// is taken over in place.
		takeOver: "UPDATE " + sqldb.Quote(c.table) + " SET status = 2, attempts = 1, token = ",
		// Followed by the key and " LOCK IN SHARE MODE".
		state: "SELECT status, expires_at < UTC_TIMESTAMP(6) AS expired FROM " + sqldb.Quote(c.table),
	}, nil
}

// Do runs fn in a new transaction that also records key as done. When the
// key is already done (within retention) fn does not run and Do returns
// Done. Busy means a claim-mode [Guard] on the same group holds the key
// (its lease has not ended: a claim whose lease ended, or that was
// released, is taken over).
// fn's error rolls everything back and is returned as is; so is a commit
// error, after which the outcome is unknown (a redelivery settles it).
func (g *TxGuard) Do(ctx context.Context, key string, fn func(context.Context, *sqlx.Tx) error) (Outcome, error) {
	if key == "" {
		return 0, ErrEmptyKey
	}
	if err := checkKey(key); err != nil {
		return 0, err
	}
	if err := sqldb.CheckSession(ctx, g.db); err != nil {
		return 0, fmt.Errorf("idempotency: begin: %w", err)
	}
	if err := g.names.Check(ctx, g.db); err != nil {
		return 0, fmt.Errorf("idempotency: %w", err)
	}
	var tx *sqlx.Tx
	exclusive := false
	for attempt := 1; ; attempt++ {
		var o Outcome
		var err error
		tx, o, err = g.record(ctx, key, exclusive)
		if err == nil && o == Acquired {
			break
		}
		if tx != nil {
			tx.Rollback() //nolint:errcheck // nothing was written but the marker
		}
		switch {
		case err == nil:
			return o, nil
		case errors.Is(err, errExpired) && !exclusive:
			exclusive = true // take the row over: begin again, locking it first
		case !sqldb.IsDeadlock(err) || attempt >= 4:
			return 0, fmt.Errorf("idempotency: record %s: %w", quoted(key), err)
		}
		// A victim of InnoDB's deadlock detection had its transaction
		// rolled back before fn ran: begin again. Duplicates racing a
		// first delivery that rolled back can end so.
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	if err := fn(ctx, tx); err != nil {
		return Acquired, err
	}
	if err := tx.Commit(); err != nil {
		return Acquired, fmt.Errorf("idempotency: commit %s: %w", quoted(key), err)
	}
	return Acquired, nil
}

// errExpired says record found key's row expired, holding it shared: the
// take-over begins again, locking the row exclusively from the start.
var errExpired = errors.New("expired row")

// record begins Do's transaction and writes key's done marker in it:
// Acquired with the transaction, or Done or Busy (with the transaction to
// roll back) when the key has a live row. A duplicate's failed insert
// holds the row shared, and its state is read under that lock, so
// duplicates waiting on a first delivery read it together once it
// commits. An expired row (a done marker past its retention, a claim
// past its lease or released) is taken over only by an exclusive record,
// which locks the row before anything else: taken over under the shared
// lock, duplicates deadlocked, each wanting the row exclusive while the
// others held it shared.
func (g *TxGuard) record(ctx context.Context, key string, exclusive bool) (*sqlx.Tx, Outcome, error) {
	tx, err := g.db.BeginTxx(ctx, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("begin: %w", err)
	}
	h := sqldb.Hash(key)
	token := token.New()
	if exclusive {
		switch o, err := g.readState(ctx, tx, h, " FOR UPDATE"); {
		case errors.Is(err, sql.ErrNoRows): // purged meanwhile: insert it
		case errors.Is(err, errExpired):
			return g.takeOverRow(ctx, tx, h, token)
		default:
			return tx, o, err
		}
	}
	query, args := appendRow(statement(g.q.insert, key), g.group, h, key, statusDone, token, g.retention).Query()
	_, err = sqldb.Exec(ctx, tx, query, args...)
	if err == nil || !sqldb.IsDuplicate(err) {
		return tx, Acquired, err
	}
	o, err := g.readState(ctx, tx, h, " LOCK IN SHARE MODE")
	if errors.Is(err, sql.ErrNoRows) {
		err = errors.New("key removed while checking it; retry")
	}
	return tx, o, err
}

// readState reads key's row with lock (a locking read sees the latest
// committed row): Done or Busy for a live row, errExpired for an expired
// one.
func (g *TxGuard) readState(ctx context.Context, tx *sqlx.Tx, h []byte, lock string) (Outcome, error) {
	var row struct {
		Status  int  `db:"status"`
		Expired bool `db:"expired"`
	}
	query, args := appendKey(statement(g.state, ""), g.group, h).SQL(lock).Query()
	switch err := sqldb.Get(ctx, tx, &row, query, args...); {
	case err != nil:
		return 0, err
	case row.Expired:
		return 0, errExpired
	case row.Status == statusDone:
		return Done, nil
	}
	return Busy, nil
}

// takeOverRow makes key's expired row, which tx holds exclusively, this
// call's done marker.
func (g *TxGuard) takeOverRow(ctx context.Context, tx *sqlx.Tx, h []byte, token string) (*sqlx.Tx, Outcome, error) {
	query, args := appendKey(appendLease(statement(g.takeOver, ""), token, g.retention), g.group, h).
		SQL(" AND expires_at < UTC_TIMESTAMP(6)").Query()
	res, err := sqldb.Exec(ctx, tx, query, args...)
	if err != nil {
		return tx, 0, err
	}
	if n, err := res.RowsAffected(); err != nil {
		return tx, 0, err
	} else if n == 0 { // the lock kept the row as it was read
		return tx, 0, errors.New("expired row not taken over; retry")
	}
	return tx, Acquired, nil
}
