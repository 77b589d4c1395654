package idempotency

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/internal/sqldb"
)

const (
	statusProcessing = 1
	statusDone       = 2
)

// MySQLStore keeps claims in a MySQL/MariaDB table with a primary key on
// (consumer group, SHA-256 of the key); the key itself is stored verbatim.
// Times come from the database clock, so consumers on machines with skewed
// clocks agree on lease expiry. Claiming a new key, completing and
// releasing are one single-row statement each on the primary key; claiming
// a key that has a row takes one or two more.
type MySQLStore struct {
	db    *sqlx.DB
	table string
	q     queries
	// names refuses a table whose groups compare case-insensitively.
	names *sqldb.Names
}

// queries are the statements' fixed parts; the values are written in by
// [sqldb.Statement] (one round trip each, no prepared statement).
type queries struct {
	insert, takeOver, status, complete, release, forget, purgeKeys, purge string
	// The batch statements' fixed parts (see mysql_batch.go).
	batchTakeOver, batchStatus, batchMarked, batchComplete string
}

// NewMySQLStore returns a store on db.
func NewMySQLStore(db *sqlx.DB, opts ...MySQLOption) (*MySQLStore, error) {
	c := defaults()
	for _, o := range opts {
		o.applyMySQL(&c)
	}
	err := c.check(false)
	if db == nil {
		err = errors.Join(err, errors.New("idempotency: nil db"))
	}
	if err != nil {
		return nil, err
	}
	return &MySQLStore{db: db, table: c.table, q: newQueries(c.table), names: sqldb.NewNames(c.table, "consumer_group")}, nil
}

func newQueries(table string) queries {
	t := sqldb.Quote(table)
	return queries{
		// Followed by rows (appendRow).
		insert: "INSERT INTO " + t + " (consumer_group, key_hash, biz_key, status, token, attempts, expires_at, created_at, updated_at) VALUES ",
		// Followed by the token, the lease and the key (appendLease,
		// appendKey) and " AND expires_at < UTC_TIMESTAMP(6)".
		// Assignments run left to right: attempts reads the old status.
		// LAST_INSERT_ID(expr) hands the new count back in the OK packet.
		takeOver: "UPDATE " + t + " SET attempts = LAST_INSERT_ID(IF(status = 2, 1, attempts + 1)), status = 1, token = ",
		status:   "SELECT status FROM " + t,
		// Followed by the retention, the key and the claim (appendHeld).
		complete: "UPDATE " + t + " SET status = 2, attempts = 0, updated_at = UTC_TIMESTAMP(6), expires_at = UTC_TIMESTAMP(6) + INTERVAL ",
		// The token goes with the claim: a Complete or Release by the old
		// holder then finds nothing (ErrLostClaim), as on Redis.
		release: "UPDATE " + t + " SET expires_at = '1970-01-02 00:00:00', token = '', updated_at = UTC_TIMESTAMP(6)",
		forget:  "DELETE FROM " + t,
		// The purge picks its rows with a plain (non-locking) read, then
		// deletes them by primary key, rechecking the condition. One
		// locking DELETE ... LIMIT scans the whole table when most rows
		// are expired (and reads the first unexpired row after the range
		// otherwise): under REPEATABLE READ it waited for any open TxGuard
		// transaction's row, of any group, and meanwhile held up every
		// claim. A single-table DELETE takes no index hint; the
		// multi-table form does.
		purgeKeys: "SELECT consumer_group, key_hash FROM " + t + " WHERE expires_at < UTC_TIMESTAMP(6) - INTERVAL ? MICROSECOND AND status = ? LIMIT ?",
		purge:     "DELETE p FROM " + t + " AS p FORCE INDEX (PRIMARY) WHERE (p.consumer_group, p.key_hash) IN (",

		// A held row (lease or retention not over) is left as it is; a
		// free one is taken over as takeOver does. Assignments run left to
		// right, so expires_at, which every condition reads, goes last and
		// attempts reads the old status.
		batchTakeOver: " ON DUPLICATE KEY UPDATE" +
			" attempts = IF(expires_at < UTC_TIMESTAMP(6), IF(status = 2, 1, attempts + 1), attempts)," +
			" status = IF(expires_at < UTC_TIMESTAMP(6), 1, status)," +
			" token = IF(expires_at < UTC_TIMESTAMP(6), VALUES(token), token)," +
			" updated_at = IF(expires_at < UTC_TIMESTAMP(6), UTC_TIMESTAMP(6), updated_at)," +
			" expires_at = IF(expires_at < UTC_TIMESTAMP(6), VALUES(expires_at), expires_at)",
		batchStatus: "SELECT key_hash, token, status, attempts FROM " + t + " WHERE consumer_group = ",
		batchMarked: "SELECT key_hash FROM " + t + " WHERE consumer_group = ",
		// FORCE INDEX: a long IN list on a small table is otherwise read by
		// a scan of the whole primary key, which under REPEATABLE READ locks
		// every row of the table (other groups' included) and waits for any
		// transaction holding one, such as a TxGuard's.
		batchComplete: "UPDATE " + t + " FORCE INDEX (PRIMARY) SET status = 2, attempts = 0, updated_at = UTC_TIMESTAMP(6)," +
			" expires_at = UTC_TIMESTAMP(6) + INTERVAL ",
	}
}

// statement starts a statement on a store's table with room for a key.
func statement(fixed, key string) *sqldb.Statement {
	return sqldb.NewStatement(len(fixed) + 2*len(key) + 300).SQL(fixed)
}

// appendRow appends one row of the insert's VALUES: key held by token
// with status for d from now.
func appendRow(st *sqldb.Statement, group string, hash []byte, key string, status int, token string, d time.Duration) *sqldb.Statement {
	return st.SQL("(").String(group).SQL(", ").Bytes(hash).SQL(", ").String(key).SQL(", ").Int(int64(status)).
		SQL(", ").String(token).SQL(", 1, UTC_TIMESTAMP(6) + INTERVAL ").Int(d.Microseconds()).
		SQL(" MICROSECOND, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))")
}

// appendLease appends the new token and its lease of a take-over.
func appendLease(st *sqldb.Statement, token string, d time.Duration) *sqldb.Statement {
	return st.String(token).SQL(", expires_at = UTC_TIMESTAMP(6) + INTERVAL ").Int(d.Microseconds()).
		SQL(" MICROSECOND, updated_at = UTC_TIMESTAMP(6)")
}

// appendKey appends the condition on a key's row (its primary key).
func appendKey(st *sqldb.Statement, group string, hash []byte) *sqldb.Statement {
	return st.SQL(" WHERE consumer_group = ").String(group).SQL(" AND key_hash = ").Bytes(hash)
}

// appendHeld appends the condition on a key's row still held by token.
func appendHeld(st *sqldb.Statement, group string, hash []byte, token string) *sqldb.Statement {
	return appendKey(st, group, hash).SQL(" AND token = ").String(token).SQL(" AND status = 1")
}

// maxKey is what the table's biz_key column (a BLOB) holds.
const maxKey = 65535

// checkKey refuses a key the table cannot hold: a strict session would
// fail its statement, and a loose one would store it cut.
func checkKey(key string) error {
	if len(key) > maxKey {
		return fmt.Errorf("%w: %d bytes, over the %d a MySQL store holds", ErrKeyTooLong, len(key), maxKey)
	}
	return nil
}

// maxGroup is what the table's consumer_group column (VARBINARY(255))
// holds. A longer group is refused: a session that is not strict would
// store it cut, and no later statement naming the whole group would find
// its rows (a claim acquired, then never completed; a marker never read).
const maxGroup = 255

func checkGroup(group string) error {
	if len(group) > maxGroup {
		return fmt.Errorf("idempotency: group of %d bytes, over the %d a MySQL store holds", len(group), maxGroup)
	}
	return nil
}

// errEmptyToken refuses an empty token: a released claim's row holds
// one, so a Complete with it would mark a key done whose effect never ran,
// and a Release or Forget would free or remove a key it does not hold.
var errEmptyToken = errors.New("idempotency: empty token (the MySQL store's released claims hold it)")

// Claim implements [Store].
func (s *MySQLStore) Claim(ctx context.Context, group, key, token string, lease time.Duration) (Outcome, int, error) {
	if token == "" {
		return 0, 0, errEmptyToken
	}
	if err := errors.Join(checkGroup(group), checkKey(key)); err != nil {
		return 0, 0, err
	}
	if err := s.names.Check(ctx, s.db); err != nil {
		return 0, 0, fmt.Errorf("idempotency: claim: %w", err)
	}
	h := sqldb.Hash(key)
	insert, insertArgs := appendRow(statement(s.q.insert, key), group, h, key, statusProcessing, token, lease).Query()
	var takeOver, status string
	var takeOverArgs, statusArgs []any
	for range 3 { // a purge may remove the row between two statements
		_, err := sqldb.Exec(ctx, s.db, insert, insertArgs...)
		if err == nil {
			return Acquired, 1, nil
		}
		if !sqldb.IsDuplicate(err) {
			return 0, 0, err
		}
		if takeOver == "" { // the key has a row: built only now
			takeOver, takeOverArgs = appendKey(appendLease(statement(s.q.takeOver, ""), token, lease), group, h).
				SQL(" AND expires_at < UTC_TIMESTAMP(6)").Query()
			status, statusArgs = appendKey(statement(s.q.status, ""), group, h).Query()
		}
		res, err := sqldb.Exec(ctx, s.db, takeOver, takeOverArgs...)
		if err != nil {
			return 0, 0, err
		}
		if n, err := res.RowsAffected(); err != nil {
			return 0, 0, err
		} else if n == 1 {
			attempts, err := res.LastInsertId()
			return Acquired, int(attempts), err
		}
		var st int
		err = sqldb.Get(ctx, s.db, &st, status, statusArgs...)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			continue
		case err != nil:
			return 0, 0, err
		case st == statusDone:
			return Done, 0, nil
		default:
			return Busy, 0, nil
		}
	}
	return 0, 0, errors.New("key removed repeatedly while claiming")
}

// Complete implements [Store].
func (s *MySQLStore) Complete(ctx context.Context, group, key, token string, retain time.Duration) error {
	if token == "" {
		return errEmptyToken
	}
	st := statement(s.q.complete, "").Int(retain.Microseconds()).SQL(" MICROSECOND")
	return s.exec1(ctx, appendHeld(st, group, sqldb.Hash(key), token))
}

// Release implements [Store].
func (s *MySQLStore) Release(ctx context.Context, group, key, token string, forget bool) error {
	if token == "" {
		return errEmptyToken
	}
	if forget {
		return s.exec1(ctx, appendHeld(statement(s.q.forget, ""), group, sqldb.Hash(key), token))
	}
	return s.exec1(ctx, appendHeld(statement(s.q.release, ""), group, sqldb.Hash(key), token))
}

func (s *MySQLStore) exec1(ctx context.Context, st *sqldb.Statement) error {
	query, args := st.Query()
	res, err := sqldb.Exec(ctx, s.db, query, args...)
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n != 1 {
		return ErrLostClaim
	}
	return nil
}

// maxPurgeRound bounds the keys one purge round reads and then lists in
// its DELETE. The list grows with the round: past the statement's inline
// budget each key goes as two placeholders, and a round of some 33,000
// keys or more exceeded the server's 65,535 placeholders per statement
// (error 1390), so a large batch failed outright. 1,000 keys of the
// longest group stay near the inline budget.
const maxPurgeRound = 1000

// Purge deletes, batch rows at a time, done markers past their retention
// and claims whose lease ended more than abandonedAfter ago (their attempt
// counts go with them). It uses the index on expires_at; run it from a
// scheduled job, not the hot path. It returns the number of rows deleted.
// A batch over [maxPurgeRound] runs as rounds of that many rows.
func (s *MySQLStore) Purge(ctx context.Context, abandonedAfter time.Duration, batch int) (int64, error) {
	if batch <= 0 {
		return 0, fmt.Errorf("idempotency: purge batch %d <= 0", batch)
	}
	if abandonedAfter < 0 {
		// It would reach claims whose lease still runs: their keys would
		// be claimed again while their handlers run.
		return 0, fmt.Errorf("idempotency: purge abandonedAfter %v < 0", abandonedAfter)
	}
	batch = min(batch, maxPurgeRound)
	var total int64
	for _, p := range []struct {
		status int
		after  time.Duration
	}{{statusDone, 0}, {statusProcessing, abandonedAfter}} {
		for {
			var keys []struct {
				Group string `db:"consumer_group"`
				Hash  []byte `db:"key_hash"`
			}
			if err := sqldb.Select(ctx, s.db, &keys, s.q.purgeKeys, p.after.Microseconds(), p.status, batch); err != nil {
				return total, fmt.Errorf("idempotency: purge: %w", err)
			}
			if len(keys) == 0 {
				break
			}
			st := sqldb.NewStatement(len(s.q.purge) + len(keys)*150 + 200).SQL(s.q.purge)
			for i, k := range keys {
				if i > 0 {
					st.SQL(", ")
				}
				st.SQL("(").String(k.Group).SQL(", ").Bytes(k.Hash).SQL(")")
			}
			query, args := st.SQL(") AND p.expires_at < UTC_TIMESTAMP(6) - INTERVAL ").Int(p.after.Microseconds()).
				SQL(" MICROSECOND AND p.status = ").Int(int64(p.status)).Query()
			res, err := sqldb.Exec(ctx, s.db, query, args...)
			if err != nil {
				return total, fmt.Errorf("idempotency: purge: %w", err)
			}
			n, err := res.RowsAffected()
			if err != nil {
				return total, fmt.Errorf("idempotency: purge: %w", err)
			}
			total += n
			if len(keys) < batch || n == 0 {
				break
			}
		}
	}
	return total, nil
}
