package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/internal/sqldb"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// ErrDuplicate says a topic and key were already used: [Tx.Enqueue]
// returns it with the existing row's id (nothing written, the transaction
// usable); [TxMessenger.Send] returns it when the first transaction won
// and this one rolled back (for a key a check-back aborted it returns
// [ErrAborted]: nothing took effect then).
var ErrDuplicate = errors.New("outbox: duplicate key")

// ErrAborted is returned by [TxMessenger.Send] for a key a check-back
// aborted: an earlier send of it never committed (its outcome was lost
// and the check-back found no row), and the key's Aborted marker keeps it
// from committing now. Nothing of this send or that one took effect; the
// key cannot be sent again (a new attempt needs a new key).
var ErrAborted = errors.New("outbox: key aborted by a transaction check-back")

// ErrClosed is returned by [TxMessenger.Send] after Close.
var ErrClosed = errors.New("outbox: closed")

// TxMessenger is the RocketMQ transactional-message alternative to the
// [Relay]: it sends a half message (invisible to consumers), runs the
// business transaction, which also writes the outbox row as Sent, and
// commits or rolls back the half message accordingly. When the outcome
// does not reach the broker (a crash, a lost one-way request), the broker
// checks back and the answer comes from the outbox table, decisively:
// the check inserts an Aborted marker for the key if no row exists, so a
// local transaction that had not committed yet can no longer commit (its
// insert hits the marker), and the answer "roll back" is final. No check
// answers "unknown" except while the database is unreachable.
//
// A committed message can reach consumers twice: a 4.9.4 broker stores a
// copy for every commit it receives for a half message (the one-way
// commit and a check-back's answer both, when the commit was only slow),
// keeping no record of an earlier decision. Guard its consumers.
//
// Rows it writes are Sent; the reconcile job leaves them alone except for
// confirmation timeouts and purge.
type TxMessenger struct {
	db     *sqlx.DB
	q      queries
	client *producer.Transactional
	logger *slog.Logger
	// names refuses a table whose topics compare case-insensitively.
	names *sqldb.Names
}

// NewTxMessenger starts a transactional producer ([producer.NewTransactional])
// for producer group on nameServers. The broker sends its check-backs to a
// live producer of the group, so keep one running per group. Options:
// [WithTable], [WithLogger], [WithCredentials], [WithNamespace].
func NewTxMessenger(db *sqlx.DB, nameServers []string, group string, opts ...TxOption) (*TxMessenger, error) {
	c := txConfig{common: common{table: "mq_log"}}
	for _, o := range opts {
		o.applyTx(&c)
	}
	var errs []error
	if db == nil || len(nameServers) == 0 || group == "" {
		errs = append(errs, errors.New("outbox: tx messenger needs a db, name servers and a group"))
	}
	if !sqldb.ValidTable(c.table) {
		errs = append(errs, fmt.Errorf("outbox: table name %q is not a plain identifier", c.table))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if c.logger == nil {
		c.logger = slog.Default()
	}
	m := &TxMessenger{db: db, q: newQueries(c.table), logger: c.logger, names: sqldb.NewNames(c.table, "topic")}
	popts := []producer.TxOption{producer.WithLogger(c.logger), producer.WithHooks(c.hooks)}
	if c.credentials != (producer.Credentials{}) {
		popts = append(popts, producer.WithCredentials(c.credentials))
	}
	if c.namespace != "" {
		popts = append(popts, producer.WithNamespace(c.namespace))
	}
	client, err := producer.NewTransactional(nameServers, group, checker{m}, popts...)
	if err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	m.client = client
	return m, nil
}

// Send sends msg as a half message, then runs fn in a transaction that
// also records msg in the outbox table, and commits the message if and
// only if that transaction commits. It returns nil when both committed;
// fn's error (rolled back, message discarded); [ErrDuplicate];
// [ErrAborted]; or a send error, in which case fn did not run. A ctx that
// ends before the commit, and a panic in fn, roll both back at once (the
// panic then goes on); fn must not end tx itself. If the transaction's
// commit fails ambiguously, the error is returned and the broker's
// check-back settles the message from the table. A message is refused ([ErrInvalidMessage])
// exactly when the producer would refuse a plain send of it, and when it
// has a delay. Like the relay, it refuses a table whose topics compare
// case-insensitively (a schema from before migration 00004).
func (m *TxMessenger) Send(ctx context.Context, msg Message, fn func(context.Context, *sqlx.Tx) error) error {
	if err := validate(msg); err != nil {
		return err
	}
	if msg.Delay != 0 {
		return fmt.Errorf("%w: transactional messages cannot be delayed", ErrInvalidMessage)
	}
	if err := sqldb.CheckSession(ctx, m.db); err != nil { // before the half message
		return fmt.Errorf("outbox: %w", err)
	}
	if err := m.names.Check(ctx, m.db); err != nil {
		return fmt.Errorf("outbox: send %s/%s: %w", msg.Topic, msg.Key, err)
	}
	var localErr error
	var fnPanic any
	panicked := false
	res, err := m.client.SendInTransaction(ctx, msg.producerMessage(), func(ctx context.Context, msgID string) (st producer.TxState) {
		defer func() {
			// fn panicked: its transaction was rolled back (local's
			// deferred Rollback), so the half message is too, at once,
			// before the panic goes on (left to a check-back, the key would
			// be aborted for good).
			if r := recover(); r != nil {
				fnPanic, panicked, st = r, true, producer.TxRollback
			}
		}()
		localErr = m.local(ctx, msg, fn, msgID)
		switch {
		case localErr == nil:
			return producer.TxCommit
		case errors.Is(localErr, errCommitUnknown):
			return producer.TxUnknown
		}
		return producer.TxRollback
	})
	if panicked {
		panic(fnPanic)
	}
	switch {
	case errors.Is(err, producer.ErrClosed):
		return ErrClosed
	case errors.Is(err, producer.ErrInvalidMessage):
		return fmt.Errorf("%w: %w", ErrInvalidMessage, err)
	case err != nil:
		return fmt.Errorf("outbox: half message %s/%s: %w", msg.Topic, msg.Key, err)
	}
	switch res.State {
	case producer.TxCommit:
		return nil
	case producer.TxRollback:
		return localErr
	}
	if localErr == nil {
		localErr = fmt.Errorf("outbox: %s/%s: half message not confirmed by the broker", msg.Topic, msg.Key)
	}
	return localErr
}

// Close stops new sends, waits for those in flight and shuts the
// producer down. Check-backs that arrive after Close are left to another
// producer of the group. Close is idempotent.
func (m *TxMessenger) Close() error {
	if err := m.client.Close(); err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	return nil
}

var errCommitUnknown = errors.New("outbox: commit outcome unknown; the broker's check-back decides")

// local runs the business transaction of a Send, recording msg as Sent
// with the half message's id.
func (m *TxMessenger) local(ctx context.Context, msg Message, fn func(context.Context, *sqlx.Tx) error, msgID string) error {
	props := []byte("{}")
	if len(msg.Properties) > 0 {
		var err error
		if props, err = json.Marshal(msg.Properties); err != nil {
			return err
		}
	}
	if err := sqldb.CheckSession(ctx, m.db); err != nil {
		return fmt.Errorf("outbox: begin: %w", err)
	}
	tx, err := m.db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("outbox: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	_, err = sqldb.Exec(ctx, tx, m.q.insertSent, msg.Topic, sqldb.Hash(msg.Key), []byte(msg.Key), []byte(msg.Tag),
		[]byte(msg.ShardingKey), sqldb.Hash(msg.ShardingKey), props, msg.Body, msgID)
	if sqldb.IsDuplicate(err) {
		// The insert's duplicate check holds the row shared: read whose it
		// is, an earlier send's or a check-back's Aborted marker.
		var st struct {
			Status Status `db:"status"`
			MsgID  string `db:"msg_id"`
		}
		err = sqldb.Get(ctx, tx, &st, m.q.statusOf+" LOCK IN SHARE MODE", msg.Topic, sqldb.Hash(msg.Key), []byte(msg.Key))
		switch {
		case err != nil:
			return fmt.Errorf("outbox: record %s/%s: %w", msg.Topic, msg.Key, err)
		case st.Status == Aborted:
			return fmt.Errorf("%w: %s/%s", ErrAborted, msg.Topic, msg.Key)
		}
		return fmt.Errorf("%w: %s/%s", ErrDuplicate, msg.Topic, msg.Key)
	}
	if err != nil {
		return fmt.Errorf("outbox: record %s/%s: %w", msg.Topic, msg.Key, err)
	}
	if err := fn(ctx, tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		// database/sql returns ctx's error, or ErrTxDone once ctx's end
		// has rolled the transaction back, without sending the commit:
		// certain, so the half message is rolled back at once. Anything
		// else may have committed.
		if ctx.Err() != nil && (errors.Is(err, ctx.Err()) || errors.Is(err, sql.ErrTxDone)) {
			return fmt.Errorf("outbox: %s/%s: not committed: %w", msg.Topic, msg.Key, ctx.Err())
		}
		return fmt.Errorf("%w: %w", errCommitUnknown, err)
	}
	return nil
}

// checker answers the broker's check-backs from the table.
type checker struct{ m *TxMessenger }

// CheckTx answers a check-back for a half message.
func (c checker) CheckTx(ctx context.Context, h producer.HalfMessage) producer.TxState {
	key := strings.Join(h.Keys, " ")
	st, err := c.m.decide(ctx, h.Topic, key, h.MsgID)
	if err != nil {
		c.m.logger.LogAttrs(ctx, slog.LevelWarn, "transaction check-back failed; the broker will ask again",
			slog.String("topic", h.Topic), slog.String("keys", key), slog.Any("error", err))
		return producer.TxUnknown
	}
	c.m.logger.LogAttrs(ctx, slog.LevelInfo, "transaction check-back answered", slog.String("topic", h.Topic),
		slog.String("keys", key), slog.Bool("commit", st == producer.TxCommit))
	return st
}

// decide answers a check-back for the half message msgID of topic/key.
func (m *TxMessenger) decide(ctx context.Context, topic, key, msgID string) (producer.TxState, error) {
	_, err := sqldb.Exec(ctx, m.db, m.q.insertAborted, topic, sqldb.Hash(key), []byte(key), sqldb.Hash(""))
	if err == nil {
		return producer.TxRollback, nil // no row: it never committed, and now it cannot
	}
	if !sqldb.IsDuplicate(err) {
		return producer.TxUnknown, err
	}
	var row struct {
		Status int    `db:"status"`
		MsgID  string `db:"msg_id"`
	}
	if err := sqldb.Get(ctx, m.db, &row, m.q.statusOf, topic, sqldb.Hash(key), []byte(key)); err != nil {
		return producer.TxUnknown, err
	}
	// The row is this message's only if its transaction wrote it: a second
	// send of the same key rolled back on the duplicate, and its half
	// message must not commit on the strength of the first one's row.
	if Status(row.Status) == Aborted || row.MsgID != msgID {
		return producer.TxRollback, nil
	}
	return producer.TxCommit, nil
}
