package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"
)

// fakeStore is an in-memory rowStore with a clock that moves only when a
// test says so. It follows mysqlStore's rules: a claim's lease is the
// row's due time, every owner-checked change needs the owner and the
// starting status, rows enqueued in a transaction are invisible until it
// commits.
type fakeStore struct {
	lease time.Duration

	mu     sync.Mutex
	now    time.Time
	nextID int64
	rows   map[int64]*fakeRow
}

type fakeRow struct {
	Row
	owner string
	tx    *fakeTx // the transaction that wrote it, until it commits
}

var _ rowStore = (*fakeStore)(nil)

// never is giveUp's due time: a row given up on is not due again.
var never = time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)

func newFakeStore(lease time.Duration) *fakeStore {
	return &fakeStore{lease: lease, now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), rows: map[int64]*fakeRow{}}
}

// advance moves the clock forward.
func (s *fakeStore) advance(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.now = s.now.Add(d)
}

// clock is the store's time, for the relay's own lease deadlines.
func (s *fakeStore) clock() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.now
}

func (s *fakeStore) copyOf(r *fakeRow) *Row {
	c := r.Row
	c.Properties = maps.Clone(r.Properties)
	if r.SentAt != nil {
		t := *r.SentAt
		c.SentAt = &t
	}
	return &c
}

func (s *fakeStore) enqueue(_ context.Context, ex Execer, m Message, owner string) (int64, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.rows {
		if r.Topic == m.Topic && r.Key == m.Key {
			return r.ID, false, nil
		}
	}
	s.nextID++
	r := &fakeRow{Row: Row{ID: s.nextID, Message: m, Status: Pending, NextAttemptAt: s.now, CreatedAt: s.now, UpdatedAt: s.now}}
	r.Properties = maps.Clone(m.Properties)
	if owner != "" {
		r.owner, r.NextAttemptAt = owner, s.now.Add(s.lease)
	}
	if tx, ok := ex.(*fakeTx); ok {
		r.tx = tx
	}
	s.rows[r.ID] = r
	return r.ID, true, nil
}

// visible is the rows a statement outside a transaction sees, in id order.
func (s *fakeStore) visible() []*fakeRow {
	var out []*fakeRow
	for _, r := range s.rows {
		if r.tx == nil {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b *fakeRow) int { return int(a.ID - b.ID) })
	return out
}

func (s *fakeStore) begin(context.Context) (storeTx, error) { return &fakeTx{s: s}, nil }

// sinceAsOf is how long before the fake's now a row must have been due:
// the real time since asOf, 0 for the zero asOf.
func sinceAsOf(asOf time.Time) time.Duration {
	if asOf.IsZero() {
		return 0
	}
	return time.Since(asOf)
}

func (s *fakeStore) claim(owner string, dueFor time.Duration, limit int, match func(*fakeRow) bool) []*Row {
	var due []*fakeRow
	for _, r := range s.visible() {
		if !r.NextAttemptAt.After(s.now.Add(-dueFor)) && match(r) {
			due = append(due, r)
		}
	}
	slices.SortStableFunc(due, func(a, b *fakeRow) int { return a.NextAttemptAt.Compare(b.NextAttemptAt) })
	due = due[:min(len(due), limit)]
	slices.SortFunc(due, func(a, b *fakeRow) int { return int(a.ID - b.ID) })
	out := make([]*Row, 0, len(due))
	for _, r := range due {
		r.owner, r.NextAttemptAt = owner, s.now.Add(s.lease)
		out = append(out, s.copyOf(r))
	}
	return out
}

func (s *fakeStore) claimDue(_ context.Context, owner string, asOf time.Time, limit int) ([]*Row, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.claim(owner, sinceAsOf(asOf), limit, func(r *fakeRow) bool { return r.Status == Pending }), nil
}

func (s *fakeStore) claimUnconfirmed(_ context.Context, owner string, asOf time.Time, timeout time.Duration, limit int) ([]*Row, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.claim(owner, sinceAsOf(asOf), limit, func(r *fakeRow) bool {
		return r.Status == Sent && r.SentAt != nil && r.SentAt.Add(r.Delay).Before(s.now.Add(-timeout))
	}), nil
}

func (s *fakeStore) predecessor(_ context.Context, row *Row) (earlier, time.Duration, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.visible() {
		if r.ShardingKey != row.ShardingKey || r.ID >= row.ID || (r.Status != Pending && r.Status != Dead) {
			continue
		}
		dueIn := max(r.NextAttemptAt.Sub(s.now), 0)
		switch {
		case r.Status == Dead:
			return blocked, 0, nil
		case r.owner != "" && dueIn > 0:
			return inFlight, dueIn, nil
		case dueIn == 0:
			return claimable, 0, nil
		}
		return blocked, dueIn, nil
	}
	return allSent, 0, nil
}

// held returns the row if it has status and owner.
func (s *fakeStore) held(id int64, status Status, owner string) *fakeRow {
	r := s.rows[id]
	if r == nil || r.tx != nil || r.Status != status || r.owner != owner {
		return nil
	}
	return r
}

func (s *fakeStore) sent(r *fakeRow, msgID string, resend bool) {
	now := s.now
	r.Attempts++
	r.MsgID, r.owner, r.SentAt, r.NextAttemptAt, r.UpdatedAt = msgID, "", &now, now, now
	if !resend {
		r.Status, r.LastError = Sent, ""
	}
}

func (s *fakeStore) markSent(_ context.Context, id int64, owner, msgID string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.held(id, Pending, owner)
	if r == nil {
		return false, nil
	}
	s.sent(r, msgID, false)
	return true, nil
}

func (s *fakeStore) markSentBatch(_ context.Context, owners []string, rows []sentRow, resend bool) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	status := Pending
	if resend {
		status = Sent
	}
	var n int64
	for _, sr := range rows {
		r := s.rows[sr.id]
		if r == nil || r.tx != nil || r.Status != status || !slices.Contains(owners, r.owner) {
			continue
		}
		s.sent(r, sr.msgID, resend)
		n++
	}
	return n, nil
}

func (s *fakeStore) retryLater(_ context.Context, id int64, status Status, owner, lastErr string, after time.Duration) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.held(id, status, owner)
	if r == nil {
		return false, nil
	}
	r.Attempts++
	r.LastError, r.owner, r.NextAttemptAt, r.UpdatedAt = lastErr, "", s.now.Add(after), s.now
	return true, nil
}

func (s *fakeStore) markDead(_ context.Context, id int64, owner, lastErr string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.held(id, Pending, owner)
	if r == nil {
		return false, nil
	}
	r.Attempts++
	r.Status, r.LastError, r.owner, r.UpdatedAt = Dead, lastErr, "", s.now
	return true, nil
}

func (s *fakeStore) giveUp(_ context.Context, id int64, owner, lastErr string, sent bool) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.held(id, Sent, owner)
	if r == nil {
		return false, nil
	}
	if sent {
		r.Attempts++
	}
	r.LastError, r.owner, r.NextAttemptAt, r.UpdatedAt = lastErr, "", never, s.now
	return true, nil
}

func (s *fakeStore) release(_ context.Context, ids []int64, owner string, after time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		if r := s.rows[id]; r != nil && r.tx == nil && r.owner == owner {
			r.owner, r.NextAttemptAt = "", s.now.Add(after)
		}
	}
	return nil
}

func (s *fakeStore) confirm(_ context.Context, _ Execer, topic, key string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.visible() {
		if r.Topic == topic && r.Key == key && (r.Status == Pending || r.Status == Sent) {
			if r.Status == Pending && r.ShardingKey != "" {
				// As the MySQL store: the key's later rows, handed back
				// behind this one, are due now.
				for _, l := range s.visible() {
					if l.ShardingKey == r.ShardingKey && l.ID > r.ID && l.Status == Pending && l.owner == "" && l.NextAttemptAt.After(s.now) {
						l.NextAttemptAt = s.now
					}
				}
			}
			r.Status, r.UpdatedAt = Confirmed, s.now
			return true, nil
		}
	}
	return false, nil
}

func (s *fakeStore) replay(_ context.Context, id int64) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rows[id]
	if r == nil || r.tx != nil || r.Status != Dead {
		return false, nil
	}
	r.Status, r.Attempts, r.NextAttemptAt, r.owner, r.UpdatedAt = Pending, 0, s.now, "", s.now
	return true, nil
}

func (s *fakeStore) get(_ context.Context, id int64) (*Row, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rows[id]
	if r == nil || r.tx != nil {
		return nil, fmt.Errorf("%w: %d", ErrNotFound, id)
	}
	return s.copyOf(r), nil
}

func (s *fakeStore) list(_ context.Context, status Status, afterID int64, limit int) ([]*Row, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*Row
	for _, r := range s.visible() {
		if r.Status == status && r.ID > afterID && len(out) < limit {
			out = append(out, s.copyOf(r))
		}
	}
	return out, nil
}

func (s *fakeStore) find(_ context.Context, key string) ([]*Row, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*Row
	for _, r := range s.visible() {
		if r.Key == key {
			out = append(out, s.copyOf(r))
		}
	}
	return out, nil
}

func (s *fakeStore) purge(_ context.Context, status Status, retention time.Duration, limit int) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for _, r := range s.visible() {
		if r.Status == status && r.UpdatedAt.Before(s.now.Add(-retention)) && n < int64(limit) {
			delete(s.rows, r.ID)
			n++
		}
	}
	return n, nil
}

func (s *fakeStore) backlog(context.Context) (Backlog, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b Backlog
	for _, r := range s.visible() {
		switch r.Status {
		case Pending:
			b.Pending++
			b.OldestPending = max(b.OldestPending, s.now.Sub(r.CreatedAt))
		case Dead:
			b.DeadRows++
		}
	}
	return b, nil
}

// fakeTx is a fakeStore transaction: it runs no SQL; rows enqueued through
// it become visible on Commit and vanish on Rollback.
type fakeTx struct {
	s    *fakeStore
	done bool
}

var errNoSQL = errors.New("fake store: no SQL")

func (t *fakeTx) ExecContext(context.Context, string, ...any) (sql.Result, error) {
	return nil, errNoSQL
}
func (t *fakeTx) QueryRowContext(context.Context, string, ...any) *sql.Row { return nil }
func (t *fakeTx) QueryContext(context.Context, string, ...any) (*sql.Rows, error) {
	return nil, errNoSQL
}
func (t *fakeTx) GetContext(context.Context, any, string, ...any) error     { return errNoSQL }
func (t *fakeTx) PrepareContext(context.Context, string) (*sql.Stmt, error) { return nil, errNoSQL }
func (t *fakeTx) SelectContext(context.Context, any, string, ...any) error  { return errNoSQL }
func (t *fakeTx) NamedExecContext(context.Context, string, any) (sql.Result, error) {
	return nil, errNoSQL
}

func (t *fakeTx) end(commit bool) error {
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	if t.done {
		return sql.ErrTxDone
	}
	t.done = true
	for id, r := range t.s.rows {
		if r.tx != t {
			continue
		}
		if commit {
			r.tx = nil
		} else {
			delete(t.s.rows, id)
		}
	}
	return nil
}

func (t *fakeTx) Commit() error   { return t.end(true) }
func (t *fakeTx) Rollback() error { return t.end(false) }
