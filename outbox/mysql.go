package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/internal/sqldb"
)

type queries struct {
	lockKey, insert, confirm, replay, get, list, selectDue, selectUnconfirmed, claimed, predecessor,
	markSent, retryLater, markDead, release, giveUp, purge, pending, dead,
	insertSent, insertAborted, statusOf, idOf, insertClaimed, claimLocked, topics, byKey string
}

// columns reads times as text (see sqldb): a DATETIME the driver parses in
// a loc with DST would shift inside the zone's gap hour.
const columns = "id, topic, biz_key, tag, sharding_key, properties, body, delay_ms, status, attempts," +
	" CAST(next_attempt_at AS CHAR) AS next_attempt_at, last_error, msg_id, CAST(created_at AS CHAR) AS created_at," +
	" CAST(updated_at AS CHAR) AS updated_at, CAST(sent_at AS CHAR) AS sent_at"

func newQueries(table string) queries {
	t, order := sqldb.Quote(table), sqldb.Quote(table+"_order")
	return queries{
		// Takes the key's row lock, creating the row on first use (on a
		// duplicate, ON DUPLICATE KEY UPDATE takes an exclusive lock): a
		// second transaction enqueueing the key waits here until the first
		// commits or rolls back. Affected rows are not read.
		lockKey: "INSERT INTO " + order + " (sharding_hash) VALUES (?) ON DUPLICATE KEY UPDATE sharding_hash = sharding_hash",
		insert: "INSERT INTO " + t + " (topic, key_hash, biz_key, tag, sharding_key, sharding_hash, properties, body, delay_ms," +
			" status, attempts, next_attempt_at, lease_owner, last_error, msg_id, created_at, updated_at)" +
			" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, UTC_TIMESTAMP(6), '', '', '', UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))",
		confirm: "UPDATE " + t + " SET status = 2, updated_at = UTC_TIMESTAMP(6)" +
			" WHERE topic = ? AND key_hash = ? AND biz_key = ? AND status IN (0, 1)",
		replay: "UPDATE " + t + " SET status = 0, attempts = 0, next_attempt_at = UTC_TIMESTAMP(6), lease_owner = '', updated_at = UTC_TIMESTAMP(6)" +
			" WHERE id = ? AND status = 3",
		get:  "SELECT " + columns + " FROM " + t + " WHERE id = ?",
		list: "SELECT " + columns + " FROM " + t + " WHERE status = ? AND id > ? ORDER BY id LIMIT ?",
		// The topics, read from the (topic, key_hash) index alone, and then
		// a key's rows through the same index, topic by topic.
		topics: "SELECT DISTINCT topic FROM " + t,
		byKey:  "SELECT " + columns + " FROM " + t + " WHERE topic IN (?) AND key_hash = ? AND biz_key = ? ORDER BY id",
		selectDue: "SELECT id FROM " + t + " WHERE status = 0 AND next_attempt_at <= UTC_TIMESTAMP(6)" +
			" ORDER BY next_attempt_at LIMIT ? FOR UPDATE SKIP LOCKED",
		selectUnconfirmed: "SELECT id FROM " + t + " WHERE status = 1 AND next_attempt_at <= UTC_TIMESTAMP(6)" +
			" AND sent_at + INTERVAL delay_ms * 1000 MICROSECOND < UTC_TIMESTAMP(6) - INTERVAL ? MICROSECOND" +
			" ORDER BY next_attempt_at LIMIT ? FOR UPDATE SKIP LOCKED",
		claimLocked: "UPDATE " + t + " SET lease_owner = ?, next_attempt_at = UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND WHERE id IN (?)",
		claimed:     "SELECT " + columns + " FROM " + t + " WHERE id IN (?) AND lease_owner = ? ORDER BY id",
		predecessor: "SELECT 1 FROM " + t + " WHERE sharding_hash = ? AND id < ? AND status IN (0, 3)" +
			" AND sharding_key = ? LIMIT 1",
		markSent: "UPDATE " + t + " SET status = 1, attempts = attempts + 1, msg_id = ?, last_error = '', lease_owner = ''," +
			" sent_at = UTC_TIMESTAMP(6), next_attempt_at = UTC_TIMESTAMP(6), updated_at = UTC_TIMESTAMP(6) WHERE id = ? AND status = 0 AND lease_owner = ?",
		retryLater: "UPDATE " + t + " SET attempts = attempts + 1, last_error = ?, lease_owner = ''," +
			" next_attempt_at = UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND, updated_at = UTC_TIMESTAMP(6)" +
			" WHERE id = ? AND status = ? AND lease_owner = ?",
		markDead: "UPDATE " + t + " SET status = 3, attempts = attempts + 1, last_error = ?, lease_owner = ''," +
			" updated_at = UTC_TIMESTAMP(6) WHERE id = ? AND status = 0 AND lease_owner = ?",
		release: "UPDATE " + t + " SET lease_owner = '', next_attempt_at = UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND" +
			" WHERE id = ? AND lease_owner = ?",
		// An unconfirmed row out of resends stays Sent and is no longer due.
		giveUp: "UPDATE " + t + " SET lease_owner = '', last_error = ?, next_attempt_at = '9999-12-31 00:00:00'," +
			" updated_at = UTC_TIMESTAMP(6) WHERE id = ? AND status = 1 AND lease_owner = ?",
		purge: "DELETE FROM " + t + " WHERE status = ? AND updated_at < UTC_TIMESTAMP(6) - INTERVAL ? MICROSECOND LIMIT ?",
		pending: "SELECT COUNT(*), COALESCE(TIMESTAMPDIFF(MICROSECOND, MIN(created_at), UTC_TIMESTAMP(6)), 0) FROM " + t +
			" WHERE status = 0",
		insertSent: "INSERT INTO " + t + " (topic, key_hash, biz_key, tag, sharding_key, sharding_hash, properties, body, delay_ms," +
			" status, attempts, next_attempt_at, lease_owner, last_error, msg_id, created_at, updated_at, sent_at)" +
			" VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, 1, 1, UTC_TIMESTAMP(6), '', '', ?, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))",
		insertAborted: "INSERT INTO " + t + " (topic, key_hash, biz_key, tag, sharding_key, sharding_hash, properties, body, delay_ms," +
			" status, attempts, next_attempt_at, lease_owner, last_error, msg_id, created_at, updated_at)" +
			" VALUES (?, ?, ?, '', '', ?, '{}', '', 0, 4, 0, UTC_TIMESTAMP(6), '', 'rolled back by a transaction check-back', '', UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))",
		statusOf: "SELECT status, msg_id FROM " + t + " WHERE topic = ? AND key_hash = ? AND biz_key = ?",
		// A locking read: it sees the row that made the insert a duplicate
		// even if it committed after this transaction's snapshot.
		idOf: "SELECT id FROM " + t + " WHERE topic = ? AND key_hash = ? LOCK IN SHARE MODE",
		// A row enqueued by Transact is claimed from the start by the
		// transaction's own token, so reconcile leaves it alone while
		// Transact sends it right after the commit (or until the lease
		// ends, if the process died).
		insertClaimed: "INSERT INTO " + t + " (topic, key_hash, biz_key, tag, sharding_key, sharding_hash, properties, body, delay_ms," +
			" status, attempts, next_attempt_at, lease_owner, last_error, msg_id, created_at, updated_at)" +
			" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND, ?, '', '', UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))",
		dead: "SELECT COUNT(*) FROM " + t + " WHERE status = 3",
	}
}

type dbRow struct {
	ID            int64          `db:"id"`
	Topic         string         `db:"topic"`
	Key           []byte         `db:"biz_key"`
	Tag           []byte         `db:"tag"`
	ShardingKey   []byte         `db:"sharding_key"`
	Properties    []byte         `db:"properties"`
	Body          []byte         `db:"body"`
	DelayMillis   int64          `db:"delay_ms"`
	Status        int            `db:"status"`
	Attempts      int            `db:"attempts"`
	NextAttemptAt sqldb.Time     `db:"next_attempt_at"`
	LastError     string         `db:"last_error"`
	MsgID         string         `db:"msg_id"`
	CreatedAt     sqldb.Time     `db:"created_at"`
	UpdatedAt     sqldb.Time     `db:"updated_at"`
	SentAt        sqldb.NullTime `db:"sent_at"`
}

func (d *dbRow) row() (*Row, error) {
	r := &Row{ID: d.ID, Message: Message{Topic: d.Topic, Key: string(d.Key), Body: d.Body, Tag: string(d.Tag),
		ShardingKey: string(d.ShardingKey), Delay: time.Duration(d.DelayMillis) * time.Millisecond},
		Status: Status(d.Status), Attempts: d.Attempts, NextAttemptAt: d.NextAttemptAt.Time, LastError: d.LastError,
		MsgID: d.MsgID, CreatedAt: d.CreatedAt.Time, UpdatedAt: d.UpdatedAt.Time, SentAt: d.SentAt.Ptr()}
	if err := json.Unmarshal(d.Properties, &r.Properties); err != nil {
		return nil, fmt.Errorf("outbox: row %d properties: %w", d.ID, err)
	}
	return r, nil
}

// mysqlStore keeps the rows in a MySQL table (migrations: mq_log and
// mq_log_order). It follows package sqldb's conventions: times are
// UTC_TIMESTAMP(6) arithmetic in SQL and read as text, duplicates are told
// by a plain INSERT's error.
type mysqlStore struct {
	db    *sqlx.DB
	table string
	lease time.Duration
	q     queries
}

var _ rowStore = (*mysqlStore)(nil)

func newMySQLStore(db *sqlx.DB, table string, lease time.Duration) *mysqlStore {
	return &mysqlStore{db: db, table: table, lease: lease, q: newQueries(table)}
}

func (s *mysqlStore) enqueue(ctx context.Context, ex Execer, m Message, owner string) (id int64, created bool, err error) {
	props := []byte("{}")
	if len(m.Properties) > 0 {
		if props, err = json.Marshal(m.Properties); err != nil {
			return 0, false, fmt.Errorf("outbox: properties: %w", err)
		}
	}
	args := []any{m.Topic, sqldb.Hash(m.Key), []byte(m.Key), []byte(m.Tag),
		[]byte(m.ShardingKey), sqldb.Hash(m.ShardingKey), props, m.Body, m.Delay.Milliseconds()}
	if m.ShardingKey != "" {
		if _, err := ex.ExecContext(ctx, s.q.lockKey, sqldb.Hash(m.ShardingKey)); err != nil {
			return 0, false, fmt.Errorf("outbox: enqueue %s/%s: lock sharding key: %w", m.Topic, m.Key, err)
		}
	}
	q := s.q.insert
	if owner != "" {
		q = s.q.insertClaimed
		args = append(args, s.lease.Microseconds(), owner)
	}
	// A plain INSERT: a duplicate is told by its error, whatever the DSN
	// says about affected rows (clientFoundRows). The failed statement
	// leaves the caller's transaction usable.
	res, err := ex.ExecContext(ctx, q, args...)
	if sqldb.IsDuplicate(err) {
		// A locking read: it sees the row that made the insert a duplicate
		// even if it committed after this transaction's snapshot.
		if err = ex.QueryRowContext(ctx, s.q.idOf, m.Topic, sqldb.Hash(m.Key)).Scan(&id); err != nil {
			return 0, false, fmt.Errorf("outbox: enqueue %s/%s: %w", m.Topic, m.Key, err)
		}
		return id, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("outbox: enqueue %s/%s: %w", m.Topic, m.Key, err)
	}
	if id, err = res.LastInsertId(); err != nil {
		return 0, false, fmt.Errorf("outbox: enqueue %s/%s: %w", m.Topic, m.Key, err)
	}
	return id, true, nil
}

func (s *mysqlStore) begin(ctx context.Context) (storeTx, error) {
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("outbox: begin: %w", err)
	}
	return tx, nil
}

func (s *mysqlStore) claimDue(ctx context.Context, owner string, limit int) ([]*Row, error) {
	return s.claimAndLoad(ctx, owner, s.q.selectDue, limit)
}

func (s *mysqlStore) claimUnconfirmed(ctx context.Context, owner string, timeout time.Duration, limit int) ([]*Row, error) {
	return s.claimAndLoad(ctx, owner, s.q.selectUnconfirmed, timeout.Microseconds(), limit)
}

func (s *mysqlStore) claimAndLoad(ctx context.Context, owner, selectQ string, selectArgs ...any) ([]*Row, error) {
	var ids []int64
	var err error
	for attempt := 1; ; attempt++ {
		ids, err = s.claim(ctx, owner, selectQ, selectArgs)
		if err == nil || !sqldb.IsDeadlock(err) || attempt == 3 {
			break
		}
		// InnoDB picked this claim as a deadlock victim: nothing was
		// claimed; try again.
	}
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	q, args, err := sqlx.In(s.q.claimed, ids, owner)
	if err != nil {
		return nil, fmt.Errorf("outbox: load claimed: %w", err)
	}
	var dbRows []dbRow
	if err := s.db.SelectContext(ctx, &dbRows, q, args...); err != nil {
		return nil, fmt.Errorf("outbox: load claimed: %w", err)
	}
	return rowsOf(dbRows)
}

// claim locks the selected rows, skipping rows other relays hold, and
// stamps them with owner and a lease, in one short transaction.
func (s *mysqlStore) claim(ctx context.Context, owner, selectQ string, selectArgs []any) ([]int64, error) {
	// READ COMMITTED: the claim locks only the rows it takes. Under
	// REPEATABLE READ the locking read would also lock the gaps of the due
	// index, and business transactions enqueueing at the same time would
	// deadlock with it.
	tx, err := s.db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return nil, fmt.Errorf("outbox: claim: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	var ids []int64
	if err := tx.SelectContext(ctx, &ids, selectQ, selectArgs...); err != nil {
		return nil, fmt.Errorf("outbox: claim: %w", err)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	// The rows are locked by the SELECT: update them by primary key only.
	q, args, err := sqlx.In(s.q.claimLocked, owner, s.lease.Microseconds(), ids)
	if err != nil {
		return nil, fmt.Errorf("outbox: claim: %w", err)
	}
	if _, err := tx.ExecContext(ctx, q, args...); err != nil {
		return nil, fmt.Errorf("outbox: claim: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("outbox: claim: %w", err)
	}
	return ids, nil
}

func (s *mysqlStore) hasUnsentPredecessor(ctx context.Context, row *Row) (bool, error) {
	var one int
	err := s.db.GetContext(ctx, &one, s.q.predecessor, sqldb.Hash(row.ShardingKey), row.ID, []byte(row.ShardingKey))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, sql.ErrNoRows):
		return false, nil
	}
	return false, fmt.Errorf("outbox: predecessor of %d: %w", row.ID, err)
}

func (s *mysqlStore) markSent(ctx context.Context, id int64, owner, msgID string) (bool, error) {
	n, err := s.exec(ctx, s.q.markSent, msgID, id, owner)
	if err != nil {
		return false, fmt.Errorf("outbox: mark %d sent: %w", id, err)
	}
	return n == 1, nil
}

func (s *mysqlStore) markSentBatch(ctx context.Context, owners []string, rows []sentRow, resend bool) (int64, error) {
	var b strings.Builder
	args := make([]any, 0, 3*len(rows)+len(owners))
	b.WriteString("UPDATE " + sqldb.Quote(s.table) + " SET msg_id = CASE id")
	for _, r := range rows {
		b.WriteString(" WHEN ? THEN ?")
		args = append(args, r.id, r.msgID)
	}
	b.WriteString(" END, attempts = attempts + 1, lease_owner = '', sent_at = UTC_TIMESTAMP(6), next_attempt_at = UTC_TIMESTAMP(6), updated_at = UTC_TIMESTAMP(6)")
	status := Pending
	if resend {
		status = Sent
	} else {
		b.WriteString(", status = 1, last_error = ''")
	}
	b.WriteString(" WHERE status = ? AND lease_owner IN (?" + strings.Repeat(", ?", len(owners)-1) + ")")
	b.WriteString(" AND id IN (?" + strings.Repeat(", ?", len(rows)-1) + ")")
	args = append(args, int(status))
	for _, o := range owners {
		args = append(args, o)
	}
	for _, r := range rows {
		args = append(args, r.id)
	}
	n, err := s.exec(ctx, b.String(), args...)
	if err != nil {
		return 0, fmt.Errorf("outbox: mark %d rows sent: %w", len(rows), err)
	}
	return n, nil
}

func (s *mysqlStore) retryLater(ctx context.Context, id int64, status Status, owner, lastErr string, after time.Duration) error {
	if _, err := s.exec(ctx, s.q.retryLater, lastErr, after.Microseconds(), id, int(status), owner); err != nil {
		return fmt.Errorf("outbox: reschedule %d: %w", id, err)
	}
	return nil
}

func (s *mysqlStore) markDead(ctx context.Context, id int64, owner, lastErr string) (bool, error) {
	n, err := s.exec(ctx, s.q.markDead, lastErr, id, owner)
	if err != nil {
		return false, fmt.Errorf("outbox: mark %d dead: %w", id, err)
	}
	return n == 1, nil
}

func (s *mysqlStore) giveUp(ctx context.Context, id int64, owner, lastErr string) (bool, error) {
	n, err := s.exec(ctx, s.q.giveUp, lastErr, id, owner)
	if err != nil {
		return false, fmt.Errorf("outbox: give up %d: %w", id, err)
	}
	return n == 1, nil
}

func (s *mysqlStore) release(ctx context.Context, id int64, owner string, after time.Duration) error {
	if _, err := s.exec(ctx, s.q.release, after.Microseconds(), id, owner); err != nil {
		return fmt.Errorf("outbox: release %d: %w", id, err)
	}
	return nil
}

func (s *mysqlStore) confirm(ctx context.Context, ex Execer, topic, key string) (bool, error) {
	res, err := ex.ExecContext(ctx, s.q.confirm, topic, sqldb.Hash(key), []byte(key))
	if err != nil {
		return false, fmt.Errorf("outbox: confirm %s/%s: %w", topic, key, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("outbox: confirm %s/%s: %w", topic, key, err)
	}
	return n == 1, nil
}

func (s *mysqlStore) replay(ctx context.Context, id int64) (bool, error) {
	n, err := s.exec(ctx, s.q.replay, id)
	if err != nil {
		return false, fmt.Errorf("outbox: replay %d: %w", id, err)
	}
	return n == 1, nil
}

func (s *mysqlStore) get(ctx context.Context, id int64) (*Row, error) {
	var rr dbRow
	err := s.db.GetContext(ctx, &rr, s.q.get, id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %d", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("outbox: get %d: %w", id, err)
	}
	return rr.row()
}

func (s *mysqlStore) list(ctx context.Context, status Status, afterID int64, limit int) ([]*Row, error) {
	var rows []dbRow
	if err := s.db.SelectContext(ctx, &rows, s.q.list, int(status), afterID, limit); err != nil {
		return nil, fmt.Errorf("outbox: list: %w", err)
	}
	return rowsOf(rows)
}

func (s *mysqlStore) find(ctx context.Context, key string) ([]*Row, error) {
	var topics []string
	if err := s.db.SelectContext(ctx, &topics, s.q.topics); err != nil {
		return nil, fmt.Errorf("outbox: find %q: %w", key, err)
	}
	if len(topics) == 0 {
		return nil, nil
	}
	q, args, err := sqlx.In(s.q.byKey, topics, sqldb.Hash(key), []byte(key))
	if err != nil {
		return nil, fmt.Errorf("outbox: find %q: %w", key, err)
	}
	var rows []dbRow
	if err := s.db.SelectContext(ctx, &rows, q, args...); err != nil {
		return nil, fmt.Errorf("outbox: find %q: %w", key, err)
	}
	return rowsOf(rows)
}

func (s *mysqlStore) purge(ctx context.Context, status Status, retention time.Duration, limit int) (int64, error) {
	n, err := s.exec(ctx, s.q.purge, int(status), retention.Microseconds(), limit)
	if err != nil {
		return 0, fmt.Errorf("outbox: purge: %w", err)
	}
	return n, nil
}

func (s *mysqlStore) backlog(ctx context.Context) (Backlog, error) {
	var b Backlog
	var oldestMicros int64
	if err := s.db.QueryRowxContext(ctx, s.q.pending).Scan(&b.Pending, &oldestMicros); err != nil {
		return b, fmt.Errorf("outbox: backlog: %w", err)
	}
	b.OldestPending = time.Duration(oldestMicros) * time.Microsecond
	if err := s.db.GetContext(ctx, &b.DeadRows, s.q.dead); err != nil {
		return b, fmt.Errorf("outbox: backlog: %w", err)
	}
	return b, nil
}

func (s *mysqlStore) exec(ctx context.Context, q string, args ...any) (int64, error) {
	res, err := s.db.ExecContext(ctx, q, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func rowsOf(dbRows []dbRow) ([]*Row, error) {
	rows := make([]*Row, 0, len(dbRows))
	for i := range dbRows {
		row, err := dbRows[i].row()
		if err != nil {
			return nil, err
		}
		rows = append(rows, row)
	}
	return rows, nil
}
