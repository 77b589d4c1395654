package outbox

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/seed157d4c4d/reliablemq/internal/sqldb"
)

// marker writes the Sent marks of the rows Transact calls sent, in the
// background and many calls' rows to a statement: Transact returns once
// the broker has its rows, not after one more statement and commit of its
// own. While one statement runs, the calls that finish meanwhile queue up
// for the next, so the busier the relay, the larger the statements.
//
// A mark not written (the process exits first, the database refuses it)
// leaves its row Pending under the call's claim: once the lease ends,
// reconcile sends it again, a duplicate consumers' guards absorb.
// [Relay.Flush] waits for the marks queued before it.
//
// The goroutine writing the marks runs only while some are queued.
type marker struct {
	store  rowStore
	logger *slog.Logger

	mu       sync.Mutex
	queue    []*markReq
	running  bool
	queued   uint64        // requests ever queued; the n-th has seq n
	done     uint64        // requests written or failed, in queue order
	progress chan struct{} // closed, and replaced, when done moves
	// The failed statements no Flush has returned yet: how many, the
	// last one's error, and the seq of the first request in the first.
	unreported     int
	unreportedErr  error
	unreportedFrom uint64
}

// markReq is one Transact call's rows to mark Sent.
type markReq struct {
	owner string
	rows  []sentRow
}

// markRequests bounds the Transact calls one statement serves.
const markRequests = 64

// markBacklog is how many calls may wait for their marks before a call
// waits for its own: marks must not fall further behind than the database
// writes them (a row not marked when its lease ends is sent again).
const markBacklog = 16 * markRequests

func newMarker(s rowStore, logger *slog.Logger) *marker {
	return &marker{store: s, logger: logger, progress: make(chan struct{})}
}

// add queues owner's rows for marking and returns the request's seq, and
// whether so many are queued that the caller should wait for it.
func (m *marker) add(owner string, rows []sentRow) (seq uint64, wait bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.queue = append(m.queue, &markReq{owner: owner, rows: rows})
	m.queued++
	if !m.running {
		m.running = true
		go m.run()
	}
	return m.queued, len(m.queue) > markBacklog
}

func (m *marker) run() {
	for {
		m.mu.Lock()
		n := min(len(m.queue), markRequests)
		if n == 0 {
			m.queue, m.running = nil, false
			m.mu.Unlock()
			return
		}
		batch := m.queue[:n:n]
		m.queue = m.queue[n:]
		m.mu.Unlock()
		err := m.write(batch)
		m.mu.Lock()
		if err != nil {
			if m.unreported == 0 {
				m.unreportedFrom = m.done + 1
			}
			m.unreported++
			m.unreportedErr = err
		}
		m.done += uint64(n)
		close(m.progress)
		m.progress = make(chan struct{})
		m.mu.Unlock()
	}
}

// write marks a batch's rows Sent (see mysqlStore.markSentBatch).
func (m *marker) write(batch []*markReq) error {
	var all []sentRow
	owners := make([]string, 0, len(batch))
	for _, q := range batch {
		all = append(all, q.rows...)
		owners = append(owners, q.owner)
	}
	ctx, cancel := markContext(context.Background())
	defer cancel()
	_, err := markSent(ctx, m.store, owners, all, false)
	if err != nil {
		err = fmt.Errorf("outbox: marking %d sent rows: %w", len(all), err)
		m.logger.LogAttrs(ctx, slog.LevelWarn, "sent rows not marked Sent; reconcile sends them again once their lease ends",
			slog.Int("rows", len(all)), slog.Any("error", err))
	}
	return err
}

// markSent marks rows Sent (see retryMark) and returns how many it
// marked, an error notwithstanding.
func markSent(ctx context.Context, s rowStore, owners []string, rows []sentRow, resend bool) (int64, error) {
	var marked int64
	_, err := retryMark(func() (int64, error) {
		n, err := s.markSentBatch(ctx, owners, rows, resend)
		marked += n // rows a failed try marked no longer match the next
		return n, err
	})
	return marked, err
}

// retryMark runs a statement marking rows Sent again when InnoDB picks it
// as a deadlock victim or its lock wait runs out, up to three times: a
// mark is idempotent, and a mark not written means a resend of its rows
// once their lease ends (for a row with a sharding key, the rest of its
// key's rows wait for that too).
func retryMark[T any](mark func() (T, error)) (T, error) {
	for attempt := 1; ; attempt++ {
		v, err := mark()
		if err == nil || !sqldb.IsDeadlock(err) || attempt == 3 {
			return v, err
		}
	}
}

// wait returns once the requests up to seq are written or failed, or ctx
// ends.
func (m *marker) wait(ctx context.Context, seq uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for m.done < seq {
		progress := m.progress
		m.mu.Unlock()
		select {
		case <-progress:
		case <-ctx.Done():
			m.mu.Lock()
			return ctx.Err()
		}
		m.mu.Lock()
	}
	return nil
}

// Flush returns once the Sent marks of the rows every [Relay.Transact]
// call that returned before it sent are written (see Transact), or ctx
// ends. Call it before the process exits: a row whose mark is lost is
// sent again by reconcile once its lease ends. It returns an error when a
// mark failed (its rows are sent again too) that no Flush has reported
// yet: one of these calls', or a later call's that failed in the same
// statement or before Flush returned.
func (r *Relay) Flush(ctx context.Context) error {
	m := r.marks
	m.mu.Lock()
	seq := m.queued
	m.mu.Unlock()
	if err := m.wait(ctx, seq); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.unreported == 0 || m.unreportedFrom > seq {
		return nil
	}
	err := m.unreportedErr
	if m.unreported > 1 {
		err = fmt.Errorf("%d mark statements failed, the last: %w", m.unreported, err)
	}
	m.unreported, m.unreportedErr = 0, nil
	return err
}
