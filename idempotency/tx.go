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
	for attempt := 1; ; attempt++ {
		var o Outcome
		var err error
		tx, o, err = g.record(ctx, key)
		if err == nil && o == Acquired {
			break
		}
		if tx != nil {
			tx.Rollback() //nolint:errcheck // nothing was written but the marker
		}
		if err == nil {
			return o, nil
		}
		// A victim of InnoDB's deadlock detection had its transaction
		// rolled back before fn ran: begin again. Duplicates racing a
		// first delivery that rolled back can end so.
		if !sqldb.IsDeadlock(err) || attempt == 3 {
			return 0, fmt.Errorf("idempotency: record %s: %w", quoted(key), err)
		}
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

// record begins Do's transaction and writes key's done marker in it:
// Acquired with the transaction, or Done or Busy (with the transaction to
// roll back) when the key has a row that is not an expired done marker.
// The row's state is read under the shared lock the duplicate insert
// took, so duplicates waiting on a first delivery's row read it together
// once it commits; only an expired marker is taken over (an exclusive
// lock), as a duplicate's exclusive lock after the shared one deadlocked
// with the other duplicates holding theirs.
func (g *TxGuard) record(ctx context.Context, key string) (*sqlx.Tx, Outcome, error) {
	tx, err := g.db.BeginTxx(ctx, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("begin: %w", err)
	}
	h := sqldb.Hash(key)
	token := token.New()
	query, args := appendRow(statement(g.q.insert, key), g.group, h, key, statusDone, token, g.retention).Query()
	_, err = sqldb.Exec(ctx, tx, query, args...)
	if err == nil || !sqldb.IsDuplicate(err) {
		return tx, Acquired, err
	}
	var row struct {
		Status  int  `db:"status"`
		Expired bool `db:"expired"`
	}
	query, args = appendKey(statement(g.state, ""), g.group, h).SQL(" LOCK IN SHARE MODE").Query()
	switch err = sqldb.Get(ctx, tx, &row, query, args...); {
	case errors.Is(err, sql.ErrNoRows):
		return tx, 0, errors.New("key removed while checking it; retry")
	case err != nil:
		return tx, 0, err
	case !row.Expired && row.Status == statusDone:
		return tx, Done, nil
	case !row.Expired:
		return tx, Busy, nil
	}
	// An expired row: a done marker past its retention, or the claim of
	// a claim-mode Guard whose lease ended (its holder died) or that it
	// released; the claim-mode guard would take it over as well.
	query, args = appendKey(appendLease(statement(g.takeOver, ""), token, g.retention), g.group, h).
		SQL(" AND expires_at < UTC_TIMESTAMP(6)").Query()
	res, err := sqldb.Exec(ctx, tx, query, args...)
	if err != nil {
		return tx, 0, err
	}
	if n, err := res.RowsAffected(); err != nil {
		return tx, 0, err
	} else if n == 0 { // the shared lock kept the row as it was read
		return tx, 0, errors.New("expired row not taken over; retry")
	}
	return tx, Acquired, nil
}
