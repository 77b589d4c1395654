package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/internal/combine"
	"github.com/seed157d4c4d/reliablemq/internal/sqldb"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// Message is one outbox entry.
type Message struct {
	Topic string
	// Key is the business key: unique per topic in the outbox (a retried
	// API call enqueues once), sent as the message key, and what the
	// consumer's idempotency guard dedups on. No spaces.
	Key  string
	Body []byte
	Tag  string
	// Properties are user properties sent with the message.
	Properties map[string]string
	// ShardingKey makes the entry ordered: entries with the same sharding
	// key are sent in enqueue order, each only after the previous one is
	// SENT, to the queue the key hashes to.
	ShardingKey string
	Delay       time.Duration
}

// Status is an outbox row's state. Rows move only forward: Pending ->
// Sent -> Confirmed, Pending -> Confirmed (the consumer confirmed before
// the relay recorded the send), Pending -> Dead; Dead -> Pending only by
// [Relay.Replay].
type Status int

// Statuses, as stored.
const (
	Pending   Status = 0
	Sent      Status = 1
	Confirmed Status = 2
	Dead      Status = 3
	// Aborted marks the key of a transactional message ([TxMessenger])
	// whose local transaction did not commit; it is never sent.
	Aborted Status = 4
)

func (s Status) String() string {
	switch s {
	case Pending:
		return "pending"
	case Sent:
		return "sent"
	case Confirmed:
		return "confirmed"
	case Dead:
		return "dead"
	case Aborted:
		return "aborted"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// Row is an outbox row.
type Row struct {
	ID int64
	Message
	Status        Status
	Attempts      int
	NextAttemptAt time.Time
	LastError     string
	MsgID         string
	CreatedAt     time.Time
	UpdatedAt     time.Time
	SentAt        *time.Time
}

// Execer is what Enqueue writes through: *sql.Tx, *sqlx.Tx, *sql.DB and
// *sqlx.DB all satisfy it. Pass the business transaction.
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	// QueryRowContext reads the existing row of a duplicate key.
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Publisher sends a message; *producer.Producer implements it.
type Publisher interface {
	Send(ctx context.Context, m producer.Message) (producer.Result, error)
}

var _ Publisher = (*producer.Producer)(nil)

// Errors.
var (
	ErrInvalidMessage = errors.New("outbox: invalid message")
	ErrNotFound       = errors.New("outbox: row not found")
	ErrNotDead        = errors.New("outbox: row is not dead")
)

type config struct {
	table       string
	lease       time.Duration
	maxAttempts int
	backoff     time.Duration
	maxBackoff  time.Duration
	concurrency int
	alert       func(context.Context, *Row)
	logger      *slog.Logger
}

// Option configures a [Relay].
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// WithTable sets the outbox table, a plain identifier of at most 58
// bytes. Default "mq_log". The table "<name>_order" (mq_log_order in the
// migrations) holds the per-sharding-key locks that keep a key's rows in
// enqueue order; create both for another name.
func WithTable(name string) Option { return optionFunc(func(c *config) { c.table = name }) }

// WithLease sets how long a claimed row is reserved for the relay that
// claimed it; a relay that dies mid-batch frees its rows after this.
// Default 1 minute.
func WithLease(d time.Duration) Option { return optionFunc(func(c *config) { c.lease = d }) }

// WithMaxAttempts sets how many failed sends make a row Dead. Default 10.
func WithMaxAttempts(n int) Option { return optionFunc(func(c *config) { c.maxAttempts = n }) }

// WithBackoff sets the wait after the first failed send and its cap; the
// wait doubles per attempt with jitter (between half and all of it).
// Default 1 s, capped at 10 minutes.
func WithBackoff(first, max time.Duration) Option {
	return optionFunc(func(c *config) { c.backoff, c.maxBackoff = first, max })
}

// WithConcurrency sets how many sends a relay runs at once. Default 16.
func WithConcurrency(n int) Option { return optionFunc(func(c *config) { c.concurrency = n }) }

// WithAlert sets a function called once for each row that becomes Dead.
// Default none (dead rows are also logged at Error).
func WithAlert(fn func(context.Context, *Row)) Option {
	return optionFunc(func(c *config) { c.alert = fn })
}

// WithLogger sets the logger. Default: [slog.Default] at construction, so
// retries, parked messages, dead rows and failed runs are visible without
// wiring; slog.New(slog.DiscardHandler) silences it.
func WithLogger(l *slog.Logger) Option { return optionFunc(func(c *config) { c.logger = l }) }

// Relay writes, sends and tracks outbox rows. It is safe for concurrent
// use, and any number of relays (in any number of processes) may share a
// table: rows are claimed with SELECT ... FOR UPDATE SKIP LOCKED and a
// lease, and every state change is one conditional UPDATE.
type Relay struct {
	db    *sqlx.DB
	pub   Publisher
	cfg   config
	q     queries
	marks *combine.Batcher[*markReq]
}

// NewRelay returns a relay over db's outbox table, sending through pub.
func NewRelay(db *sqlx.DB, pub Publisher, opts ...Option) (*Relay, error) {
	c := config{table: "mq_log", lease: time.Minute, maxAttempts: 10, backoff: time.Second,
		maxBackoff: 10 * time.Minute, concurrency: 16}
	for _, o := range opts {
		o.apply(&c)
	}
	var errs []error
	if db == nil || pub == nil {
		errs = append(errs, errors.New("outbox: nil db or publisher"))
	}
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
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	r := &Relay{db: db, pub: pub, cfg: c, q: newQueries(c.table)}
	r.marks = combine.New(markRequests, r.flushMarks)
	return r, nil
}

var topicPattern = regexp.MustCompile(`^[%|a-zA-Z0-9_-]{1,127}$`)

func validate(m Message) error {
	switch {
	case !topicPattern.MatchString(m.Topic):
		return fmt.Errorf("%w: topic %q", ErrInvalidMessage, m.Topic)
	case m.Key == "" || strings.ContainsAny(m.Key, " \x01\x02") || !utf8.ValidString(m.Key):
		return fmt.Errorf("%w: key %q is empty, not UTF-8, or contains a space or separator", ErrInvalidMessage, m.Key)
	case len(m.Body) == 0:
		return fmt.Errorf("%w: empty body", ErrInvalidMessage)
	case m.Delay < 0:
		return fmt.Errorf("%w: negative delay", ErrInvalidMessage)
	}
	return nil
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
	return r.enqueue(ctx, ex, m, "")
}

// enqueue inserts m, claimed by owner when owner is set.
func (r *Relay) enqueue(ctx context.Context, ex Execer, m Message, owner string) (id int64, created bool, err error) {
	if err := validate(m); err != nil {
		return 0, false, err
	}
	props := []byte("{}")
	if len(m.Properties) > 0 {
		if props, err = json.Marshal(m.Properties); err != nil {
			return 0, false, fmt.Errorf("outbox: properties: %w", err)
		}
	}
	args := []any{m.Topic, sqldb.Hash(m.Key), []byte(m.Key), []byte(m.Tag),
		[]byte(m.ShardingKey), sqldb.Hash(m.ShardingKey), props, m.Body, m.Delay.Milliseconds()}
	if m.ShardingKey != "" {
		if _, err := ex.ExecContext(ctx, r.q.lockKey, sqldb.Hash(m.ShardingKey)); err != nil {
			return 0, false, fmt.Errorf("outbox: enqueue %s/%s: lock sharding key: %w", m.Topic, m.Key, err)
		}
	}
	q := r.q.insert
	if owner != "" {
		q = r.q.insertClaimed
		args = append(args, r.cfg.lease.Microseconds(), owner)
	}
	// A plain INSERT: a duplicate is told by its error, whatever the DSN
	// says about affected rows (clientFoundRows). The failed statement
	// leaves the caller's transaction usable.
	res, err := ex.ExecContext(ctx, q, args...)
	if sqldb.IsDuplicate(err) {
		if id, err = r.existing(ctx, ex, m); err != nil {
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

// existing returns the id of the row m's topic and key already have.
func (r *Relay) existing(ctx context.Context, ex Execer, m Message) (int64, error) {
	var id int64
	err := ex.QueryRowContext(ctx, r.q.idOf, m.Topic, sqldb.Hash(m.Key)).Scan(&id)
	return id, err
}

// Tx is a business transaction started by [Relay.Transact]; rows enqueued
// through it are sent right after it commits. It offers the statements a
// business transaction needs, and no Commit or Rollback: Transact ends the
// transaction, by fn's result. It is not safe for concurrent use (nor is
// the transaction beneath it).
type Tx struct {
	tx    *sqlx.Tx
	relay *Relay
	owner string
	rows  []*Row
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
	id, created, err := t.relay.enqueue(ctx, t.tx, m, t.owner)
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
// before sending, reconcile sends them once the lease ends.
func (r *Relay) Transact(ctx context.Context, fn func(context.Context, *Tx) error) error {
	tx, err := r.db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("outbox: begin: %w", err)
	}
	t := &Tx{tx: tx, relay: r, owner: sqldb.Token()}
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
		if _, err := r.sendRows(ctx, t.owner, t.rows, false, true); err != nil {
			r.cfg.logger.LogAttrs(ctx, slog.LevelWarn, "dispatch after commit failed; reconcile will send",
				slog.Int("rows", len(t.rows)), slog.Any("error", err))
		}
	}
	return nil
}

// Confirm records, through ex (the consumer's transaction when it shares
// the database), that the message of topic and key was consumed. Reconcile
// stops resending it. It reports whether a row moved to Confirmed.
func (r *Relay) Confirm(ctx context.Context, ex Execer, topic, key string) (bool, error) {
	res, err := ex.ExecContext(ctx, r.q.confirm, topic, sqldb.Hash(key), []byte(key))
	if err != nil {
		return false, fmt.Errorf("outbox: confirm %s/%s: %w", topic, key, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("outbox: confirm %s/%s: %w", topic, key, err)
	}
	return n == 1, nil
}

// Replay moves a Dead row back to Pending with its attempts reset, for
// the next dispatch.
func (r *Relay) Replay(ctx context.Context, id int64) error {
	res, err := r.db.ExecContext(ctx, r.q.replay, id)
	if err != nil {
		return fmt.Errorf("outbox: replay %d: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("outbox: replay %d: %w", id, err)
	} else if n == 0 {
		if _, err := r.Get(ctx, id); err != nil {
			return err
		}
		return fmt.Errorf("%w: %d", ErrNotDead, id)
	}
	return nil
}

// Get returns one row, or [ErrNotFound].
func (r *Relay) Get(ctx context.Context, id int64) (*Row, error) {
	var rr dbRow
	err := r.db.GetContext(ctx, &rr, r.q.get, id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %d", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("outbox: get %d: %w", id, err)
	}
	return rr.row()
}

// List returns rows with the given status in id order, after afterID, at
// most limit (100 when zero).
func (r *Relay) List(ctx context.Context, status Status, afterID int64, limit int) ([]*Row, error) {
	if limit <= 0 {
		limit = 100
	}
	var rows []dbRow
	if err := r.db.SelectContext(ctx, &rows, r.q.list, int(status), afterID, limit); err != nil {
		return nil, fmt.Errorf("outbox: list: %w", err)
	}
	out := make([]*Row, 0, len(rows))
	for i := range rows {
		row, err := rows[i].row()
		if err != nil {
			return nil, err
		}
		out = append(out, row)
	}
	return out, nil
}

func (r *Relay) backoff(attempts int) time.Duration {
	d := r.cfg.backoff
	for i := 1; i < attempts && d < r.cfg.maxBackoff; i++ {
		d *= 2
	}
	d = min(d, r.cfg.maxBackoff)
	return d/2 + rand.N(d/2+1)
}
