package consumer

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/seed157d4c4d/reliablemq/internal/namespace"
	"github.com/seed157d4c4d/reliablemq/internal/remoting"
)

// Message is one delivery handed to a [Handler].
type Message struct {
	// Topic is the topic the message was sent to, also on redeliveries
	// from the group's retry topic and on messages drained from its DLQ.
	Topic string
	// MsgID is the client message id (UNIQ_KEY); the same on every
	// redelivery of this message, different on a resend by the outbox.
	MsgID string
	Keys  []string
	Tag   string
	// ShardingKey is the official Go client's sharding key; a message
	// without one takes the Java client's (a 5.x FIFO message's group).
	ShardingKey string
	// Properties are the user properties (system ones removed).
	Properties map[string]string
	Body       []byte
	// Attempt is 1 on the first delivery and grows with each redelivery.
	Attempt int
	// ClaimToken is the guard's fencing token for this delivery ("" without
	// a guard): an effect outside the guard's store can carry it to refuse
	// a delivery whose lease ran out (see idempotency.Claim.Token).
	ClaimToken string
	// ReplayOf is, for a delivery of deadletter.Table.Replay, the id of the
	// original dead letter it replays (the first of the chain when a replay
	// was parked again), 0 for any other message. A replay reaches every
	// group consuming its topic; it is 0 in the groups other than the one
	// whose dead letter it replays, where the message is a new one (a
	// duplicate where the original was handled).
	ReplayOf    int64
	Queue       int
	QueueOffset int64
	BornTime    time.Time
}

// Handler handles one message. Returning nil acknowledges it; an error (or
// a panic) makes it a retry, and after the attempt cap it is parked.
// Wrap an error with [Permanent] to park at once. The ctx ends once the
// handler's batch is settled (work left running with it is cut off), when
// [Consumer.Close] gives up waiting (see [WithShutdownTimeout]), and with a
// guard it ends with the claim's lease: past it a redelivery may run the
// same key, so a handler must stop (and fail) when its ctx ends.
type Handler func(ctx context.Context, m *Message) error

// fromClient converts the official client's message into m, its topic
// taken out of namespace ns; group (with its namespace) is the consuming
// group, the only one a replay of its own dead letter holds a place in. It reads the properties from one copy (the client hands
// out no other view) in one pass, which picks out what the package reads
// without a lookup per name; the copy becomes Properties, once the system
// ones are removed, only when the message has user properties (most have
// none). This runs once per delivery: it hashes and allocates as little as
// it can.
func fromClient(ext *primitive.MessageExt, ns, group string, m *Message) {
	props := ext.GetProperties()
	*m = Message{
		Topic:       ext.Topic,
		MsgID:       ext.MsgId,
		Body:        ext.Body,
		Attempt:     int(ext.ReconsumeTimes) + 1,
		QueueOffset: ext.QueueOffset,
		BornTime:    time.UnixMilli(ext.BornTimestamp),
	}
	if ext.Queue != nil {
		m.Queue = ext.Queue.QueueId
	}
	var retryTopic, attempt, keys, replayOf, replayGroup, javaShardingKey string
	user := false
	for name, value := range props {
		switch name {
		case primitive.PropertyTags:
			m.Tag = value
		case remoting.PropShardingKey:
			m.ShardingKey = value
		case remoting.PropJavaShardingKey:
			javaShardingKey = value
		case primitive.PropertyKeys:
			keys = value
		case remoting.PropRetryTopic:
			retryTopic = value
		case remoting.PropAttempt:
			attempt = value
		case remoting.PropReplayOf:
			replayOf = value
		case remoting.PropReplayGroup:
			replayGroup = value
		default:
			user = user || !remoting.IsSystemProperty(name)
		}
	}
	if m.ShardingKey == "" {
		m.ShardingKey = javaShardingKey
	}
	if retryTopic != "" && (strings.HasPrefix(m.Topic, "%RETRY%") || strings.HasPrefix(m.Topic, "%DLQ%")) {
		m.Topic = retryTopic
	}
	m.Topic = namespace.Strip(ns, m.Topic)
	if attempt != "" {
		if a, err := strconv.Atoi(attempt); err == nil && a+1 > m.Attempt {
			m.Attempt = a + 1 // a retry the consumer re-sent itself
		}
	}
	if keys != "" {
		m.Keys = remoting.SplitKeys(keys)
	}
	// A replay without its group was sent by an older version: taken as
	// this group's, as that version did.
	if replayOf != "" && (replayGroup == "" || replayGroup == group) {
		if id, err := strconv.ParseInt(replayOf, 10, 64); err == nil && id > 0 {
			m.ReplayOf = id
		}
	}
	if user {
		for name := range props {
			if remoting.IsSystemProperty(name) || name == remoting.PropReplayOf || name == remoting.PropReplayGroup {
				delete(props, name)
			}
		}
		m.Properties = props
	}
}

// Key is the default business key: the message keys joined by spaces.
func Key(m *Message) string { return strings.Join(m.Keys, " ") }

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as one no retry can fix: the message is parked for
// manual handling at once.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

// IsPermanent reports whether err was marked with [Permanent].
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// PanicError is what a handler panic becomes: a retryable error carrying
// the panic value and stack.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("consumer: handler panic: %v", e.Value) }

// invoke runs h on m, turning a panic into a *[PanicError].
func invoke(ctx context.Context, h Handler, m *Message) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Value: v, Stack: debug.Stack()}
		}
	}()
	return h(ctx, m)
}
