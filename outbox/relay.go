package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/internal/sqldb"
	"github.com/seed157d4c4d/reliablemq/internal/token"
)

// Relay writes, sends and tracks outbox rows. It is safe for concurrent
// use, and any number of relays (in any number of processes) may share a
// table: rows are claimed with SELECT ... FOR UPDATE SKIP LOCKED and a
// lease, and every state change is one conditional UPDATE.
type Relay struct {
	store rowStore
	pub   Publisher
	cfg   config
	marks *marker
	fly   flights
	now   func() time.Time // the clock claims' leases are counted on here
}

// NewRelay returns a relay over db's outbox table, sending through pub.
func NewRelay(db *sqlx.DB, pub Publisher, opts ...Option) (*Relay, error) {
	c, err := newConfig(opts)
	if db == nil || pub == nil {
		err = errors.Join(errors.New("outbox: nil db or publisher"), err)
	}
	if err != nil {
		return nil, err
	}
	return newRelay(newMySQLStore(db, c.table, c.lease), pub, c), nil
}

func newConfig(opts []Option) (config, error) {
	c := config{common: common{table: "mq_log"}, lease: time.Minute, maxAttempts: 10, backoff: time.Second,
		maxBackoff: 10 * time.Minute, concurrency: 16}
	for _, o := range opts {
		o.applyRelay(&c)
	}
	var errs []error
	if !sqldb.ValidTable(c.table + "_order") {
		errs = append(errs, fmt.Errorf("outbox: table name %q is not a plain identifier of at most 58 bytes", c.table))
	}
	if c.lease < time.Second {
		errs = append(errs, fmt.Errorf("outbox: lease %v < 1s", c.lease))
	}
	if c.maxAttempts < 1 {
		errs = append(errs, fmt.Errorf("outbox: max attempts %d < 1", c.maxAttempts))
	}
	if c.backoff <= 0 || c.maxBackoff < c.backoff {
		errs = append(errs, fmt.Errorf("outbox: backoff %v..%v", c.backoff, c.maxBackoff))
	}
	if c.concurrency < 1 {
		errs = append(errs, fmt.Errorf("outbox: concurrency %d < 1", c.concurrency))
	}
	if c.logger == nil {
		c.logger = slog.Default()
	}
	return c, errors.Join(errs...)
}

// newRelay returns a relay whose rows live in s.
func newRelay(s rowStore, pub Publisher, c config) *Relay {
	r := &Relay{store: s, pub: pub, cfg: c, now: time.Now}
	r.marks = newMarker(s, c.logger)
	return r
}

// Enqueue writes m as a Pending row through ex, normally the business
// transaction, so the row commits or rolls back with the business data. A
// second Enqueue of the same topic and key returns the existing row's id
// with created false (the first message wins).
//
// A message with a ShardingKey locks that key until ex's transaction ends:
// another transaction enqueueing the same key waits for it, so a key's
// rows are sent in the order their transactions enqueued them even when
// the later transaction would commit first. Enqueue a transaction's keys in
// a consistent order (or retry on a deadlock error) when it enqueues
// several. Through a plain *sql.DB (no transaction) the lock ends with the
// statement.
func (r *Relay) Enqueue(ctx context.Context, ex Execer, m Message) (id int64, created bool, err error) {
	// What a hook adds is checked too: a committed row no send can
	// deliver would go Dead later.
	m.Properties = r.cfg.hooks.InjectInto(ctx, m.Properties)
	if err := validate(m); err != nil {
		return 0, false, err
	}
	return r.store.enqueue(ctx, ex, m, "")
}

// Tx is a business transaction started by [Relay.Transact]; rows enqueued
// through it are sent right after it commits. It offers the statements a
// business transaction needs, and no Commit or Rollback: Transact ends the
// transaction, by fn's result. It is not safe for concurrent use (nor is
// the transaction beneath it).
type Tx struct {
	tx    storeTx
	relay *Relay
	owner string
	rows  []*Row
	// deadline is the end of the first row's claim, counted from before
	// its insert: a transaction that commits later sends none of its rows
	// (reconcile may have claimed them as soon as they were visible).
	deadline time.Time
}

// ExecContext runs a statement in the transaction.
func (t *Tx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return t.tx.ExecContext(ctx, query, args...)
}

// QueryContext runs a query in the transaction.
func (t *Tx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return t.tx.QueryContext(ctx, query, args...)
}

// QueryRowContext runs a query expected to return at most one row.
func (t *Tx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return t.tx.QueryRowContext(ctx, query, args...)
}

// GetContext scans one row into dest, as sqlx does.
func (t *Tx) GetContext(ctx context.Context, dest any, query string, args ...any) error {
	return t.tx.GetContext(ctx, dest, query, args...)
}

// SelectContext scans rows into the slice dest, as sqlx does.
func (t *Tx) SelectContext(ctx context.Context, dest any, query string, args ...any) error {
	return t.tx.SelectContext(ctx, dest, query, args...)
}

// PrepareContext prepares a statement in the transaction (arguments sent
// through it are never interpolated into its text, whatever the DSN says).
func (t *Tx) PrepareContext(ctx context.Context, query string) (*sql.Stmt, error) {
	return t.tx.PrepareContext(ctx, query)
}

// NamedExecContext runs a statement with named parameters, as sqlx does.
func (t *Tx) NamedExecContext(ctx context.Context, query string, arg any) (sql.Result, error) {
	return t.tx.NamedExecContext(ctx, query, arg)
}

// Enqueue writes m in this transaction (see [Relay.Enqueue]). Key is the
// event's identity: a topic and key already in the outbox (an earlier
// event, or a retry of this request) are not written again, and Enqueue
// returns the existing row's id with an error matching [ErrDuplicate]; the
// transaction stays usable, so a caller retrying a request may ignore it.
// Key an order's successive events apart ("o-1-paid", "o-1-shipped") and
// use ShardingKey for the order.
func (t *Tx) Enqueue(ctx context.Context, m Message) (int64, error) {
	m.Properties = t.relay.cfg.hooks.InjectInto(ctx, m.Properties)
	if err := validate(m); err != nil {
		return 0, err
	}
	if t.deadline.IsZero() {
		t.deadline = t.relay.now().Add(t.relay.cfg.lease)
	}
	id, created, err := t.relay.store.enqueue(ctx, t.tx, m, t.owner)
	if err != nil {
		return id, err
	}
	if !created {
		return id, fmt.Errorf("%w: %s/%s is row %d", ErrDuplicate, m.Topic, m.Key, id)
	}
	t.rows = append(t.rows, &Row{ID: id, Message: m})
	return id, nil
}

// Transact runs fn in a new transaction and commits it; fn's error (or
// panic) rolls it back. After the commit it sends the rows fn enqueued and
// marks them Sent. A failed send does not fail Transact: the business data
// and the rows are committed, and the reconcile job sends what is still
// Pending. The returned error is only about the transaction. The rows are
// written already claimed by this call for the relay's lease, so a
// reconcile job does not race the send after commit; if the process dies
// before sending, reconcile sends them once the lease ends. The lease
// runs from the first Enqueue: a transaction still open when it ends
// sends nothing after its commit (reconcile may already be sending the
// rows), and reconcile sends them; nor does a send start past it.
//
// A row with a sharding key is marked Sent before Transact returns (the
// key's next row waits for it). Other rows the broker accepted are marked
// in the background, with other calls' rows, a statement at a time,
// whatever ctx does: Transact waits for its marks only when more than a
// thousand calls' are queued. Call [Relay.Flush] before the process exits;
// a row whose mark was lost is sent again once its lease ends.
func (r *Relay) Transact(ctx context.Context, fn func(context.Context, *Tx) error) error {
	tx, err := r.store.begin(ctx)
	if err != nil {
		return err
	}
	t := &Tx{tx: tx, relay: r, owner: token.New()}
	committed := false
	defer func() {
		if !committed {
			_ = tx.Rollback() // fn failed or panicked; the rollback error adds nothing
		}
	}()
	if err := fn(ctx, t); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("outbox: commit: %w", err)
	}
	committed = true
	if len(t.rows) > 0 {
		// The rows are claimed by this transaction's token: send them from
		// memory, no claim or reload needed.
		if _, err := r.sendRows(ctx, t.owner, t.rows, false, true, false, t.deadline); err != nil {
			r.cfg.logger.LogAttrs(ctx, slog.LevelWarn, "dispatch after commit failed; reconcile will send",
				slog.Int("rows", len(t.rows)), slog.Any("error", err))
		}
	}
	return nil
}

// Confirm records, through ex (the consumer's transaction when it shares
// the database), that the message of topic and key was consumed. Reconcile
// stops resending it. It reports whether a row moved to Confirmed.
//
// It is one statement for a Sent row, and for a Pending one without a
// sharding key (its Sent mark not written yet, or its send timed out yet
// reached the broker). A Pending row with a sharding key takes four: the
// later rows of its key, which waited for it, are made due now. Those rows stay locked in
// ex's transaction until it ends, as the confirmed row does, and under
// REPEATABLE READ new rows of the key wait for it too.
func (r *Relay) Confirm(ctx context.Context, ex Execer, topic, key string) (bool, error) {
	return r.store.confirm(ctx, ex, topic, key)
}

// Replay moves a Dead row back to Pending with its attempts reset, for
// the next dispatch.
func (r *Relay) Replay(ctx context.Context, id int64) error {
	moved, err := r.store.replay(ctx, id)
	if err != nil || moved {
		return err
	}
	if _, err := r.store.get(ctx, id); err != nil {
		return err
	}
	return fmt.Errorf("%w: %d", ErrNotDead, id)
}

// Get returns one row, or [ErrNotFound].
func (r *Relay) Get(ctx context.Context, id int64) (*Row, error) { return r.store.get(ctx, id) }

// Find returns the rows of a business key in every topic, in id order:
// where a message is, for an operator (`reliablemq trace`).
func (r *Relay) Find(ctx context.Context, key string) ([]*Row, error) { return r.store.find(ctx, key) }

// List returns rows with the given status in id order, after afterID, at
// most limit (100 when zero).
func (r *Relay) List(ctx context.Context, status Status, afterID int64, limit int) ([]*Row, error) {
	if limit <= 0 {
		limit = 100
	}
	return r.store.list(ctx, status, afterID, limit)
}

// maxPurgeRound bounds the ids one purge round reads and then lists in its
// DELETE, whose text grows with them (up to 22 bytes an id): a batch of
// 100,000 made a statement of some 2 MB, which a server with the 1 MiB
// max_allowed_packet the README supports refused, closing the
// connection. 10,000 ids stay under 220 KB.
const maxPurgeRound = 10000

// Purge deletes, batch rows at a time, rows in a final state not updated
// for retention: Confirmed and Aborted rows, and Sent rows too when
// includeSent (no consumer confirmation in use). It returns the number deleted.
// A batch over [maxPurgeRound] runs as rounds of that many rows.
func (r *Relay) Purge(ctx context.Context, retention time.Duration, includeSent bool, batch int) (int64, error) {
	if batch <= 0 {
		return 0, fmt.Errorf("outbox: purge batch %d <= 0", batch)
	}
	batch = min(batch, maxPurgeRound)
	statuses := []Status{Confirmed, Aborted}
	if includeSent {
		statuses = append(statuses, Sent)
	}
	var total int64
	for _, s := range statuses {
		for {
			n, err := r.store.purge(ctx, s, retention, batch)
			total += n
			if err != nil {
				return total, err
			}
			if n < int64(batch) {
				break
			}
		}
	}
	return total, nil
}

// Backlog counts Pending and Dead rows.
func (r *Relay) Backlog(ctx context.Context) (Backlog, error) { return r.store.backlog(ctx) }
