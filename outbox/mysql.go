package outbox

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/internal/sqldb"
)

type queries struct {
	lockKey, insert, confirm, shardingKeyOf, freeLater, lockUnlocked, replay, get, list, selectDue, selectUnconfirmed, claimed, predecessor,
	markSent, retryLater, markDead, release, giveUp, purgeIDs, purge, pending, dead,
	insertSent, insertAborted, statusOf, idOf, claimLocked, topics, byKey, markSentBatch string
}

// columns reads times as text (see sqldb): a DATETIME the driver parses in
// a loc with DST would shift inside the zone's gap hour. body is quoted
// wherever a statement names it: a reserved word under sql_mode=ORACLE.
const columns = "id, topic, biz_key, tag, sharding_key, properties, `body`, delay_ms, status, attempts," +
	" CAST(next_attempt_at AS CHAR) AS next_attempt_at, last_error, msg_id, CAST(created_at AS CHAR) AS created_at," +
	" CAST(updated_at AS CHAR) AS updated_at, CAST(sent_at AS CHAR) AS sent_at"

func newQueries(table string) queries {
	t, order := sqldb.Quote(table), sqldb.Quote(table+"_order")
	return queries{
		// Takes the key's row lock, creating the row on first use (on a
		// duplicate, ON DUPLICATE KEY UPDATE takes an exclusive lock): a
		// second transaction enqueueing the key waits here until the first
		// commits or rolls back. Affected rows are not read.
		// The statements below that end in "(" or "IN (" are completed
		// with literal values (literal.go).
		lockKey: "INSERT INTO " + order + " (sharding_hash) VALUES (",
		insert: "INSERT INTO " + t + " (topic, key_hash, biz_key, tag, sharding_key, sharding_hash, properties, `body`, delay_ms," +
			" status, attempts, next_attempt_at, lease_owner, last_error, msg_id, created_at, updated_at) VALUES (",
		// Followed by the key's condition (appendKey).
		confirm: "UPDATE " + t + " SET status = 2, updated_at = UTC_TIMESTAMP(6)",
		// Followed by the key's condition (appendKey).
		shardingKeyOf: "SELECT id, sharding_key FROM " + t,
		// FORCE INDEX: read through the due index (status = 0) instead,
		// it would skip past every locked Pending row of the table.
		lockUnlocked: "SELECT id FROM " + t + " FORCE INDEX (PRIMARY) WHERE id IN (",
		freeLater: "UPDATE " + t + " SET next_attempt_at = UTC_TIMESTAMP(6) WHERE sharding_hash = ? AND status = 0 AND id > ?" +
			" AND sharding_key = ? AND lease_owner = '' AND next_attempt_at > UTC_TIMESTAMP(6)",
		replay: "UPDATE " + t + " SET status = 0, attempts = 0, next_attempt_at = UTC_TIMESTAMP(6), lease_owner = '', updated_at = UTC_TIMESTAMP(6)" +
			" WHERE id = ? AND status = 3",
		get:  "SELECT " + columns + " FROM " + t + " WHERE id = ?",
		list: "SELECT " + columns + " FROM " + t + " WHERE status = ? AND id > ? ORDER BY id LIMIT ?",
		// The topics, read from the (topic, key_hash) index alone, and then
		// a key's rows through the same index, topic by topic.
		topics: "SELECT DISTINCT topic FROM " + t,
		byKey:  "SELECT " + columns + " FROM " + t + " WHERE topic IN (?) AND key_hash = ? AND biz_key = ? ORDER BY id",
		// The claims take rows due for at least a given time (see dueFor).
		selectDue: "SELECT id FROM " + t + " WHERE status = 0 AND next_attempt_at <= UTC_TIMESTAMP(6) - INTERVAL ? MICROSECOND" +
			" ORDER BY next_attempt_at, id LIMIT ? FOR UPDATE SKIP LOCKED",
		selectUnconfirmed: "SELECT id FROM " + t + " WHERE status = 1 AND next_attempt_at <= UTC_TIMESTAMP(6) - INTERVAL ? MICROSECOND" +
			" AND sent_at + INTERVAL delay_ms * 1000 MICROSECOND < UTC_TIMESTAMP(6) - INTERVAL ? MICROSECOND" +
			" ORDER BY next_attempt_at, id LIMIT ? FOR UPDATE SKIP LOCKED",
		claimLocked: "UPDATE " + t + " SET lease_owner = ",
		claimed:     "SELECT " + columns + " FROM " + t + " WHERE id IN (",
		// The key's oldest unsent row before a given id: whether it is
		// Dead, claimed under a live lease, due. Its id is read from the
		// (sharding_hash, status, id) index alone; MIN rather than ORDER
		// BY id LIMIT 1, with which the optimizer may walk the primary key
		// through every key's rows.
		predecessor: "SELECT status = 3, lease_owner <> '' AND next_attempt_at > UTC_TIMESTAMP(6)," +
			" GREATEST(TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), next_attempt_at), 0)" +
			" FROM " + t + " WHERE id = (SELECT MIN(id) FROM " + t + " WHERE sharding_hash = ? AND status IN (0, 3) AND id < ?)" +
			" AND sharding_key = ?",
		markSent: "UPDATE " + t + " SET status = 1, attempts = attempts + 1, last_error = '', lease_owner = ''," +
			" sent_at = UTC_TIMESTAMP(6), next_attempt_at = UTC_TIMESTAMP(6), updated_at = UTC_TIMESTAMP(6), msg_id = ",
		// FORCE INDEX: otherwise the optimizer may read the ids through the
		// due index (status = 0) or the whole table, locking what it reads.
		markSentBatch: "UPDATE " + t + " FORCE INDEX (PRIMARY) SET msg_id = ",
		// retryLater, markDead and giveUp are followed by the error text
		// and the row's condition (see failedAttempt).
		retryLater: "UPDATE " + t + " SET attempts = attempts + 1, lease_owner = '', updated_at = UTC_TIMESTAMP(6), last_error = ",
		markDead:   "UPDATE " + t + " SET status = 3, attempts = attempts + 1, lease_owner = '', updated_at = UTC_TIMESTAMP(6), last_error = ",
		// Followed by the delay, the ids and the owner (see release).
		release: "UPDATE " + t + " SET lease_owner = '', next_attempt_at = UTC_TIMESTAMP(6) + INTERVAL ",
		// An unconfirmed row out of resends stays Sent and is no longer due.
		giveUp: "UPDATE " + t + " SET lease_owner = '', next_attempt_at = '9999-12-31 00:00:00', updated_at = UTC_TIMESTAMP(6), last_error = ",
		// The purge picks its rows with a plain (non-locking) read, then
		// deletes them by primary key, rechecking the condition. One
		// locking DELETE ... LIMIT would read them through the due index
		// (every row of the status) or the whole table: under REPEATABLE
		// READ it locks every row and gap it reads, so it waits for any
		// business transaction holding an uncommitted outbox row or a
		// consumer's open Confirm, and meanwhile holds up every enqueue.
		// A single-table DELETE takes no index hint; the multi-table form does.
		purgeIDs: "SELECT id FROM " + t + " WHERE status = ? AND updated_at < UTC_TIMESTAMP(6) - INTERVAL ? MICROSECOND LIMIT ?",
		purge:    "DELETE p FROM " + t + " AS p FORCE INDEX (PRIMARY) WHERE p.id IN (",
		pending: "SELECT COUNT(*), COALESCE(TIMESTAMPDIFF(MICROSECOND, MIN(created_at), UTC_TIMESTAMP(6)), 0) FROM " + t +
			" WHERE status = 0",
		insertSent: "INSERT INTO " + t + " (topic, key_hash, biz_key, tag, sharding_key, sharding_hash, properties, `body`, delay_ms," +
			" status, attempts, next_attempt_at, lease_owner, last_error, msg_id, created_at, updated_at, sent_at)" +
			" VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, 1, 1, UTC_TIMESTAMP(6), '', '', ?, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))",
		insertAborted: "INSERT INTO " + t + " (topic, key_hash, biz_key, tag, sharding_key, sharding_hash, properties, `body`, delay_ms," +
			" status, attempts, next_attempt_at, lease_owner, last_error, msg_id, created_at, updated_at)" +
			" VALUES (?, ?, ?, '', '', ?, '{}', '', 0, 4, 0, UTC_TIMESTAMP(6), '', 'rolled back by a transaction check-back', '', UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))",
		statusOf: "SELECT status, msg_id FROM " + t + " WHERE topic = ? AND key_hash = ? AND biz_key = ?",
		// A locking read: it sees the row that made the insert a duplicate
		// even if it committed after this transaction's snapshot.
		// Followed by the key's condition and " LOCK IN SHARE MODE".
		idOf: "SELECT id FROM " + t,
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
	// names refuses a table whose topics compare case-insensitively.
	names *sqldb.Names
}

var _ rowStore = (*mysqlStore)(nil)

func newMySQLStore(db *sqlx.DB, table string, lease time.Duration) *mysqlStore {
	return &mysqlStore{db: db, table: table, lease: lease, q: newQueries(table), names: sqldb.NewNames(table, "topic")}
}

func (s *mysqlStore) enqueue(ctx context.Context, ex Execer, m Message, owner string) (id int64, created bool, err error) {
	// The schema check reads through ex, whatever it is: on a handle of
	// one connection, which the caller's transaction holds, another
	// connection would never come.
	if err := s.names.Check(ctx, ex); err != nil {
		return 0, false, fmt.Errorf("outbox: enqueue %s/%s: %w", m.Topic, m.Key, err)
	}
	props := []byte("{}")
	if len(m.Properties) > 0 {
		if props, err = json.Marshal(m.Properties); err != nil {
			return 0, false, fmt.Errorf("outbox: properties: %w", err)
		}
	}
	if m.ShardingKey != "" {
		q := sqldb.NewStatement(256).SQL(s.q.lockKey).Bytes(sqldb.Hash(m.ShardingKey)).
			SQL(") ON DUPLICATE KEY UPDATE sharding_hash = sharding_hash")
		query, args := q.Query()
		if _, err := sqldb.Exec(ctx, ex, query, args...); err != nil {
			return 0, false, fmt.Errorf("outbox: enqueue %s/%s: lock sharding key: %w", m.Topic, m.Key, err)
		}
	}
	q := sqldb.NewStatement(len(s.q.insert) + 2*(len(m.Topic)+len(m.Key)+len(m.Tag)+len(m.ShardingKey)+len(props)+len(m.Body)) + 400).
		SQL(s.q.insert).String(m.Topic).SQL(", ").Bytes(sqldb.Hash(m.Key)).SQL(", ").String(m.Key).SQL(", ").String(m.Tag).
		SQL(", ").String(m.ShardingKey).SQL(", ").Bytes(sqldb.Hash(m.ShardingKey)).SQL(", ")
	q.Bytes(props).SQL(", ").Bytes(m.Body).SQL(", ").Int(m.Delay.Milliseconds()).SQL(", 0, 0, ")
	if owner == "" {
		q = q.SQL("UTC_TIMESTAMP(6), '', '', '', UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))")
	} else {
		// A row enqueued by Transact is claimed from the start by the
		// transaction's own token, so reconcile leaves it alone while
		// Transact sends it right after the commit (or until the lease
		// ends, if the process died).
		q = q.SQL("UTC_TIMESTAMP(6) + INTERVAL ").Int(s.lease.Microseconds()).SQL(" MICROSECOND, ").String(owner).
			SQL(", '', '', UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))")
	}
	// A plain INSERT: a duplicate is told by its error, whatever the DSN
	// says about affected rows (clientFoundRows). The failed statement
	// leaves the caller's transaction usable.
	query, args := q.Query()
	res, err := sqldb.Exec(ctx, ex, query, args...)
	if sqldb.IsDuplicate(err) {
		// A locking read: it sees the row that made the insert a duplicate
		// even if it committed after this transaction's snapshot.
		query, args := appendKey(sqldb.NewStatement(len(s.q.idOf)+2*len(m.Topic)+200).SQL(s.q.idOf), m.Topic, m.Key, false).
			SQL(" LOCK IN SHARE MODE").Query()
		if err = sqldb.Scan(ctx, ex, query, args, &id); err != nil {
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
	if err := sqldb.CheckSession(ctx, s.db); err != nil {
		return nil, fmt.Errorf("outbox: begin: %w", err)
	}
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("outbox: begin: %w", err)
	}
	return tx, nil
}

func (s *mysqlStore) claimDue(ctx context.Context, owner string, asOf time.Time, limit int) ([]*Row, error) {
	return s.claimAndLoad(ctx, owner, s.q.selectDue, dueFor(asOf), limit)
}

func (s *mysqlStore) claimUnconfirmed(ctx context.Context, owner string, asOf time.Time, timeout time.Duration, limit int) ([]*Row, error) {
	return s.claimAndLoad(ctx, owner, s.q.selectUnconfirmed, dueFor(asOf), timeout.Microseconds(), limit)
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
	q := sqldb.NewStatement(len(s.q.claimed) + len(ids)*12 + 100).SQL(s.q.claimed).Ints(ids).
		SQL(") AND lease_owner = ").String(owner).SQL(" ORDER BY id")
	var dbRows []dbRow
	query, args := q.Query()
	// The rows are claimed now: read them even if ctx has just ended, so
	// that the caller hands them back (failing here, it never knew of them
	// and they stayed claimed until the lease ended).
	lctx, cancel := markContext(ctx)
	defer cancel()
	if err := sqldb.Select(lctx, s.db, &dbRows, query, args...); err != nil {
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
	if err := sqldb.CheckSession(ctx, s.db); err != nil {
		return nil, fmt.Errorf("outbox: claim: %w", err)
	}
	tx, err := s.db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return nil, fmt.Errorf("outbox: claim: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	var ids []int64
	if err := sqldb.Select(ctx, tx, &ids, selectQ, selectArgs...); err != nil {
		return nil, fmt.Errorf("outbox: claim: %w", err)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	// The rows are locked by the SELECT: update them by primary key only.
	q := sqldb.NewStatement(len(s.q.claimLocked) + len(ids)*12 + 150).SQL(s.q.claimLocked).String(owner).
		SQL(", next_attempt_at = UTC_TIMESTAMP(6) + INTERVAL ").Int(s.lease.Microseconds()).
		SQL(" MICROSECOND WHERE id IN (").Ints(ids).SQL(")")
	query, args := q.Query()
	if _, err := sqldb.Exec(ctx, tx, query, args...); err != nil {
		return nil, fmt.Errorf("outbox: claim: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("outbox: claim: %w", err)
	}
	return ids, nil
}

func (s *mysqlStore) predecessor(ctx context.Context, row *Row) (earlier, time.Duration, error) {
	var dead, leased bool
	var dueIn int64 // µs
	err := sqldb.Scan(ctx, s.db, s.q.predecessor, []any{sqldb.Hash(row.ShardingKey), row.ID, []byte(row.ShardingKey)},
		&dead, &leased, &dueIn)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return allSent, 0, nil
	case err != nil:
		return blocked, 0, fmt.Errorf("outbox: predecessor of %d: %w", row.ID, err)
	case dead:
		return blocked, 0, nil
	case leased:
		return inFlight, time.Duration(dueIn) * time.Microsecond, nil
	case dueIn == 0:
		return claimable, 0, nil
	}
	return blocked, time.Duration(dueIn) * time.Microsecond, nil
}

func (s *mysqlStore) markSent(ctx context.Context, id int64, owner, msgID string) (bool, error) {
	q := sqldb.NewStatement(len(s.q.markSent) + 2*len(msgID) + 120).SQL(s.q.markSent).String(msgID).
		SQL(" WHERE id = ").Int(id).SQL(" AND status = 0 AND lease_owner = ").String(owner)
	query, args := q.Query()
	n, err := s.exec(ctx, query, args...)
	if err != nil {
		return false, fmt.Errorf("outbox: mark %d sent: %w", id, err)
	}
	return n == 1, nil
}

// markSentBatch marks rows Sent: first the rows no other transaction
// holds, then, waiting for them, the rest (see updateUnlocked). A consumer
// confirming one row before its mark is written holds that row until it
// commits: one statement waiting behind it failed the marks of every
// other row in it. On an error it returns the rows it marked before it.
func (s *mysqlStore) markSentBatch(ctx context.Context, owners []string, rows []sentRow, resend bool) (int64, error) {
	status := Pending
	if resend {
		status = Sent
	}
	cond := func(q *sqldb.Statement) *sqldb.Statement {
		q = q.SQL(" AND status = ").Int(int64(status)).SQL(" AND lease_owner IN (")
		for i, o := range owners {
			if i > 0 {
				q = q.SQL(", ")
			}
			q = q.String(o)
		}
		return q.SQL(")")
	}
	ids := make([]int64, len(rows))
	for i, r := range rows {
		ids[i] = r.id
	}
	marked, err := s.updateUnlocked(ctx, ids, cond, func(tx *sqlx.Tx, free []int64) error {
		held := make(map[int64]bool, len(free))
		for _, id := range free {
			held[id] = true
		}
		byID := make([]sentRow, 0, len(free))
		for _, r := range rows {
			if held[r.id] {
				byID = append(byID, r)
			}
		}
		slices.SortFunc(byID, func(a, b sentRow) int { return cmp.Compare(a.id, b.id) })
		q := appendMsgIDs(sqldb.NewStatement(len(s.q.markSentBatch)+len(byID)*(2*len(byID[0].msgID)+40)+300).
			SQL(s.q.markSentBatch), byID).
			SQL(", attempts = attempts + 1, lease_owner = '', sent_at = UTC_TIMESTAMP(6), next_attempt_at = UTC_TIMESTAMP(6), updated_at = UTC_TIMESTAMP(6)")
		if !resend {
			q = q.SQL(", status = 1, last_error = ''")
		}
		query, args := q.SQL(" WHERE id IN (").Ints(free).SQL(")").Query()
		_, err := sqldb.Exec(ctx, tx, query, args...)
		return err
	})
	if err != nil {
		return int64(len(marked)), fmt.Errorf("outbox: mark %d rows sent: %w", len(rows), err)
	}
	return int64(len(marked)), nil
}

// updateUnlocked runs update on those of ids that match cond (appended to
// "WHERE id IN (...)"), lockChunk rows to a short READ COMMITTED
// transaction that takes only the rows no other transaction holds and
// never waits for a lock. One such row (a consumer's open Confirm, another
// relay's claim, whose range read holds the row just past its range until
// it commits) thus holds up no other. The rows skipped that a plain read
// shows still match are tried again, 1 ms later and then up to every
// 100 ms, until ctx ends. No lock wait is left running on the server when
// ctx ends. It returns the rows updated, with the errors met.
func (s *mysqlStore) updateUnlocked(ctx context.Context, ids []int64, cond func(*sqldb.Statement) *sqldb.Statement,
	update func(tx *sqlx.Tx, free []int64) error) ([]int64, error) {
	var updated []int64
	for pause := time.Millisecond; ; pause = min(2*pause, 100*time.Millisecond) {
		var skipped []int64
		for chunk := range slices.Chunk(ids, lockChunk) {
			free, err := s.updateFree(ctx, chunk, cond, update)
			if err != nil {
				return updated, fmt.Errorf("%d rows from %d: %w", len(chunk), chunk[0], err)
			}
			updated = append(updated, free...)
			if len(free) < len(chunk) {
				done := make(map[int64]bool, len(free))
				for _, id := range free {
					done[id] = true
				}
				for _, id := range chunk {
					if !done[id] {
						skipped = append(skipped, id)
					}
				}
			}
		}
		if len(skipped) == 0 {
			return updated, nil
		}
		// A row a Confirm already moved, or one named twice, no longer
		// matches: only the rest were locked.
		locked, err := s.stillMatching(ctx, skipped, cond)
		if err != nil || len(locked) == 0 {
			return updated, err
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return updated, fmt.Errorf("%d rows locked by another transaction: %w", len(locked), ctx.Err())
		case <-t.C:
		}
		ids = locked
	}
}

// stillMatching returns those of ids that match cond, read in a READ
// COMMITTED transaction: whatever the session's isolation level, another
// transaction's uncommitted change (a Confirm that may yet roll back) is
// not seen.
func (s *mysqlStore) stillMatching(ctx context.Context, ids []int64, cond func(*sqldb.Statement) *sqldb.Statement) ([]int64, error) {
	tx, err := s.db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted, ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback() //nolint:errcheck // read only
	var matching []int64
	for chunk := range slices.Chunk(ids, lockChunk) {
		query, args := cond(sqldb.NewStatement(len(s.q.lockUnlocked) + len(chunk)*12 + 200).SQL(s.q.lockUnlocked).Ints(chunk).SQL(")")).Query()
		var some []int64
		if err := sqldb.Select(ctx, tx, &some, query, args...); err != nil {
			return nil, err
		}
		matching = append(matching, some...)
	}
	return matching, tx.Commit()
}

// lockChunk bounds the rows one statement of updateUnlocked names.
const lockChunk = 500

// updateFree locks those of ids that match cond and no other transaction
// holds, and runs update on them, in one READ COMMITTED transaction.
func (s *mysqlStore) updateFree(ctx context.Context, ids []int64, cond func(*sqldb.Statement) *sqldb.Statement,
	update func(tx *sqlx.Tx, free []int64) error) ([]int64, error) {
	tx, err := s.db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	query, args := cond(sqldb.NewStatement(len(s.q.lockUnlocked) + len(ids)*12 + 200).SQL(s.q.lockUnlocked).Ints(ids).SQL(")")).
		SQL(" FOR UPDATE SKIP LOCKED").Query()
	var free []int64
	if err := sqldb.Select(ctx, tx, &free, query, args...); err != nil {
		return nil, err
	}
	if len(free) > 0 {
		if err := update(tx, free); err != nil {
			return nil, err
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	return free, nil
}

// appendMsgIDs appends an expression giving each row of rows (sorted by
// id) its msgID: a tree of CASE expressions split at the middle id, so
// that the server compares a row's id a dozen times, not up to len(rows)
// times as in one flat CASE (a mark of 500 rows cost MySQL about a third
// more CPU per row that way).
func appendMsgIDs(q *sqldb.Statement, rows []sentRow) *sqldb.Statement {
	if len(rows) <= 8 {
		q = q.SQL("CASE id")
		for _, r := range rows {
			q = q.SQL(" WHEN ").Int(r.id).SQL(" THEN ").String(r.msgID)
		}
		return q.SQL(" END")
	}
	mid := len(rows) / 2
	q = appendMsgIDs(q.SQL("CASE WHEN id < ").Int(rows[mid].id).SQL(" THEN "), rows[:mid])
	return appendMsgIDs(q.SQL(" ELSE "), rows[mid:]).SQL(" END")
}

// failedAttempt is a statement recording a failed attempt's error text (valid
// UTF-8, cut to fit: no text keeps the attempt from being counted) on row
// id, still in status and held by owner, with set's other assignments.
func failedAttempt(fixed, lastErr, set string, id int64, status Status, owner string) *sqldb.Statement {
	return sqldb.NewStatement(len(fixed) + 2*len(lastErr) + 300).SQL(fixed).Text(lastErr).SQL(set).
		SQL(" WHERE id = ").Int(id).SQL(" AND status = ").Int(int64(status)).SQL(" AND lease_owner = ").String(owner)
}

// appendKey appends the condition on a topic's key (and, with biz, the
// key itself, against hash collisions).
func appendKey(st *sqldb.Statement, topic, key string, biz bool) *sqldb.Statement {
	st.SQL(" WHERE topic = ").String(topic).SQL(" AND key_hash = ").Bytes(sqldb.Hash(key))
	if biz {
		st.SQL(" AND biz_key = ").String(key)
	}
	return st
}

func (s *mysqlStore) retryLater(ctx context.Context, id int64, status Status, owner, lastErr string, after time.Duration) (bool, error) {
	st := failedAttempt(s.q.retryLater, lastErr, ", next_attempt_at = UTC_TIMESTAMP(6) + INTERVAL "+strconv.FormatInt(after.Microseconds(), 10)+" MICROSECOND",
		id, status, owner)
	query, args := st.Query()
	n, err := s.exec(ctx, query, args...)
	if err != nil {
		return false, fmt.Errorf("outbox: reschedule %d: %w", id, err)
	}
	return n == 1, nil
}

func (s *mysqlStore) markDead(ctx context.Context, id int64, owner, lastErr string) (bool, error) {
	query, args := failedAttempt(s.q.markDead, lastErr, "", id, Pending, owner).Query()
	n, err := s.exec(ctx, query, args...)
	if err != nil {
		return false, fmt.Errorf("outbox: mark %d dead: %w", id, err)
	}
	return n == 1, nil
}

func (s *mysqlStore) giveUp(ctx context.Context, id int64, owner, lastErr string, sent bool) (bool, error) {
	set := ""
	if sent {
		set = ", attempts = attempts + 1"
	}
	query, args := failedAttempt(s.q.giveUp, lastErr, set, id, Sent, owner).Query()
	n, err := s.exec(ctx, query, args...)
	if err != nil {
		return false, fmt.Errorf("outbox: give up %d: %w", id, err)
	}
	return n == 1, nil
}

// release hands rows back (see updateUnlocked): the rows no other
// transaction holds (a business transaction reading one FOR UPDATE, a
// consumer's Confirm not committed yet) first, then the others, waiting
// for them until ctx ends; a row not handed back stays claimed until the
// lease ends. (One UPDATE waited for such a row and, cut short by its ctx
// long before the server's lock wait timeout, handed back none.)
func (s *mysqlStore) release(ctx context.Context, ids []int64, owner string, after time.Duration) error {
	_, err := s.updateUnlocked(ctx, ids, func(q *sqldb.Statement) *sqldb.Statement {
		return q.SQL(" AND lease_owner = ").String(owner)
	}, func(tx *sqlx.Tx, free []int64) error {
		query, args := sqldb.NewStatement(len(s.q.release) + len(free)*12 + 150).SQL(s.q.release).Int(after.Microseconds()).
			SQL(" MICROSECOND WHERE id IN (").Ints(free).SQL(")").Query()
		_, err := sqldb.Exec(ctx, tx, query, args...)
		return err
	})
	if err != nil {
		return fmt.Errorf("outbox: release (rows not handed back stay claimed until the lease ends): %w", err)
	}
	return nil
}

func (s *mysqlStore) confirm(ctx context.Context, ex Execer, topic, key string) (bool, error) {
	if err := s.names.Check(ctx, ex); err != nil {
		return false, fmt.Errorf("outbox: confirm %s/%s: %w", topic, key, err)
	}
	// A Sent row, or a Pending row without a sharding key (its send timed
	// out yet reached the consumer, or its Sent mark is not written yet).
	moved, err := s.confirmWhere(ctx, ex, topic, key, " AND (status = 1 OR (status = 0 AND sharding_key = ''))")
	if err != nil || moved {
		return moved, err
	}
	// Rarely, a Pending row with a sharding key: the later rows of its key
	// waited for it.
	if moved, err = s.confirmWhere(ctx, ex, topic, key, " AND status = 0"); err != nil || !moved {
		return moved, err
	}
	if err := s.freeLaterRows(ctx, ex, topic, key); err != nil {
		return false, fmt.Errorf("outbox: confirm %s/%s: %w", topic, key, err)
	}
	return true, nil
}

// confirmWhere moves the row of topic and key to Confirmed if it meets
// cond.
func (s *mysqlStore) confirmWhere(ctx context.Context, ex Execer, topic, key, cond string) (bool, error) {
	query, args := appendKey(sqldb.NewStatement(len(s.q.confirm)+2*(len(topic)+len(key))+200).SQL(s.q.confirm), topic, key, true).
		SQL(cond).Query()
	res, err := sqldb.Exec(ctx, ex, query, args...)
	if err != nil {
		return false, fmt.Errorf("outbox: confirm %s/%s: %w", topic, key, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("outbox: confirm %s/%s: %w", topic, key, err)
	}
	return n == 1, nil
}

// freeLaterRows makes the later rows of the sharding key of the row of
// topic and key, just confirmed from Pending, due now: handed back behind
// it while it backed off, they waited for its due time, and nothing before
// them is left to send.
func (s *mysqlStore) freeLaterRows(ctx context.Context, ex Execer, topic, key string) error {
	var id int64
	var shardingKey []byte
	query, args := appendKey(sqldb.NewStatement(len(s.q.shardingKeyOf)+2*(len(topic)+len(key))+200).SQL(s.q.shardingKeyOf), topic, key, true).Query()
	if err := sqldb.Scan(ctx, ex, query, args, &id, &shardingKey); err != nil || len(shardingKey) == 0 {
		return err
	}
	_, err := sqldb.Exec(ctx, ex, s.q.freeLater, sqldb.Hash(string(shardingKey)), id, shardingKey)
	return err
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
	err := sqldb.Get(ctx, s.db, &rr, s.q.get, id)
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
	if err := sqldb.Select(ctx, s.db, &rows, s.q.list, int(status), afterID, limit); err != nil {
		return nil, fmt.Errorf("outbox: list: %w", err)
	}
	return rowsOf(rows)
}

func (s *mysqlStore) find(ctx context.Context, key string) ([]*Row, error) {
	var topics []string
	if err := sqldb.Select(ctx, s.db, &topics, s.q.topics); err != nil {
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
	if err := sqldb.Select(ctx, s.db, &rows, q, args...); err != nil {
		return nil, fmt.Errorf("outbox: find %q: %w", key, err)
	}
	return rowsOf(rows)
}

func (s *mysqlStore) purge(ctx context.Context, status Status, retention time.Duration, limit int) (int64, error) {
	var ids []int64
	if err := sqldb.Select(ctx, s.db, &ids, s.q.purgeIDs, int(status), retention.Microseconds(), limit); err != nil {
		return 0, fmt.Errorf("outbox: purge: %w", err)
	}
	if len(ids) == 0 {
		return 0, nil
	}
	q := sqldb.NewStatement(len(s.q.purge) + len(ids)*12 + 150).SQL(s.q.purge).Ints(ids).
		SQL(") AND p.status = ").Int(int64(status)).SQL(" AND p.updated_at < UTC_TIMESTAMP(6) - INTERVAL ").
		Int(retention.Microseconds()).SQL(" MICROSECOND")
	query, args := q.Query()
	n, err := s.exec(ctx, query, args...)
	if err != nil {
		return 0, fmt.Errorf("outbox: purge: %w", err)
	}
	return n, nil
}

func (s *mysqlStore) backlog(ctx context.Context) (Backlog, error) {
	var b Backlog
	var oldestMicros int64
	if err := sqldb.Scan(ctx, s.db, s.q.pending, nil, &b.Pending, &oldestMicros); err != nil {
		return b, fmt.Errorf("outbox: backlog: %w", err)
	}
	b.OldestPending = time.Duration(oldestMicros) * time.Microsecond
	if err := sqldb.Get(ctx, s.db, &b.DeadRows, s.q.dead); err != nil {
		return b, fmt.Errorf("outbox: backlog: %w", err)
	}
	return b, nil
}

func (s *mysqlStore) exec(ctx context.Context, q string, args ...any) (int64, error) {
	res, err := sqldb.Exec(ctx, s.db, q, args...)
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
