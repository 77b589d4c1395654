package consumer

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/internal/remoting"
	"github.com/seed157d4c4d/reliablemq/internal/sqldb"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// Cause says why a message was parked.
type Cause string

// Causes.
const (
	// CauseRetries: the handler failed on every attempt up to the cap.
	CauseRetries Cause = "retries"
	// CausePermanent: the handler returned a [Permanent] error, or the
	// message had no business key.
	CausePermanent Cause = "permanent"
	// CauseDLQ: drained from the broker's %DLQ% topic.
	CauseDLQ Cause = "dlq"
	// CauseKeyParked: an earlier message of the same sharding key is
	// parked, and the orderly consumer parks the key's later messages too.
	CauseKeyParked Cause = "key-parked"
)

// Status is where a dead letter is in its manual handling.
type Status int

// Statuses.
const (
	Parked    Status = 1
	Replayed  Status = 2
	Discarded Status = 3
)

func (s Status) String() string {
	switch s {
	case Parked:
		return "parked"
	case Replayed:
		return "replayed"
	case Discarded:
		return "discarded"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// DeadLetter is a message parked for manual handling.
type DeadLetter struct {
	ID          int64
	Group       string
	Topic       string
	MsgID       string
	Keys        []string
	Tag         string
	ShardingKey string
	Properties  map[string]string
	Body        []byte
	Attempts    int
	LastError   string
	Cause       Cause
	Status      Status
	// Reason is the operator's note on a replay or discard.
	Reason string
	// ReplayOf is, for a replayed message that was parked again, the id
	// of the original dead letter (the first of the chain); 0 otherwise.
	// Under [ParkKey] the row keeps the original's place in its key.
	ReplayOf  int64
	CreatedAt time.Time
	UpdatedAt time.Time
}

// origin is the id whose place d holds in its key's order.
func (d *DeadLetter) origin() int64 {
	if d.ReplayOf > 0 {
		return d.ReplayOf
	}
	return d.ID
}

// Parker records messages for manual handling. Park must be idempotent
// per (Group, MsgID): parking the same delivery twice keeps one record and
// reports inserted only the first time. [DeadLetters] implements it.
type Parker interface {
	Park(ctx context.Context, d *DeadLetter) (inserted bool, err error)
}

// Publisher sends a replayed message; *producer.Producer implements it.
type Publisher interface {
	Send(ctx context.Context, m producer.Message) (producer.Result, error)
}

var _ Publisher = (*producer.Producer)(nil)

// Errors of [DeadLetters].
var (
	ErrNotFound  = errors.New("consumer: dead letter not found")
	ErrNotParked = errors.New("consumer: dead letter is not parked (already replayed or discarded)")
)

// DeadLetters is the manual-handling table (mq_dead_letter by default,
// created by the migrations package). It is safe for concurrent use; every
// state change is one conditional UPDATE.
type DeadLetters struct {
	db *sqlx.DB
	t  string
}

// NewDeadLetters returns the table table ("" for mq_dead_letter) on db.
func NewDeadLetters(db *sqlx.DB, table string) (*DeadLetters, error) {
	if table == "" {
		table = "mq_dead_letter"
	}
	if db == nil {
		return nil, errors.New("consumer: nil db")
	}
	if !sqldb.ValidTable(table) {
		return nil, fmt.Errorf("consumer: table name %q is not a plain identifier", table)
	}
	return &DeadLetters{db: db, t: table}, nil
}

// Park implements [Parker].
func (d *DeadLetters) Park(ctx context.Context, dl *DeadLetter) (bool, error) {
	props, err := json.Marshal(dl.Properties)
	if err != nil {
		return false, fmt.Errorf("consumer: park: %w", err)
	}
	body := dl.Body
	if body == nil {
		body = []byte{}
	}
	// A plain INSERT: a message parked before is told by the duplicate
	// error, whatever the DSN says about affected rows (clientFoundRows).
	res, err := d.db.ExecContext(ctx, "INSERT INTO "+d.t+" (consumer_group, topic, msg_id, biz_keys, tags, sharding_key,"+
		" sharding_hash, properties, body, attempts, last_error, cause, status, reason, replay_of, created_at, updated_at)"+
		" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, '', ?, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))",
		dl.Group, dl.Topic, dl.MsgID, []byte(strings.Join(dl.Keys, " ")), []byte(dl.Tag), []byte(dl.ShardingKey),
		sqldb.Hash(dl.ShardingKey), props, body, dl.Attempts, dl.LastError, string(dl.Cause), dl.ReplayOf)
	if sqldb.IsDuplicate(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("consumer: park %s: %w", dl.MsgID, err)
	}
	if dl.ID, err = res.LastInsertId(); err != nil {
		return false, fmt.Errorf("consumer: park %s: %w", dl.MsgID, err)
	}
	return true, nil
}

// HasParked reports whether group has a parked message with this
// sharding key whose place in the key's order (its id, or for a replay
// parked again the original's id) is below before (0: any).
func (d *DeadLetters) HasParked(ctx context.Context, group, shardingKey string, before int64) (bool, error) {
	if before <= 0 {
		before = math.MaxInt64
	}
	var one int
	err := d.db.GetContext(ctx, &one, "SELECT 1 FROM "+d.t+
		" WHERE consumer_group = ? AND sharding_hash = ? AND status = 1 AND sharding_key = ?"+
		" AND IF(replay_of > 0, replay_of, id) < ? LIMIT 1",
		group, sqldb.Hash(shardingKey), []byte(shardingKey), before)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("consumer: dead letters of key: %w", err)
	}
	return true, nil
}

// deadLetterColumns are named, never *, so that a migration adding a
// column does not break a running older version; times are read as text
// (see sqldb).
const deadLetterColumns = "id, consumer_group, topic, msg_id, biz_keys, tags, sharding_key, properties, body," +
	" attempts, last_error, cause, status, reason, replay_of, CAST(created_at AS CHAR) AS created_at," +
	" CAST(updated_at AS CHAR) AS updated_at"

type row struct {
	ID          int64      `db:"id"`
	Group       string     `db:"consumer_group"`
	Topic       string     `db:"topic"`
	MsgID       string     `db:"msg_id"`
	Keys        []byte     `db:"biz_keys"`
	Tags        []byte     `db:"tags"`
	ShardingKey []byte     `db:"sharding_key"`
	Properties  []byte     `db:"properties"`
	Body        []byte     `db:"body"`
	Attempts    int        `db:"attempts"`
	LastError   string     `db:"last_error"`
	Cause       string     `db:"cause"`
	Status      int        `db:"status"`
	Reason      string     `db:"reason"`
	ReplayOf    int64      `db:"replay_of"`
	CreatedAt   sqldb.Time `db:"created_at"`
	UpdatedAt   sqldb.Time `db:"updated_at"`
}

func (r *row) deadLetter() (*DeadLetter, error) {
	dl := &DeadLetter{ID: r.ID, Group: r.Group, Topic: r.Topic, MsgID: r.MsgID, Keys: strings.Fields(string(r.Keys)),
		Tag: string(r.Tags), ShardingKey: string(r.ShardingKey), Body: r.Body, Attempts: r.Attempts,
		LastError: r.LastError, Cause: Cause(r.Cause), Status: Status(r.Status), Reason: r.Reason,
		ReplayOf: r.ReplayOf, CreatedAt: r.CreatedAt.Time, UpdatedAt: r.UpdatedAt.Time}
	if err := json.Unmarshal(r.Properties, &dl.Properties); err != nil {
		return nil, fmt.Errorf("consumer: dead letter %d properties: %w", r.ID, err)
	}
	return dl, nil
}

// Filter selects dead letters for [DeadLetters.List].
type Filter struct {
	// Group limits the list to one consumer group; empty for all.
	Group string
	// Status limits the list to one status; zero for all.
	Status Status
	// AfterID pages: only ids greater than it.
	AfterID int64
	// Limit caps the rows returned; zero means 100.
	Limit int
}

// List returns dead letters in id order.
func (d *DeadLetters) List(ctx context.Context, f Filter) ([]*DeadLetter, error) {
	q := "SELECT " + deadLetterColumns + " FROM " + d.t + " WHERE id > ?"
	args := []any{f.AfterID}
	if f.Group != "" {
		q += " AND consumer_group = ?"
		args = append(args, f.Group)
	}
	if f.Status != 0 {
		q += " AND status = ?"
		args = append(args, int(f.Status))
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	q += " ORDER BY id LIMIT ?"
	args = append(args, limit)
	var rows []row
	if err := d.db.SelectContext(ctx, &rows, q, args...); err != nil {
		return nil, fmt.Errorf("consumer: list dead letters: %w", err)
	}
	out := make([]*DeadLetter, 0, len(rows))
	for i := range rows {
		dl, err := rows[i].deadLetter()
		if err != nil {
			return nil, err
		}
		out = append(out, dl)
	}
	return out, nil
}

// Get returns one dead letter, or [ErrNotFound].
func (d *DeadLetters) Get(ctx context.Context, id int64) (*DeadLetter, error) {
	var r row
	err := d.db.GetContext(ctx, &r, "SELECT "+deadLetterColumns+" FROM "+d.t+" WHERE id = ?", id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %d", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("consumer: get dead letter %d: %w", id, err)
	}
	return r.deadLetter()
}

// Replay sends a parked message again to its original topic, with its
// keys, tag, sharding key, properties and body (a new message id), then
// marks it replayed with reason. The send comes first: if marking fails
// the message may be replayed twice, which the idempotency guard absorbs;
// it is never marked replayed without having been sent.
func (d *DeadLetters) Replay(ctx context.Context, id int64, pub Publisher, reason string) error {
	dl, err := d.Get(ctx, id)
	if err != nil {
		return err
	}
	if dl.Status != Parked {
		return fmt.Errorf("%w: %d is %s", ErrNotParked, id, dl.Status)
	}
	props := maps.Clone(dl.Properties)
	if props == nil {
		props = make(map[string]string, 1)
	}
	props[remoting.PropReplayOf] = strconv.FormatInt(dl.origin(), 10)
	_, err = pub.Send(ctx, producer.Message{Topic: dl.Topic, Body: dl.Body, Keys: dl.Keys, Tag: dl.Tag,
		Properties: props, ShardingKey: dl.ShardingKey})
	if err != nil {
		return fmt.Errorf("consumer: replay %d: %w", id, err)
	}
	return d.transition(ctx, id, Replayed, reason)
}

// Discard marks a parked message as handled without replaying it.
func (d *DeadLetters) Discard(ctx context.Context, id int64, reason string) error {
	return d.transition(ctx, id, Discarded, reason)
}

func (d *DeadLetters) transition(ctx context.Context, id int64, to Status, reason string) error {
	res, err := d.db.ExecContext(ctx, "UPDATE "+d.t+" SET status = ?, reason = ?, updated_at = UTC_TIMESTAMP(6) WHERE id = ? AND status = 1",
		int(to), reason, id)
	if err != nil {
		return fmt.Errorf("consumer: mark dead letter %d %s: %w", id, to, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("consumer: mark dead letter %d %s: %w", id, to, err)
	} else if n == 0 {
		if _, err := d.Get(ctx, id); err != nil {
			return err
		}
		return fmt.Errorf("%w: %d", ErrNotParked, id)
	}
	return nil
}
