package deadletter

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
	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/internal/namespace"
	"github.com/seed157d4c4d/reliablemq/internal/remoting"
	"github.com/seed157d4c4d/reliablemq/internal/sqldb"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// Status is where a dead letter is in its manual handling.
type Status int

// Statuses. A replay is Replaying from its send until its group receives
// it: until then it still holds its place in its key's order, as a
// Parked dead letter does, for the key's messages queued before the
// replay (under the orderly consumer's ParkKey policy those are parked,
// never run before it). Once received it is Replayed: the queue holds
// its place.
const (
	Parked    Status = 1
	Replayed  Status = 2
	Discarded Status = 3
	Replaying Status = 4
)

func (s Status) String() string {
	switch s {
	case Parked:
		return "parked"
	case Replayed:
		return "replayed"
	case Discarded:
		return "discarded"
	case Replaying:
		return "replaying"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// Entry is a dead letter as the table holds it: the parked message and
// its manual handling. Its Body is nil when listed with [Filter.NoBody].
type Entry struct {
	consumer.DeadLetter
	Status Status
	// Reason is the operator's note on a replay or discard.
	Reason    string
	CreatedAt time.Time
	UpdatedAt time.Time
}

// origin is the id whose place e holds in its key's order.
func (e *Entry) origin() int64 {
	if e.ReplayOf > 0 {
		return e.ReplayOf
	}
	return e.ID
}

// Publisher sends a replayed message; *producer.Producer implements it.
type Publisher interface {
	Send(ctx context.Context, m producer.Message) (producer.Result, error)
}

var _ Publisher = (*producer.Producer)(nil)

// Errors.
var (
	ErrNotFound  = errors.New("deadletter: not found")
	ErrNotParked = errors.New("deadletter: not parked (already replayed or discarded)")
	// ErrNotReplaying: [Table.MarkReceived] of a dead letter that is not
	// Replaying.
	ErrNotReplaying = errors.New("deadletter: not replaying")
	// ErrWrongNamespace: Replay was given a publisher of another RocketMQ
	// namespace than the dead letter's group, which would send the message
	// to another namespace's topic.
	ErrWrongNamespace = errors.New("deadletter: publisher in another namespace than the dead letter")
)

// Option configures a [Table].
type Option func(*Table)

// WithTable sets the table's name, a plain identifier. Default
// "mq_dead_letter" (created by the migrations package).
func WithTable(name string) Option { return func(t *Table) { t.t = name } }

// Table is the manual-handling table. It is a [consumer.KeyParker], and
// lists, replays and discards what was parked. It is safe for concurrent
// use; every state change is one conditional UPDATE.
type Table struct {
	db     *sqlx.DB
	t      string
	quoted string
}

var _ consumer.KeyParker = (*Table)(nil)

// NewTable returns the dead-letter table on db.
func NewTable(db *sqlx.DB, opts ...Option) (*Table, error) {
	d := &Table{db: db, t: "mq_dead_letter"}
	for _, o := range opts {
		o(d)
	}
	if db == nil {
		return nil, errors.New("deadletter: nil db")
	}
	if !sqldb.ValidTable(d.t) {
		return nil, fmt.Errorf("deadletter: table name %q is not a plain identifier", d.t)
	}
	d.quoted = sqldb.Quote(d.t)
	return d, nil
}

var _ consumer.ReportedParker = (*Table)(nil)

// Park implements [consumer.ReportedParker]: it records dl, not reported
// yet, and returns true; for a message recorded before it returns true
// only while that record is still parked and not reported (its parker
// stopped between the two), and then sets dl's attempts, last error and
// cause to the record's, so that it is reported as recorded. It sets
// dl.ID.
func (d *Table) Park(ctx context.Context, dl *consumer.DeadLetter) (bool, error) {
	props, err := json.Marshal(dl.Properties)
	if err != nil {
		return false, fmt.Errorf("deadletter: park: %w", err)
	}
	body := dl.Body
	if body == nil {
		body = []byte{}
	}
	// A plain INSERT: a message parked before is told by the duplicate
	// error, whatever the DSN says about affected rows (clientFoundRows).
	// The error text is recorded as valid UTF-8, cut to fit, so no text
	// keeps a message from being parked.
	keys := strings.Join(dl.Keys, " ")
	st := sqldb.NewStatement(600 + 2*(len(keys)+len(dl.Tag)+len(dl.ShardingKey)+len(props)+len(body)+len(dl.LastError))).
		SQL("INSERT INTO " + d.quoted + " (consumer_group, topic, msg_id, biz_keys, tags, sharding_key, sharding_hash," +
			" properties, `body`, attempts, last_error, cause, status, reason, replay_of, reported, created_at, updated_at) VALUES (").
		String(dl.Group).SQL(", ").String(dl.Topic).SQL(", ").String(dl.MsgID).SQL(", ").String(keys).SQL(", ").
		String(dl.Tag).SQL(", ").String(dl.ShardingKey).SQL(", ").Bytes(sqldb.Hash(dl.ShardingKey)).SQL(", ").
		Bytes(props).SQL(", ").Bytes(body).SQL(", ").Int(int64(dl.Attempts)).SQL(", ").Text(dl.LastError).SQL(", ").
		Text(string(dl.Cause)).SQL(", 1, '', ").Int(dl.ReplayOf).SQL(", 0, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))")
	query, args := st.Query()
	res, err := sqldb.Exec(ctx, d.db, query, args...)
	if sqldb.IsDuplicate(err) {
		var earlier struct {
			ID        int64  `db:"id"`
			Reported  bool   `db:"reported"`
			Attempts  int    `db:"attempts"`
			LastError string `db:"last_error"`
			Cause     string `db:"cause"`
			Status    Status `db:"status"`
		}
		err := sqldb.Get(ctx, d.db, &earlier, "SELECT id, reported, attempts, CAST(last_error AS BINARY) AS last_error, cause, status FROM "+
			d.quoted+" WHERE consumer_group = ? AND msg_id = ?", []byte(dl.Group), []byte(dl.MsgID))
		if err != nil {
			return false, fmt.Errorf("deadletter: park %s: parked before; reported? %w", dl.MsgID, err)
		}
		dl.ID = earlier.ID
		// A record someone already replayed or discarded needs no one
		// told of it any more.
		late := !earlier.Reported && earlier.Status == Parked
		if late {
			// Reported now, as it was recorded: this delivery may have
			// failed otherwise (or, under ParkKey, been parked behind
			// that record, its own).
			dl.Attempts, dl.LastError, dl.Cause = earlier.Attempts, earlier.LastError, consumer.Cause(earlier.Cause)
		}
		return late, nil
	}
	if err != nil {
		return false, fmt.Errorf("deadletter: park %s: %w", dl.MsgID, err)
	}
	if dl.ID, err = res.LastInsertId(); err != nil {
		return false, fmt.Errorf("deadletter: park %s: %w", dl.MsgID, err)
	}
	return true, nil
}

// Reported implements [consumer.ReportedParker]: it marks dl's record
// reported, so that a later park of the message does not report it again.
func (d *Table) Reported(ctx context.Context, dl *consumer.DeadLetter) error {
	_, err := sqldb.Exec(ctx, d.db, "UPDATE "+d.quoted+" SET reported = 1 WHERE consumer_group = ? AND msg_id = ?",
		[]byte(dl.Group), []byte(dl.MsgID))
	if err != nil {
		return fmt.Errorf("deadletter: mark %s reported: %w", dl.MsgID, err)
	}
	return nil
}

// HasParked reports whether group has a parked message with this
// sharding key, or a replay its group has not received yet (Replaying),
// whose place in the key's order (its id, or for a replay parked again
// the original's id) is below before (0: any).
func (d *Table) HasParked(ctx context.Context, group, shardingKey string, before int64) (bool, error) {
	if before <= 0 {
		before = math.MaxInt64
	}
	var one int
	err := sqldb.Get(ctx, d.db, &one, "SELECT 1 FROM "+d.quoted+
		" WHERE consumer_group = ? AND sharding_hash = ? AND status IN (1, 4) AND sharding_key = ?"+
		" AND IF(replay_of > 0, replay_of, id) < ? LIMIT 1",
		group, sqldb.Hash(shardingKey), []byte(shardingKey), before)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("deadletter: parked messages of a key: %w", err)
	}
	return true, nil
}

// ReplayReceived implements [consumer.ReplayTracker]: group received the
// replay of the dead letter whose place in its key's order is replayOf,
// which stops holding the key (Replaying becomes Replayed). A replay
// received again, or one already marked, changes nothing. A replay may
// arrive before the Replay that sent it has committed its mark: Replay
// keeps the chain's origin row (replayOf) locked from its read to its
// commit, and ReplayReceived waits for that lock before it marks, so such
// a replay is marked Replayed too, never left Replaying behind its report.
//
// It runs in READ COMMITTED: its UPDATE finds the chain's row through the
// (group, status) index, and under REPEATABLE READ it would lock the
// index's gaps and every Replaying row it reads, where a Replay of
// another chain, holding one of those rows, waits to mark its own row
// Replaying: a deadlock. In READ COMMITTED it locks only the row it marks,
// and reads the latest committed status.
func (d *Table) ReplayReceived(ctx context.Context, group string, replayOf int64) error {
	if err := sqldb.CheckSession(ctx, d.db); err != nil {
		return fmt.Errorf("deadletter: replay of %d received: %w", replayOf, err)
	}
	tx, err := d.db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return fmt.Errorf("deadletter: replay of %d received: %w", replayOf, err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	if err := d.lockOrigin(ctx, tx, replayOf); err != nil {
		return fmt.Errorf("deadletter: replay of %d received: %w", replayOf, err)
	}
	_, err = sqldb.Exec(ctx, tx, "UPDATE "+d.quoted+" SET status = 2, updated_at = UTC_TIMESTAMP(6)"+
		" WHERE consumer_group = ? AND status = 4 AND IF(replay_of > 0, replay_of, id) = ?", group, replayOf)
	if err != nil {
		return fmt.Errorf("deadletter: replay of %d received: %w", replayOf, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("deadletter: replay of %d received: %w", replayOf, err)
	}
	return nil
}

// lockOrigin locks the row of dead letter origin (if it is there) in tx
// until tx ends: every Replay of its chain holds it, and ReplayReceived
// takes it, so a report waits for a Replay in flight to commit its mark.
func (d *Table) lockOrigin(ctx context.Context, tx *sqlx.Tx, origin int64) error {
	var id int64
	err := sqldb.Get(ctx, tx, &id, "SELECT id FROM "+d.quoted+" WHERE id = ? FOR UPDATE", origin)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	return nil
}

// deadLetterColumns are named, never *, so that a migration adding a
// column does not break a running older version; times are read as text
// (see sqldb).
const deadLetterColumns = "id, consumer_group, topic, msg_id, biz_keys, tags, sharding_key, properties, `body`," +
	" attempts, CAST(last_error AS BINARY) AS last_error, cause, status, CAST(reason AS BINARY) AS reason, replay_of," +
	" CAST(created_at AS CHAR) AS created_at," +
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

func (r *row) entry() (*Entry, error) {
	dl := &Entry{DeadLetter: consumer.DeadLetter{ID: r.ID, Group: r.Group, Topic: r.Topic, MsgID: r.MsgID,
		Keys: remoting.SplitKeys(string(r.Keys)), Tag: string(r.Tags), ShardingKey: string(r.ShardingKey), Body: r.Body,
		Attempts: r.Attempts, LastError: r.LastError, Cause: consumer.Cause(r.Cause), ReplayOf: r.ReplayOf},
		Status: Status(r.Status), Reason: r.Reason, CreatedAt: r.CreatedAt.Time, UpdatedAt: r.UpdatedAt.Time}
	if err := json.Unmarshal(r.Properties, &dl.Properties); err != nil {
		return nil, fmt.Errorf("deadletter: %d properties: %w", r.ID, err)
	}
	return dl, nil
}

// Filter selects entries for [Table.List].
type Filter struct {
	// Group limits the list to one consumer group; empty for all.
	Group string
	// Namespace limits the list to the groups of one RocketMQ namespace
	// (stored as "ns%group"); empty for all.
	Namespace string
	// Status limits the list to one status; zero for all.
	Status Status
	// Key limits the list to messages carrying this key among their keys;
	// keys joined by spaces (consumer.Key) match exactly that key list.
	// The table is scanned: an operator's query, not a hot path.
	Key string
	// AfterID pages: only ids greater than it. Ids are taken when a row
	// is inserted, not when it commits, so a row committed after a later
	// id was listed is missed by the pages after it: a page is a view, not
	// a feed of new dead letters (the consumer's WithAlert is that).
	AfterID int64
	// Limit caps the rows returned; zero means 100.
	Limit int
	// NoBody leaves each entry's Body nil, for a listing that does not
	// show bodies: a page of messages near the broker's 4 MiB limit would
	// otherwise be read whole (Get reads one letter's).
	NoBody bool
}

// likeEscaper escapes LIKE's wildcards with '!'.
var likeEscaper = strings.NewReplacer("!", "!!", "%", "!%", "_", "!_")

// List returns dead letters in id order, with their bodies unless
// f.NoBody.
func (d *Table) List(ctx context.Context, f Filter) ([]*Entry, error) {
	columns := deadLetterColumns
	if f.NoBody {
		columns = strings.Replace(columns, "`body`", "NULL AS `body`", 1)
	}
	q := "SELECT " + columns + " FROM " + d.quoted + " WHERE id > ?"
	args := []any{f.AfterID}
	if f.Group != "" {
		q += " AND consumer_group = ?"
		args = append(args, f.Group)
	}
	if f.Namespace != "" {
		q += " AND consumer_group LIKE ? ESCAPE '!'"
		args = append(args, likeEscaper.Replace(f.Namespace+"%")+"%")
	}
	if f.Status != 0 {
		q += " AND status = ?"
		args = append(args, int(f.Status))
	}
	switch {
	case strings.Contains(f.Key, " "):
		// Keys hold no space: this is several keys joined (consumer.Key),
		// matched as the message's whole key list.
		q += " AND biz_keys = ?"
		args = append(args, []byte(f.Key))
	case f.Key != "":
		// Keys are stored space-separated.
		q += " AND CONCAT(' ', biz_keys, ' ') LIKE ? ESCAPE '!'"
		args = append(args, []byte("% "+likeEscaper.Replace(f.Key)+" %"))
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	q += " ORDER BY id LIMIT ?"
	args = append(args, limit)
	var rows []row
	if err := sqldb.Select(ctx, d.db, &rows, q, args...); err != nil {
		return nil, fmt.Errorf("deadletter: list: %w", err)
	}
	out := make([]*Entry, 0, len(rows))
	for i := range rows {
		dl, err := rows[i].entry()
		if err != nil {
			return nil, err
		}
		out = append(out, dl)
	}
	return out, nil
}

// Get returns one dead letter, or [ErrNotFound].
func (d *Table) Get(ctx context.Context, id int64) (*Entry, error) { return d.get(ctx, d.db, id, "") }

// get reads one dead letter through q; lock is appended to the query.
func (d *Table) get(ctx context.Context, q sqlx.QueryerContext, id int64, lock string) (*Entry, error) {
	var r row
	err := sqldb.Get(ctx, q, &r, "SELECT "+deadLetterColumns+" FROM "+d.quoted+" WHERE id = ?"+lock, id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %d", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("deadletter: get %d: %w", id, err)
	}
	return r.entry()
}

// Replay sends a parked message again to its original topic, with its
// keys, tag, sharding key, properties and body (a new message id), then
// marks it [Replaying] with reason ([Replayed] once its group receives
// it). The message carries the dead letter's
// place in its key's order (consumer.Message.ReplayOf) for its own group
// only: other groups consuming the topic receive it as a new message. The send comes first: if marking fails
// the message may be replayed twice, which the idempotency guard absorbs;
// it is never marked replaying without having been sent. The row stays
// locked from the read to the mark: a Replay or Discard of the same dead
// letter meanwhile waits, then finds it replayed ([ErrNotParked]), so it
// is neither sent twice nor recorded discarded after being sent; so does
// the chain's original row for a replay parked again, and a consumer's
// [Table.ReplayReceived] of the replay waits for the mark. The mark
// after an accepted send runs even if ctx ends meanwhile (for up to 10 s).
// A dead letter
// records its group in its namespace and its topic without it, so pub must
// send in the group's namespace: a publisher that tells its namespace (a
// *producer.Producer does) is refused with [ErrWrongNamespace] otherwise.
func (d *Table) Replay(ctx context.Context, id int64, pub Publisher, reason string) error {
	if err := sqldb.CheckSession(ctx, d.db); err != nil {
		return fmt.Errorf("deadletter: replay %d: %w", id, err)
	}
	// The transaction is not bound to ctx (database/sql would roll it back
	// when ctx ends): once the broker accepted the message the mark must
	// still commit. Its statements take ctx up to the send, markTimeout
	// after it.
	tx, err := d.db.BeginTxx(context.WithoutCancel(ctx), nil)
	if err != nil {
		return fmt.Errorf("deadletter: replay %d: %w", id, err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	dl, err := d.get(ctx, tx, id, " FOR UPDATE")
	if err != nil {
		return err
	}
	if dl.Status != Parked {
		return fmt.Errorf("%w: %d is %s", ErrNotParked, id, dl.Status)
	}
	if dl.ReplayOf > 0 {
		// The chain's origin stays locked with the row until the mark
		// commits: ReplayReceived waits on it (see there).
		if err := d.lockOrigin(ctx, tx, dl.ReplayOf); err != nil {
			return fmt.Errorf("deadletter: replay %d: %w", id, err)
		}
	}
	if p, ok := pub.(interface{ Namespace() string }); ok {
		if want := namespace.Of(dl.Group); p.Namespace() != want {
			return fmt.Errorf("%w: %d belongs to group %s (namespace %q), the publisher sends in namespace %q",
				ErrWrongNamespace, id, dl.Group, want, p.Namespace())
		}
	}
	props := maps.Clone(dl.Properties)
	if props == nil {
		props = make(map[string]string, 1)
	}
	// Older versions kept the client's sharding key property (SHARDING_KEY)
	// among a dead letter's user properties; the send sets it from
	// ShardingKey, and refuses it as a property.
	maps.DeleteFunc(props, func(name, _ string) bool { return remoting.IsSystemProperty(name) })
	props[remoting.PropReplayOf] = strconv.FormatInt(dl.origin(), 10)
	props[remoting.PropReplayGroup] = dl.Group
	_, err = pub.Send(ctx, producer.Message{Topic: dl.Topic, Body: dl.Body, Keys: dl.Keys, Tag: dl.Tag,
		Properties: props, ShardingKey: dl.ShardingKey})
	if err != nil {
		return fmt.Errorf("deadletter: replay %d: %w", id, err)
	}
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), markTimeout)
	defer cancel()
	if err := d.transition(mctx, tx, id, Replaying, reason); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("deadletter: mark %d %s: %w", id, Replaying, err)
	}
	return nil
}

// markTimeout bounds Replay's mark after the broker accepted the message,
// which does not end with Replay's ctx.
const markTimeout = 10 * time.Second

// Discard marks a parked message as handled without replaying it.
func (d *Table) Discard(ctx context.Context, id int64, reason string) error {
	return d.transition(ctx, d.db, id, Discarded, reason)
}

// MarkReceived marks a Replaying dead letter Replayed by hand, with
// reason: for a replay its group's consumer will not report received (a
// consumer of an older version ran it, or the group's offset moved past
// it), which would hold its key's order for ever. [ErrNotReplaying] when
// it is not Replaying.
func (d *Table) MarkReceived(ctx context.Context, id int64, reason string) error {
	return d.transition(ctx, d.db, id, Replayed, reason)
}

// transition moves a dead letter to status to, through ex (the table's
// handle, or Replay's transaction): a Parked one, or to Replayed, a
// Replaying one.
func (d *Table) transition(ctx context.Context, ex sqlx.ExtContext, id int64, to Status, reason string) error {
	from, refused := Parked, ErrNotParked
	if to == Replayed {
		from, refused = Replaying, ErrNotReplaying
	}
	query, args := sqldb.NewStatement(200 + 2*len(reason)).SQL("UPDATE " + d.quoted + " SET status = ").Int(int64(to)).
		SQL(", reason = ").Text(reason).SQL(", updated_at = UTC_TIMESTAMP(6) WHERE id = ").Int(id).
		SQL(" AND status = ").Int(int64(from)).Query()
	res, err := sqldb.Exec(ctx, ex, query, args...)
	if err != nil {
		return fmt.Errorf("deadletter: mark %d %s: %w", id, to, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("deadletter: mark %d %s: %w", id, to, err)
	} else if n == 0 {
		if _, err := d.get(ctx, ex, id, ""); err != nil {
			return err
		}
		return fmt.Errorf("%w: %d", refused, id)
	}
	return nil
}
