package outbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	rmqproducer "github.com/apache/rocketmq-client-go/v2/producer"
	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/internal/clientlog"
	"github.com/seed157d4c4d/reliablemq/internal/remoting"
	"github.com/seed157d4c4d/reliablemq/internal/sqldb"
	"github.com/seed157d4c4d/reliablemq/orderly"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// ErrDuplicate says a topic and key were already used: [Tx.Enqueue]
// returns it with the existing row's id (nothing written, the transaction
// usable); [TxMessenger.Send] returns it when the first transaction won
// and this one rolled back.
var ErrDuplicate = errors.New("outbox: duplicate key")

// maxTxBody is the broker's default maxMessageSize (4 MiB).
const maxTxBody = 4 << 20

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
// Rows it writes are Sent; the reconcile job leaves them alone except for
// confirmation timeouts and purge.
type TxMessenger struct {
	db      *sqlx.DB
	q       queries
	client  rocketmq.TransactionProducer
	logger  *slog.Logger
	pending sync.Map // *primitive.Message -> *txCall

	mu       sync.RWMutex
	closed   bool
	inflight sync.WaitGroup
	once     sync.Once
	closeErr error
}

type txCall struct {
	ctx context.Context
	fn  func(context.Context, *sqlx.Tx) error
	msg Message
	err error
}

// NewTxMessenger starts a transaction producer for producer group on
// nameServers. The broker sends its check-backs to a live producer of the
// group, so keep one running per group. [WithTable] and [WithLogger]
// apply.
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
	m := &TxMessenger{db: db, q: newQueries(c.table), logger: c.logger}
	var b [6]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never returns an error
	clientlog.Contain()
	client, err := rocketmq.NewTransactionProducer(listener{m},
		rmqproducer.WithNameServer(nameServers), rmqproducer.WithGroupName(group),
		rmqproducer.WithInstanceName("reliablemq-tx-"+hex.EncodeToString(b[:])),
		rmqproducer.WithRetry(0), rmqproducer.WithQueueSelector(&orderly.Selector{}))
	if err != nil {
		return nil, fmt.Errorf("outbox: new transaction producer: %w", err)
	}
	if err := client.Start(); err != nil {
		return nil, fmt.Errorf("outbox: start transaction producer: %w", err)
	}
	m.client = client
	return m, nil
}

// Send sends msg as a half message, then runs fn in a transaction that
// also records msg in the outbox table, and commits the message if and only
// if that transaction commits. It returns nil when both committed; fn's
// error (rolled back, message discarded); [ErrDuplicate]; or a send error,
// in which case fn did not run. If the transaction's commit fails
// ambiguously, the error is returned and the broker's check-back settles
// the message from the table.
func (m *TxMessenger) Send(ctx context.Context, msg Message, fn func(context.Context, *sqlx.Tx) error) error {
	m.mu.RLock()
	if m.closed {
		m.mu.RUnlock()
		return ErrClosed
	}
	m.inflight.Add(1)
	m.mu.RUnlock()
	defer m.inflight.Done()
	if err := validate(msg); err != nil {
		return err
	}
	if msg.Delay != 0 {
		return fmt.Errorf("%w: transactional messages cannot be delayed", ErrInvalidMessage)
	}
	// The producer's own checks, so a transactional message is refused
	// exactly when a plain send of it would be.
	if err := producer.Validate(producer.Message{Topic: msg.Topic, Body: msg.Body, Keys: []string{msg.Key}, Tag: msg.Tag,
		ShardingKey: msg.ShardingKey, Properties: msg.Properties}); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidMessage, err)
	}
	if len(msg.Body) > maxTxBody {
		return fmt.Errorf("%w: body %d bytes > %d", ErrInvalidMessage, len(msg.Body), maxTxBody)
	}
	pm := primitive.NewMessage(msg.Topic, msg.Body)
	if len(msg.Properties) > 0 {
		pm.WithProperties(maps.Clone(msg.Properties))
	}
	pm.WithKeys([]string{msg.Key})
	if msg.Tag != "" {
		pm.WithTag(msg.Tag)
	}
	if msg.ShardingKey != "" {
		pm.WithShardingKey(msg.ShardingKey)
	}
	call := &txCall{ctx: ctx, fn: fn, msg: msg}
	m.pending.Store(pm, call)
	defer m.pending.Delete(pm)
	res, err := m.client.SendMessageInTransaction(ctx, pm)
	if err != nil {
		return fmt.Errorf("outbox: half message %s/%s: %w", msg.Topic, msg.Key, err)
	}
	switch res.State {
	case primitive.CommitMessageState:
		return nil
	case primitive.RollbackMessageState:
		if call.err == nil {
			return fmt.Errorf("outbox: broker stored %s/%s with weak durability; rolled back", msg.Topic, msg.Key)
		}
		return call.err
	default:
		if call.err == nil {
			call.err = fmt.Errorf("outbox: %s/%s: half message not confirmed by the broker", msg.Topic, msg.Key)
		}
		return call.err
	}
}

// Close stops new sends, waits for those in flight and shuts the
// producer down. The official client leaves its check-back goroutine
// running after that (v2.1.2). Close is idempotent.
func (m *TxMessenger) Close() error {
	m.once.Do(func() {
		m.mu.Lock()
		m.closed = true
		m.mu.Unlock()
		m.inflight.Wait()
		if err := m.client.Shutdown(); err != nil {
			m.closeErr = fmt.Errorf("outbox: shutdown: %w", err)
		}
	})
	return m.closeErr
}

type listener struct{ m *TxMessenger }

// ExecuteLocalTransaction runs the business transaction of a Send.
func (l listener) ExecuteLocalTransaction(pm *primitive.Message) primitive.LocalTransactionState {
	v, ok := l.m.pending.Load(pm)
	if !ok {
		return primitive.RollbackMessageState // not ours: never commit what we did not run
	}
	call := v.(*txCall)
	call.err = l.m.local(call, pm.GetProperty(primitive.PropertyUniqueClientMessageIdKeyIndex))
	switch {
	case call.err == nil:
		return primitive.CommitMessageState
	case errors.Is(call.err, errCommitUnknown):
		return primitive.UnknowState
	}
	return primitive.RollbackMessageState
}

var errCommitUnknown = errors.New("outbox: commit outcome unknown; the broker's check-back decides")

func (m *TxMessenger) local(call *txCall, msgID string) error {
	ctx, msg := call.ctx, call.msg
	props := []byte("{}")
	if len(msg.Properties) > 0 {
		var err error
		if props, err = json.Marshal(msg.Properties); err != nil {
			return err
		}
	}
	tx, err := m.db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("outbox: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	_, err = tx.ExecContext(ctx, m.q.insertSent, msg.Topic, sqldb.Hash(msg.Key), []byte(msg.Key), []byte(msg.Tag),
		[]byte(msg.ShardingKey), sqldb.Hash(msg.ShardingKey), props, msg.Body, msgID)
	if sqldb.IsDuplicate(err) {
		return fmt.Errorf("%w: %s/%s", ErrDuplicate, msg.Topic, msg.Key)
	}
	if err != nil {
		return fmt.Errorf("outbox: record %s/%s: %w", msg.Topic, msg.Key, err)
	}
	if err := call.fn(ctx, tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("%w: %w", errCommitUnknown, err)
	}
	return nil
}

// checkTimeout bounds a check-back's database work, including waiting for
// the row lock of a local transaction still in progress.
const checkTimeout = 30 * time.Second

// CheckLocalTransaction answers the broker's check-back from the table.
func (l listener) CheckLocalTransaction(ext *primitive.MessageExt) primitive.LocalTransactionState {
	// The client keeps calling this after Shutdown; after Close the table
	// is not touched, and the broker asks another producer later.
	l.m.mu.RLock()
	closed := l.m.closed
	l.m.mu.RUnlock()
	if closed {
		return primitive.UnknowState
	}
	// The client gives this callback no ctx; the work is bounded instead.
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
	defer cancel()
	topic, key := ext.Topic, ext.GetKeys()
	if rt := ext.GetProperty(remoting.PropRealTopic); rt != "" {
		topic = rt
	}
	msgID := ext.GetProperty(primitive.PropertyUniqueClientMessageIdKeyIndex)
	if msgID == "" {
		msgID = ext.MsgId
	}
	st, err := l.m.decide(ctx, topic, key, msgID)
	if err != nil {
		l.m.logger.LogAttrs(ctx, slog.LevelWarn, "transaction check-back failed; the broker will ask again",
			slog.String("topic", topic), slog.String("keys", key), slog.Any("error", err))
		return primitive.UnknowState
	}
	l.m.logger.LogAttrs(ctx, slog.LevelInfo, "transaction check-back answered", slog.String("topic", topic),
		slog.String("keys", key), slog.Bool("commit", st == primitive.CommitMessageState))
	return st
}

// decide answers a check-back for the half message msgID of topic/key.
func (m *TxMessenger) decide(ctx context.Context, topic, key, msgID string) (primitive.LocalTransactionState, error) {
	_, err := m.db.ExecContext(ctx, m.q.insertAborted, topic, sqldb.Hash(key), []byte(key), sqldb.Hash(""))
	if err == nil {
		return primitive.RollbackMessageState, nil // no row: it never committed, and now it cannot
	}
	if !sqldb.IsDuplicate(err) {
		return primitive.UnknowState, err
	}
	var row struct {
		Status int    `db:"status"`
		MsgID  string `db:"msg_id"`
	}
	if err := m.db.GetContext(ctx, &row, m.q.statusOf, topic, sqldb.Hash(key), []byte(key)); err != nil {
		return primitive.UnknowState, err
	}
	// The row is this message's only if its transaction wrote it: a second
	// send of the same key rolled back on the duplicate, and its half
	// message must not commit on the strength of the first one's row.
	if Status(row.Status) == Aborted || row.MsgID != msgID {
		return primitive.RollbackMessageState, nil
	}
	return primitive.CommitMessageState, nil
}
