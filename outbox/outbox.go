package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

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
	// SENT, to the queue the key hashes to. An entry with a ShardingKey
	// takes no Delay ([ErrInvalidMessage]): the broker would queue it
	// when the delay ends, behind the key's later entries.
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
// *sqlx.DB all satisfy it. Pass the business transaction. When it also
// has PrepareContext (all four do), the values the statement does not
// carry as hex literals (a body past 256 KiB) go by
// a statement prepared on it, which a DSN's interpolateParams does not
// touch; an Execer without PrepareContext gets them as arguments.
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

// validate refuses what no send could deliver: the producer's rules
// (topic name, body, key, UTF-8, separators, reserved properties), a
// missing key and a negative delay; and what the table cannot hold whole
// (a loose sql_mode would store it cut, and send that).
func validate(m Message) error {
	switch {
	case m.Key == "":
		return fmt.Errorf("%w: empty key", ErrInvalidMessage)
	case m.Delay < 0:
		return fmt.Errorf("%w: negative delay", ErrInvalidMessage)
	case len(m.Tag) > maxTag:
		return fmt.Errorf("%w: tag of %d bytes, over the %d the outbox holds", ErrInvalidMessage, len(m.Tag), maxTag)
	case len(m.Key) > maxKey || len(m.ShardingKey) > maxKey:
		return fmt.Errorf("%w: key or sharding key over the %d bytes the outbox holds", ErrInvalidMessage, maxKey)
	}
	if err := producer.Validate(m.producerMessage()); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidMessage, err)
	}
	return nil
}

// What the outbox table's columns hold: tag VARBINARY(255); biz_key and
// sharding_key BLOB.
const (
	maxTag = 255
	maxKey = 65535
)

// producerMessage is m as the producer sends it.
func (m *Message) producerMessage() producer.Message {
	return producer.Message{Topic: m.Topic, Body: m.Body, Keys: []string{m.Key}, Tag: m.Tag,
		Properties: m.Properties, ShardingKey: m.ShardingKey, Delay: m.Delay}
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

// Backlog describes the rows still to be delivered.
type Backlog struct {
	Pending int64
	// OldestPending is the age of the oldest Pending row, 0 when none.
	OldestPending time.Duration
	DeadRows      int64
}
