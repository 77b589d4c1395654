package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/internal/sqldb"
	"github.com/seed157d4c4d/reliablemq/producer"
)

type queries struct {
	lockKey, insert, confirm, replay, get, list, selectDue, selectUnconfirmed, claimed, predecessor,
	markSent, retryLater, markDead, release, giveUp, purge, pending, dead,
	insertSent, insertAborted, statusOf, idOf, insertClaimed, claimLocked string
}

// columns reads times as text (see sqldb): a DATETIME the driver parses in
// a loc with DST would shift inside the zone's gap hour.
const columns = "id, topic, biz_key, tag, sharding_key, properties, body, delay_ms, status, attempts," +
	" CAST(next_attempt_at AS CHAR) AS next_attempt_at, last_error, msg_id, CAST(created_at AS CHAR) AS created_at," +
	" CAST(updated_at AS CHAR) AS updated_at, CAST(sent_at AS CHAR) AS sent_at"

func newQueries(t string) queries {
	return queries{
		// Takes the key's row lock, creating the row on first use (on a
		// duplicate, ON DUPLICATE KEY UPDATE takes an exclusive lock): a
		// second transaction enqueueing the key waits here until the first
		// commits or rolls back. Affected rows are not read.
		lockKey: "INSERT INTO " + t + "_order (sharding_hash) VALUES (?) ON DUPLICATE KEY UPDATE sharding_hash = sharding_hash",
		insert: "INSERT INTO " + t + " (topic, key_hash, biz_key, tag, sharding_key, sharding_hash, properties, body, delay_ms," +
			" status, attempts, next_attempt_at, lease_owner, last_error, msg_id, created_at, updated_at)" +
			" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, UTC_TIMESTAMP(6), '', '', '', UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))",
		confirm: "UPDATE " + t + " SET status = 2, updated_at = UTC_TIMESTAMP(6)" +
			" WHERE topic = ? AND key_hash = ? AND biz_key = ? AND status IN (0, 1)",
		replay: "UPDATE " + t + " SET status = 0, attempts = 0, next_attempt_at = UTC_TIMESTAMP(6), lease_owner = '', updated_at = UTC_TIMESTAMP(6)" +
			" WHERE id = ? AND status = 3",
		get:  "SELECT " + columns + " FROM " + t + " WHERE id = ?",
		list: "SELECT " + columns + " FROM " + t + " WHERE status = ? AND id > ? ORDER BY id LIMIT ?",
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

// BatchReport counts what one dispatch did.
type BatchReport struct {
	// Claimed rows, Sent (or resent) successfully, Failed and retried
	// later, made Dead, Blocked behind an earlier row of their sharding
	// key, and rows whose claim another relay took over (LostClaims).
	Claimed, Sent, Failed, Dead, Blocked, LostClaims int
}

// Add adds o's counts to b.
func (b *BatchReport) Add(o BatchReport) {
	b.Claimed += o.Claimed
	b.Sent += o.Sent
	b.Failed += o.Failed
	b.Dead += o.Dead
	b.Blocked += o.Blocked
	b.LostClaims += o.LostClaims
}

// DispatchDue claims up to limit due Pending rows (oldest due first,
// skipping rows other relays have locked) and sends them.
func (r *Relay) DispatchDue(ctx context.Context, limit int) (BatchReport, error) {
	return r.claimAndSend(ctx, r.q.selectDue, []any{limit}, Pending, false)
}

// ResendUnconfirmed claims up to limit Sent rows not confirmed within
// timeout and sends them again (a new message with the same key: the
// consumer's guard absorbs the duplicate). After maxAttempts sends in all
// a row is given up on: it stays Sent, is no longer resent, and the alert
// fires.
func (r *Relay) ResendUnconfirmed(ctx context.Context, timeout time.Duration, limit int) (BatchReport, error) {
	return r.claimAndSend(ctx, r.q.selectUnconfirmed, []any{timeout.Microseconds(), limit}, Sent, true)
}

func (r *Relay) claimAndSend(ctx context.Context, selectQ string, selectArgs []any, status Status, resend bool) (BatchReport, error) {
	owner := sqldb.Token()
	var ids []int64
	var err error
	for attempt := 1; ; attempt++ {
		ids, err = r.claim(ctx, owner, selectQ, selectArgs)
		if err == nil || !sqldb.IsDeadlock(err) || attempt == 3 {
			break
		}
		// InnoDB picked this claim as a deadlock victim: nothing was
		// claimed; try again.
	}
	if err != nil || len(ids) == 0 {
		return BatchReport{}, err
	}
	return r.sendClaimed(ctx, owner, ids, resend)
}

// claim locks up to the selected rows, skipping rows other relays hold,
// and stamps them with owner and a lease, in one short transaction.
func (r *Relay) claim(ctx context.Context, owner, selectQ string, selectArgs []any) ([]int64, error) {
	// READ COMMITTED: the claim locks only the rows it takes. Under
	// REPEATABLE READ the locking read would also lock the gaps of the due
	// index, and business transactions enqueueing at the same time would
	// deadlock with it.
	tx, err := r.db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
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
	q, args, err := sqlx.In(r.q.claimLocked, owner, r.cfg.lease.Microseconds(), ids)
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

// sendClaimed sends the rows owner holds among ids. Rows of one sharding
// key go in id order, one at a time, each marked Sent before the next is
// sent; other rows go concurrently.
func (r *Relay) sendClaimed(ctx context.Context, owner string, ids []int64, resend bool) (BatchReport, error) {
	q, args, err := sqlx.In(r.q.claimed, ids, owner)
	if err != nil {
		return BatchReport{}, fmt.Errorf("outbox: load claimed: %w", err)
	}
	var dbRows []dbRow
	if err := r.db.SelectContext(ctx, &dbRows, q, args...); err != nil {
		return BatchReport{}, fmt.Errorf("outbox: load claimed: %w", err)
	}
	rows := make([]*Row, 0, len(dbRows))
	for i := range dbRows {
		row, err := dbRows[i].row()
		if err != nil {
			return BatchReport{}, err
		}
		rows = append(rows, row)
	}
	return r.sendRows(ctx, owner, rows, resend, false)
}

// sendRows sends rows owner holds, in id order.
func (r *Relay) sendRows(ctx context.Context, owner string, rows []*Row, resend, shared bool) (BatchReport, error) {
	groups := map[string][]*Row{}
	var order []string
	for _, row := range rows {
		g := row.ShardingKey
		if g == "" {
			g = fmt.Sprint("\x00", row.ID) // unordered: a group of its own
		}
		if _, ok := groups[g]; !ok {
			order = append(order, g)
		}
		groups[g] = append(groups[g], row)
	}
	sort.Strings(order)
	var (
		mu     sync.Mutex
		sent   []sentRow
		report = BatchReport{Claimed: len(rows)}
		errs   []error
		wg     sync.WaitGroup
		sem    = make(chan struct{}, r.cfg.concurrency)
	)
	for _, g := range order {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			rep, done, err := r.sendGroup(ctx, owner, groups[g], resend)
			mu.Lock()
			report.Add(rep)
			sent = append(sent, done...)
			if err != nil {
				errs = append(errs, err)
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	// Unordered rows are marked Sent together, a chunk per statement;
	// after a Transact, together with other Transact calls' rows.
	if shared && len(sent) > 0 {
		if err := r.markShared(ctx, owner, sent); err != nil {
			errs = append(errs, err)
		} else {
			report.Sent += len(sent)
		}
		sent = nil
	}
	for len(sent) > 0 {
		chunk := sent[:min(len(sent), markChunk)]
		sent = sent[len(chunk):]
		n, err := r.markSentBatch(ctx, []string{owner}, chunk, resend)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		report.Sent += int(n)
		report.LostClaims += len(chunk) - int(n)
	}
	return report, errors.Join(errs...)
}

// markChunk bounds the rows one batched mark updates.
const markChunk = 500

type sentRow struct {
	id    int64
	msgID string
}

// markReq is one Transact call's rows to mark Sent, combined with other
// calls' into one statement (package combine: no caller flushes more than
// one batch).
type markReq struct {
	owner string
	rows  []sentRow
	err   error
}

// markRequests bounds the Transact calls one shared mark serves.
const markRequests = 64

// markFlushTimeout bounds a shared flush, which must not depend on the
// flusher's own ctx.
const markFlushTimeout = 10 * time.Second

func (r *Relay) flushMarks(ctx context.Context, reqs []*markReq) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), markFlushTimeout)
	defer cancel()
	var all []sentRow
	owners := make([]string, 0, len(reqs))
	for _, q := range reqs {
		all = append(all, q.rows...)
		owners = append(owners, q.owner)
	}
	var err error
	for len(all) > 0 && err == nil {
		chunk := all[:min(len(all), markChunk)]
		all = all[len(chunk):]
		_, err = r.markSentBatch(ctx, owners, chunk, false)
	}
	for _, q := range reqs {
		q.err = err
	}
}

// markShared marks rows Sent in a statement shared with concurrent calls.
// If ctx ends before any statement took them, it returns ctx's error and
// the rows stay claimed until their lease ends (then they are resent,
// which consumers absorb).
func (r *Relay) markShared(ctx context.Context, owner string, rows []sentRow) error {
	req := &markReq{owner: owner, rows: rows}
	if !r.marks.Do(ctx, req) {
		return ctx.Err()
	}
	return req.err
}

// markSentBatch marks rows Sent (or re-sent) in one conditional UPDATE and
// returns how many the owners still held. Each row is held by exactly one
// of the owners, so matching any of them matches its own.
func (r *Relay) markSentBatch(ctx context.Context, owners []string, rows []sentRow, resend bool) (int64, error) {
	var b strings.Builder
	args := make([]any, 0, 3*len(rows)+len(owners))
	b.WriteString("UPDATE " + r.cfg.table + " SET msg_id = CASE id")
	for _, s := range rows {
		b.WriteString(" WHEN ? THEN ?")
		args = append(args, s.id, s.msgID)
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
	for _, s := range rows {
		args = append(args, s.id)
	}
	n, err := r.exec(ctx, b.String(), args...)
	if err != nil {
		return 0, fmt.Errorf("outbox: mark %d rows sent: %w", len(rows), err)
	}
	return n, nil
}

// blockedRetry is how long a row waits when an earlier row of its
// sharding key is not Sent yet.
const blockedRetry = time.Second

// sendGroup sends one group's rows. An ordered group's rows are marked
// one by one before the next is sent; an unordered row is returned in
// done, for the batched mark.
func (r *Relay) sendGroup(ctx context.Context, owner string, rows []*Row, resend bool) (rep BatchReport, done []sentRow, err error) {
	for i, row := range rows {
		if row.ShardingKey != "" && !resend {
			var one int
			err := r.db.GetContext(ctx, &one, r.q.predecessor, sqldb.Hash(row.ShardingKey), row.ID, []byte(row.ShardingKey))
			if err == nil { // an earlier row of the key is Pending or Dead
				rep.Blocked += len(rows) - i
				return rep, nil, r.releaseAll(ctx, owner, rows[i:])
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return rep, nil, errors.Join(fmt.Errorf("outbox: predecessor of %d: %w", row.ID, err), r.releaseAll(ctx, owner, rows[i:]))
			}
		}
		if resend && row.Attempts >= r.cfg.maxAttempts {
			n, err := r.exec(ctx, r.q.giveUp, fmt.Sprintf("no consumer confirmed it after %d sends", row.Attempts), row.ID, owner)
			if err != nil {
				return rep, nil, fmt.Errorf("outbox: give up %d: %w", row.ID, err)
			}
			if n == 1 {
				r.dead(ctx, row, "unconfirmed after resends", &rep)
			}
			continue
		}
		res, sendErr := r.pub.Send(ctx, producer.Message{Topic: row.Topic, Body: row.Body, Keys: []string{row.Key},
			Tag: row.Tag, Properties: row.Properties, ShardingKey: row.ShardingKey, Delay: row.Delay})
		sent := sendErr == nil || producer.IsNotDurable(sendErr)
		if sent && (row.ShardingKey == "" || resend) {
			// Unordered rows, and resends (their order was settled by the
			// first send), are marked in one batch after the group.
			done = append(done, sentRow{row.ID, res.MsgID})
			continue
		}
		if sent {
			// The next row of the key is sent only once this one is Sent.
			n, err := r.exec(ctx, r.q.markSent, res.MsgID, row.ID, owner)
			if err != nil {
				return rep, nil, fmt.Errorf("outbox: mark %d sent: %w", row.ID, err)
			}
			if n == 0 {
				rep.LostClaims++
			} else {
				rep.Sent++
			}
			continue
		}
		if err := r.fail(ctx, owner, row, sendErr, resend, &rep); err != nil {
			return rep, done, err
		}
		if row.ShardingKey != "" && i+1 < len(rows) {
			rep.Blocked += len(rows) - i - 1
			return rep, nil, r.releaseAll(ctx, owner, rows[i+1:])
		}
	}
	return rep, done, nil
}

func (r *Relay) fail(ctx context.Context, owner string, row *Row, sendErr error, resend bool, rep *BatchReport) error {
	attempts := row.Attempts + 1
	text := sendErr.Error()
	switch {
	case resend && attempts >= r.cfg.maxAttempts:
		n, err := r.exec(ctx, r.q.giveUp, "unconfirmed after resends: "+text, row.ID, owner)
		if err != nil {
			return fmt.Errorf("outbox: give up %d: %w", row.ID, err)
		}
		if n == 1 {
			r.dead(ctx, row, text, rep)
		}
	case !resend && (attempts >= r.cfg.maxAttempts || producer.IsPermanent(sendErr)):
		n, err := r.exec(ctx, r.q.markDead, text, row.ID, owner)
		if err != nil {
			return fmt.Errorf("outbox: mark %d dead: %w", row.ID, err)
		}
		if n == 1 {
			r.dead(ctx, row, text, rep)
		}
	default:
		status := Pending
		if resend {
			status = Sent
		}
		if _, err := r.exec(ctx, r.q.retryLater, text, r.backoff(attempts).Microseconds(), row.ID, int(status), owner); err != nil {
			return fmt.Errorf("outbox: reschedule %d: %w", row.ID, err)
		}
		rep.Failed++
		r.cfg.logger.LogAttrs(ctx, slog.LevelWarn, "outbox send failed, retrying later", slog.Int64("id", row.ID),
			slog.String("topic", row.Topic), slog.Int("attempt", attempts), slog.Any("error", sendErr))
	}
	return nil
}

// dead reports a row given up on: made Dead, or (unconfirmed) no longer
// resent.
func (r *Relay) dead(ctx context.Context, row *Row, text string, rep *BatchReport) {
	rep.Dead++
	if row.Status == Pending {
		row.Status, row.Attempts = Dead, row.Attempts+1
	}
	row.LastError = text
	r.cfg.logger.LogAttrs(ctx, slog.LevelError, "outbox row dead: a human must act", slog.Int64("id", row.ID),
		slog.String("topic", row.Topic), slog.String("keys", row.Key), slog.String("error", text))
	if r.cfg.alert != nil {
		r.cfg.alert(ctx, row)
	}
}

func (r *Relay) releaseAll(ctx context.Context, owner string, rows []*Row) error {
	var errs []error
	for _, row := range rows {
		if _, err := r.exec(ctx, r.q.release, blockedRetry.Microseconds(), row.ID, owner); err != nil {
			errs = append(errs, fmt.Errorf("outbox: release %d: %w", row.ID, err))
		}
	}
	return errors.Join(errs...)
}

func (r *Relay) exec(ctx context.Context, q string, args ...any) (int64, error) {
	res, err := r.db.ExecContext(ctx, q, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// Purge deletes, batch rows at a time, rows in a final state not updated
// for retention: Confirmed and Aborted rows, and Sent rows too when
// includeSent (no consumer confirmation in use). It returns the number deleted.
func (r *Relay) Purge(ctx context.Context, retention time.Duration, includeSent bool, batch int) (int64, error) {
	if batch <= 0 {
		return 0, fmt.Errorf("outbox: purge batch %d <= 0", batch)
	}
	statuses := []Status{Confirmed, Aborted}
	if includeSent {
		statuses = append(statuses, Sent)
	}
	var total int64
	for _, s := range statuses {
		for {
			n, err := r.exec(ctx, r.q.purge, int(s), retention.Microseconds(), batch)
			if err != nil {
				return total, fmt.Errorf("outbox: purge: %w", err)
			}
			total += n
			if n < int64(batch) {
				break
			}
		}
	}
	return total, nil
}

// Backlog describes the rows still to be delivered.
type Backlog struct {
	Pending int64
	// OldestPending is the age of the oldest Pending row, 0 when none.
	OldestPending time.Duration
	DeadRows      int64
}

// Backlog counts Pending and Dead rows.
func (r *Relay) Backlog(ctx context.Context) (Backlog, error) {
	var b Backlog
	var oldestMicros int64
	if err := r.db.QueryRowxContext(ctx, r.q.pending).Scan(&b.Pending, &oldestMicros); err != nil {
		return b, fmt.Errorf("outbox: backlog: %w", err)
	}
	b.OldestPending = time.Duration(oldestMicros) * time.Microsecond
	if err := r.db.GetContext(ctx, &b.DeadRows, r.q.dead); err != nil {
		return b, fmt.Errorf("outbox: backlog: %w", err)
	}
	return b, nil
}
