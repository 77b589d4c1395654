package consumer

import "context"

// Cause says why a message was parked.
type Cause string

// Causes.
const (
	// CauseRetries: the handler failed on every attempt up to the cap.
	CauseRetries Cause = "retries"
	// CausePermanent: the handler returned a [Permanent] error, or the
	// message had no business key.
	CausePermanent Cause = "permanent"
	// CauseDLQ: drained from the broker's %DLQ% topic (deadletter.Drain).
	CauseDLQ Cause = "dlq"
	// CauseKeyParked: an earlier message of the same sharding key is
	// parked, and the orderly consumer parks the key's later messages too.
	CauseKeyParked Cause = "key-parked"
	// CauseRetryRefused: the broker refused the message's retry copy for
	// the message itself (MESSAGE_ILLEGAL: its properties, with those a
	// retry adds, past the broker's limit); it can never be retried.
	CauseRetryRefused Cause = "retry-refused"
)

// DeadLetter is a message the consumer gave up on, as it hands it to the
// [Parker]: the message verbatim, how many deliveries it had and why it
// was parked.
type DeadLetter struct {
	// ID is set by the parker when it records the message (0 if it keeps
	// no ids).
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
	// ReplayOf is, for a replayed message that was parked again, the id
	// of the original dead letter (the first of the chain); 0 otherwise.
	// Under [ParkKey] it keeps the original's place in its key's order.
	ReplayOf int64
}

// Parker records messages for manual handling. Park must be idempotent
// per (Group, MsgID): parking the same delivery twice keeps one record and
// reports inserted only the first time (a [ReportedParker]: also while
// the record is parked and not reported). The consumer logs and alerts a
// message when Park reports inserted. deadletter.Table implements it.
type Parker interface {
	Park(ctx context.Context, d *DeadLetter) (inserted bool, err error)
}

// ReportedParker is a [Parker] that remembers whether each record was
// reported: a consumer that crashed, or lost the park's reply, between
// recording a message and logging and alerting it leaves a record nobody
// was told of, and the message's next delivery, parked again (in any
// process), finds it still parked and not reported (an entry an operator
// replayed or discarded meanwhile needs no report), so Park says inserted
// (setting d's attempts, last error and cause to the record's) and that
// delivery reports it as recorded. The consumer calls Reported once it
// has. A crash after the alert and before Reported alerts the message
// twice, as does a second delivery of it parked while the first is still
// being reported. deadletter.Table implements it.
type ReportedParker interface {
	Parker
	Reported(ctx context.Context, d *DeadLetter) error
}

// KeyParker is a [Parker] that can tell whether a sharding key has a
// parked message; the orderly consumer's [ParkKey] policy needs one.
// deadletter.Table implements it.
type KeyParker interface {
	Parker
	// HasParked reports whether group has a parked message of
	// shardingKey whose place in the key's order (its id, or for a
	// replay parked again the original's) is below before (0: any).
	HasParked(ctx context.Context, group, shardingKey string, before int64) (bool, error)
}

// ReplayTracker is a [Parker] that holds a replayed dead letter's place
// in its key's order until the replay reaches its group (see
// [KeyParker]): messages of the key queued before the replay must not
// overtake it. The consumer reports each replay of its own group's dead
// letters ([Message.ReplayOf]) as received before it runs, and retries a
// replay whose report failed; from then on the queue holds its place.
// deadletter.Table implements it.
type ReplayTracker interface {
	ReplayReceived(ctx context.Context, group string, replayOf int64) error
}
