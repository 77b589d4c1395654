package idempotency

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/sqldb"
)

// ClaimBatch implements [BatchStore]: one multi-row INSERT ... ON
// DUPLICATE KEY UPDATE (a single autocommitted statement: one commit for
// the batch) claims every free key and leaves held ones untouched, then
// one SELECT reads who holds each. A row holding the item's own token was
// claimed by it (tokens are unique per claim, and only the holder or a
// take-over after its lease changes the row); a done row is Done; any
// other is Busy. Rows are written in key-hash order, so two batches lock
// shared keys in the same order; a deadlock victim tries again.
func (s *MySQLStore) ClaimBatch(ctx context.Context, group string, items []KeyToken, lease time.Duration) []ClaimResult {
	results := make([]ClaimResult, len(items))
	hashes := make([][]byte, len(items))
	for i, it := range items {
		hashes[i] = sqldb.Hash(it.Key)
	}
	pending := make([]int, len(items))
	for i := range pending {
		pending[i] = i
	}
	for round := 0; len(pending) > 0; round++ {
		if round == 3 { // a purge or Forget removed rows between the two statements, repeatedly
			for _, i := range pending {
				results[i].Err = errors.New("key removed repeatedly while claiming")
			}
			break
		}
		rows, err := s.claimRows(ctx, group, items, hashes, pending, lease)
		if err != nil {
			for _, i := range pending {
				results[i].Err = err
			}
			break
		}
		var again []int
		for _, i := range pending {
			r, ok := rows[string(hashes[i])]
			switch {
			case !ok:
				again = append(again, i)
			case r.Token == items[i].Token && r.Status == statusProcessing:
				results[i] = ClaimResult{Outcome: Acquired, Attempts: r.Attempts}
			case r.Status == statusDone:
				results[i] = ClaimResult{Outcome: Done}
			default:
				results[i] = ClaimResult{Outcome: Busy}
			}
		}
		pending = again
	}
	return results
}

type claimRow struct {
	Hash     []byte `db:"key_hash"`
	Token    string `db:"token"`
	Status   int    `db:"status"`
	Attempts int    `db:"attempts"`
}

// claimRows runs the batch claim for items[pending] and returns the rows
// of their keys by hash.
func (s *MySQLStore) claimRows(ctx context.Context, group string, items []KeyToken, hashes [][]byte, pending []int, lease time.Duration) (map[string]claimRow, error) {
	order := slices.Clone(pending)
	slices.SortStableFunc(order, func(a, b int) int { return bytes.Compare(hashes[a], hashes[b]) })
	var q strings.Builder
	q.WriteString(s.q.batchInsert)
	args := make([]any, 0, 5*len(order))
	for n, i := range order {
		if n > 0 {
			q.WriteString(", ")
		}
		q.WriteString(batchRow)
		args = append(args, group, hashes[i], []byte(items[i].Key), items[i].Token, lease.Microseconds())
	}
	q.WriteString(s.q.batchTakeOver)
	var err error
	for attempt := 1; ; attempt++ {
		if _, err = s.db.ExecContext(ctx, q.String(), args...); err == nil || !sqldb.IsDeadlock(err) || attempt == 3 {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	q.Reset()
	q.WriteString(s.q.batchStatus)
	args = append(args[:0], group)
	for n, i := range order {
		if n > 0 {
			q.WriteString(", ")
		}
		q.WriteString("?")
		args = append(args, hashes[i])
	}
	q.WriteString(")")
	var found []claimRow
	if err := s.db.SelectContext(ctx, &found, q.String(), args...); err != nil {
		return nil, err
	}
	rows := make(map[string]claimRow, len(found))
	for _, r := range found {
		rows[string(r.Hash)] = r
	}
	return rows, nil
}

// CompleteBatch implements [BatchStore]: in one short transaction, a
// SELECT ... FOR UPDATE finds and locks the rows each item's token still
// holds, and one UPDATE turns exactly those into done markers (one commit
// for the batch). Every other item gets ErrLostClaim.
func (s *MySQLStore) CompleteBatch(ctx context.Context, group string, items []KeyToken, retain time.Duration) []error {
	errs := make([]error, len(items))
	fail := func(err error) []error {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	var err error
	for attempt := 1; ; attempt++ {
		if err = s.completeBatch(ctx, group, items, retain, errs); err == nil || !sqldb.IsDeadlock(err) || attempt == 3 {
			break
		}
		clear(errs)
	}
	if err != nil {
		return fail(err)
	}
	return errs
}

func (s *MySQLStore) completeBatch(ctx context.Context, group string, items []KeyToken, retain time.Duration, errs []error) error {
	hashes := make([][]byte, len(items))
	var q strings.Builder
	q.WriteString(s.q.batchHeld)
	args := make([]any, 0, 1+len(items))
	args = append(args, group)
	for i, it := range items {
		hashes[i] = sqldb.Hash(it.Key)
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString("?")
		args = append(args, hashes[i])
	}
	q.WriteString(") AND status = 1 ORDER BY key_hash FOR UPDATE")
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // after Commit a no-op; on failure the error returned is the one to report
	var held []claimRow
	if err := tx.SelectContext(ctx, &held, q.String(), args...); err != nil {
		return err
	}
	owner := make(map[string]string, len(held))
	for _, r := range held {
		owner[string(r.Hash)] = r.Token
	}
	q.Reset()
	q.WriteString(s.q.batchComplete)
	args = append(args[:0], retain.Microseconds(), group)
	n := 0
	for i, it := range items {
		h := string(hashes[i])
		if t, ok := owner[h]; !ok || t != it.Token {
			errs[i] = ErrLostClaim
			continue
		}
		delete(owner, h) // the same claim twice: done by the first
		if n > 0 {
			q.WriteString(", ")
		}
		q.WriteString("?")
		args = append(args, hashes[i])
		n++
	}
	if n == 0 {
		return nil
	}
	q.WriteString(") AND status = 1")
	res, err := tx.ExecContext(ctx, q.String(), args...)
	if err != nil {
		return err
	}
	if got, err := res.RowsAffected(); err != nil {
		return err
	} else if got != int64(n) {
		return errors.New("rows held under lock changed")
	}
	return tx.Commit()
}

// batchRow is one row of the batch claim's VALUES.
const batchRow = "(?, ?, ?, 1, ?, 1, UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))"
