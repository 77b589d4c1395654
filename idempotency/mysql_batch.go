package idempotency

import (
	"bytes"
	"context"
	"database/sql"
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
	if len(items) == 0 {
		return results
	}
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

// CompleteBatch implements [BatchStore] with one UPDATE (one commit for
// the batch): every row still held by its item's token (tokens are unique
// per claim) becomes a done marker, and takes a token of this call's own.
// When it changes fewer rows than the batch has claims, one SELECT of
// that token tells exactly which it completed; the others get
// ErrLostClaim. (A done row's token is never read again: Complete and
// Release need a processing row, and a take-over writes its own.)
func (s *MySQLStore) CompleteBatch(ctx context.Context, group string, items []KeyToken, retain time.Duration) []error {
	errs := make([]error, len(items))
	if len(items) == 0 {
		return errs
	}
	hashes := make([][]byte, len(items))
	first := make(map[KeyToken]int, len(items)) // the same claim twice: done by the first, lost by the second
	var q strings.Builder
	q.WriteString(s.q.batchComplete)
	mark := sqldb.Token()
	args := make([]any, 0, 3+2*len(items))
	args = append(args, mark, retain.Microseconds(), group)
	var in strings.Builder // the hashes' placeholders, for both statements
	tokens := make([]any, 0, len(items))
	keys := make(map[string]bool, len(items))
	var later []int // a key's second claim: completed alone, after the batch
	for i, it := range items {
		hashes[i] = sqldb.Hash(it.Key)
		if _, dup := first[it]; dup {
			errs[i] = ErrLostClaim
			continue
		}
		if keys[it.Key] {
			later = append(later, i)
			continue
		}
		keys[it.Key] = true
		first[it] = i
		if len(first) > 1 {
			in.WriteString(", ")
		}
		in.WriteString("?")
		args = append(args, hashes[i])
		tokens = append(tokens, it.Token)
	}
	// Key and token are matched as two lists: each token is one claim's,
	// of one key, so a row matches only with its own claim's pair.
	q.WriteString(in.String())
	q.WriteString(") AND token IN (")
	q.WriteString(strings.Repeat(", ?", len(tokens))[2:])
	q.WriteString(") AND status = 1")
	args = append(args, tokens...)
	fail := func(err error) []error {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	var res sql.Result
	var err error
	for attempt := 1; ; attempt++ {
		if res, err = s.db.ExecContext(ctx, q.String(), args...); err == nil || !sqldb.IsDeadlock(err) || attempt == 3 {
			break
		}
	}
	if err != nil {
		return fail(err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fail(err)
	}
	defer func() {
		for _, i := range later {
			errs[i] = s.Complete(ctx, group, items[i].Key, items[i].Token, retain)
		}
	}()
	if n == int64(len(first)) {
		return errs
	}
	var done [][]byte
	marked := s.q.batchMarked + in.String() + ")"
	if err := s.db.SelectContext(ctx, &done, marked, append([]any{group, mark}, args[3:3+len(tokens)]...)...); err != nil {
		return fail(err)
	}
	completed := make(map[string]bool, len(done))
	for _, h := range done {
		completed[string(h)] = true
	}
	for _, i := range first {
		if !completed[string(hashes[i])] {
			errs[i] = ErrLostClaim
		}
	}
	return errs
}

// batchRow is one row of the batch claim's VALUES.
const batchRow = "(?, ?, ?, 1, ?, 1, UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))"
