package idempotency

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/sqldb"
	"github.com/seed157d4c4d/reliablemq/internal/token"
)

// ClaimBatch implements [BatchStore]. Most batches hold new keys only (a
// first delivery): one plain multi-row INSERT claims them all, with no
// read. When a key has a row already, that INSERT fails as a whole and
// inserts nothing; then one multi-row INSERT ... ON DUPLICATE KEY UPDATE
// (a single autocommitted statement: one commit for the batch) claims
// every free key and leaves held ones untouched, and one SELECT reads who
// holds each. A row holding the item's own token was
// claimed by it (tokens are unique per claim, and only the holder or a
// take-over after its lease changes the row); a done row is Done; any
// other is Busy. Rows are written in key-hash order, so two batches lock
// shared keys in the same order; a deadlock victim tries again.
func (s *MySQLStore) ClaimBatch(ctx context.Context, group string, items []KeyToken, lease time.Duration) []ClaimResult {
	if err := checkGroup(group); err != nil {
		results := make([]ClaimResult, len(items))
		for i := range results {
			results[i].Err = err
		}
		return results
	}
	return withoutToken(items, "", errEmptyToken, claimRefused, func(items []KeyToken) []ClaimResult {
		return inRounds(items, func(items []KeyToken) []ClaimResult { return s.claimBatch(ctx, group, items, lease) })
	})
}

// maxBatchRound bounds the items one batch statement carries: past the
// statement's inline budget each item goes as placeholders, and some
// 17,000 items exceeded the server's 65,535 placeholders per statement
// (error 1390), failing every key of the batch.
const maxBatchRound = 1000

// inRounds runs do over items in rounds of at most maxBatchRound, in
// order (a key repeated in a later round meets the earlier round's
// outcome, as within one round), and returns the results in items' order.
func inRounds[R any](items []KeyToken, do func([]KeyToken) []R) []R {
	if len(items) <= maxBatchRound {
		return do(items)
	}
	results := make([]R, 0, len(items))
	for len(items) > 0 {
		n := min(len(items), maxBatchRound)
		results = append(results, do(items[:n])...)
		items = items[n:]
	}
	return results
}

func (s *MySQLStore) claimBatch(ctx context.Context, group string, items []KeyToken, lease time.Duration) []ClaimResult {
	results := make([]ClaimResult, len(items))
	if len(items) == 0 {
		return results
	}
	hashes := make([][]byte, len(items))
	pending := make([]int, 0, len(items))
	for i, it := range items {
		if results[i].Err = checkKey(it.Key); results[i].Err == nil {
			hashes[i] = sqldb.Hash(it.Key)
			pending = append(pending, i)
		}
	}
	if len(pending) == 0 {
		return results
	}
	if err := s.names.Check(ctx, s.db); err != nil {
		for _, i := range pending {
			results[i].Err = fmt.Errorf("idempotency: claim: %w", err)
		}
		return results
	}
	slices.SortStableFunc(pending, func(a, b int) int { return bytes.Compare(hashes[a], hashes[b]) })
	query, args := s.batchStatement(group, items, hashes, pending, lease).Query()
	_, err := sqldb.Exec(ctx, s.db, query, args...)
	switch {
	case err == nil:
		for _, i := range pending {
			results[i] = ClaimResult{Outcome: Acquired, Attempts: 1}
		}
		return results
	case !sqldb.IsDuplicate(err) && !sqldb.IsDeadlock(err):
		for _, i := range pending {
			results[i].Err = err
		}
		return results
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

// claimRows runs the batch claim for items[order] (in key-hash order) and
// returns the rows of their keys by hash.
func (s *MySQLStore) claimRows(ctx context.Context, group string, items []KeyToken, hashes [][]byte, order []int, lease time.Duration) (map[string]claimRow, error) {
	query, args := s.batchStatement(group, items, hashes, order, lease).SQL(s.q.batchTakeOver).Query()
	var err error
	for attempt := 1; ; attempt++ {
		if _, err = sqldb.Exec(ctx, s.db, query, args...); err == nil || !sqldb.IsDeadlock(err) || attempt == 3 {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	st := sqldb.NewStatement(len(s.q.batchStatus) + len(order)*70 + 600).SQL(s.q.batchStatus).String(group).SQL(" AND key_hash IN (")
	for n, i := range order {
		if n > 0 {
			st.SQL(", ")
		}
		st.Bytes(hashes[i])
	}
	query, args = st.SQL(")").Query()
	var found []claimRow
	if err := sqldb.Select(ctx, s.db, &found, query, args...); err != nil {
		return nil, err
	}
	rows := make(map[string]claimRow, len(found))
	for _, r := range found {
		rows[string(r.Hash)] = r
	}
	return rows, nil
}

// batchStatement returns the multi-row INSERT of the claims of
// items[order], in that order.
func (s *MySQLStore) batchStatement(group string, items []KeyToken, hashes [][]byte, order []int, lease time.Duration) *sqldb.Statement {
	st := sqldb.NewStatement(len(s.q.insert) + len(s.q.batchTakeOver) + len(order)*(2*len(items[order[0]].Key)+300)).SQL(s.q.insert)
	for n, i := range order {
		if n > 0 {
			st.SQL(", ")
		}
		appendRow(st, group, hashes[i], items[i].Key, statusProcessing, items[i].Token, lease)
	}
	return st
}

// CompleteBatch implements [BatchStore] with one UPDATE (one commit for
// the batch): every row still held by its item's token (tokens are unique
// per claim) becomes a done marker, and takes a token of this call's own.
// When it changes fewer rows than the batch has claims, one SELECT of
// that token tells exactly which it completed; the others get
// ErrLostClaim. (A done row's token is never read again: Complete and
// Release need a processing row, and a take-over writes its own.)
func (s *MySQLStore) CompleteBatch(ctx context.Context, group string, items []KeyToken, retain time.Duration) []error {
	return withoutToken(items, "", errEmptyToken, completionRefused, func(items []KeyToken) []error {
		return inRounds(items, func(items []KeyToken) []error { return s.completeBatch(ctx, group, items, retain) })
	})
}

func (s *MySQLStore) completeBatch(ctx context.Context, group string, items []KeyToken, retain time.Duration) []error {
	errs := make([]error, len(items))
	if len(items) == 0 {
		return errs
	}
	hashes := make([][]byte, len(items))
	first := make(map[KeyToken]int, len(items)) // the same claim twice: done by the first, lost by the second
	keys := make(map[string]bool, len(items))
	var batch []int // the items completed by the UPDATE, in order
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
		batch = append(batch, i)
	}
	// appendHashes appends the batch's keys as a list.
	appendHashes := func(st *sqldb.Statement) *sqldb.Statement {
		for n, i := range batch {
			if n > 0 {
				st.SQL(", ")
			}
			st.Bytes(hashes[i])
		}
		return st.SQL(")")
	}
	// Key and token are matched as two lists: each token is one claim's,
	// of one key, so a row matches only with its own claim's pair.
	mark := token.New()
	st := sqldb.NewStatement(len(s.q.batchComplete) + len(batch)*150 + 600).SQL(s.q.batchComplete).Int(retain.Microseconds()).
		SQL(" MICROSECOND, token = ").String(mark).SQL(" WHERE consumer_group = ").String(group).SQL(" AND key_hash IN (")
	appendHashes(st).SQL(" AND token IN (")
	for n, i := range batch {
		if n > 0 {
			st.SQL(", ")
		}
		st.String(items[i].Token)
	}
	query, args := st.SQL(") AND status = 1").Query()
	fail := func(err error) []error {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	var res sql.Result
	var err error
	for attempt := 1; ; attempt++ {
		if res, err = sqldb.Exec(ctx, s.db, query, args...); err == nil || !sqldb.IsDeadlock(err) || attempt == 3 {
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
	st = sqldb.NewStatement(len(s.q.batchMarked) + len(batch)*70 + 600).SQL(s.q.batchMarked).String(group).
		SQL(" AND token = ").String(mark).SQL(" AND status = 2 AND key_hash IN (")
	query, args = appendHashes(st).Query()
	var done [][]byte
	if err := sqldb.Select(ctx, s.db, &done, query, args...); err != nil {
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
