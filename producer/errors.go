package producer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	rmqerrors "github.com/apache/rocketmq-client-go/v2/errors"
	"github.com/seed157d4c4d/reliablemq/internal/remoting"
)

// Sentinel errors. They are returned wrapped; match them with errors.Is.
var (
	// ErrClosed is returned by sends after [Producer.Close].
	ErrClosed = errors.New("producer: closed")
	// ErrInvalidMessage is wrapped by every error about a message the broker
	// would refuse: empty or bad topic, empty or oversized body, a key with
	// a space, a reserved or malformed property.
	ErrInvalidMessage = errors.New("producer: invalid message")
	// ErrDelayTooLong is returned for a delay beyond the largest delay
	// level; the broker would silently clamp it.
	ErrDelayTooLong = errors.New("producer: delay beyond the largest delay level")
	// ErrNoShardingKey is returned for a message without a sharding key sent
	// to a topic listed in [WithOrderedTopics], and for a batch that
	// carries sharding keys (a batch goes to a random queue).
	ErrNoShardingKey = errors.New("producer: ordered message needs a sharding key")
	// ErrAccessDenied is wrapped by the [Permanent] error of a send the
	// broker's ACL refused: unknown access key, wrong secret (a signature
	// mismatch) or no PUB permission on the topic. The broker's own text
	// follows it, naming the check that failed.
	ErrAccessDenied = errors.New("producer: access denied by the broker's ACL (check the account's keys and its PUB permission on the topic)")
)

// Outcome says what the broker did with a message whose send failed.
type Outcome int

const (
	// OutcomeUnknown: the request was written but no reply arrived in time
	// (or the connection broke after the write). The broker may have
	// stored the message; resending may duplicate it, which idempotent
	// consumers absorb.
	OutcomeUnknown Outcome = iota
	// Transient: the message was not stored (broker unreachable, no route,
	// broker busy or not available). Resending is safe and may succeed.
	Transient
	// Permanent: the message was not stored and resending the same message
	// to the same topic will fail again (no such topic, no permission,
	// message refused as illegal, invalid message).
	Permanent
	// NotDurable: the broker stored the message but reported weaker
	// durability than SEND_OK (flush to disk or to the slave timed out, or
	// no slave available). The message exists; it may be lost if the
	// broker crashes now.
	NotDurable
)

func (o Outcome) String() string {
	switch o {
	case OutcomeUnknown:
		return "outcome unknown"
	case Transient:
		return "transient"
	case Permanent:
		return "permanent"
	case NotDurable:
		return "not durable"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// SendError is the error of a failed send. Every error [Producer.Send]
// returns, apart from [ErrClosed], is a *SendError.
type SendError struct {
	Topic string
	Keys  []string
	// MsgID is the client message id (UNIQ_KEY) of the last attempt; it
	// stays the same across this producer's own retries.
	MsgID   string
	Outcome Outcome
	// Code is the broker's response code when the broker answered, else 0.
	Code int
	// Attempts is how many times the message was handed to the client.
	Attempts int
	Err      error
}

func (e *SendError) Error() string {
	return fmt.Sprintf("producer: send to %s (keys %q, %d attempts): %s: %v",
		e.Topic, e.Keys, e.Attempts, e.Outcome, e.Err)
}

func (e *SendError) Unwrap() error { return e.Err }

// IsOutcomeUnknown reports whether err says the broker may or may not have
// stored the message.
func IsOutcomeUnknown(err error) bool { return outcomeIs(err, OutcomeUnknown) }

// IsRetryable reports whether resending may succeed without duplicating:
// the message was certainly not stored and the cause may go away.
func IsRetryable(err error) bool { return outcomeIs(err, Transient) }

// IsPermanent reports whether resending the same message cannot succeed.
func IsPermanent(err error) bool { return outcomeIs(err, Permanent) }

// IsNotDurable reports whether the message was stored with weaker
// durability than SEND_OK.
func IsNotDurable(err error) bool { return outcomeIs(err, NotDurable) }

func outcomeIs(err error, o Outcome) bool {
	var se *SendError
	return errors.As(err, &se) && se.Outcome == o
}

// Broker response codes this package distinguishes (the remoting protocol's
// numbering).
const (
	codeMessageIllegal = 13
	codeNoPermission   = 16
	codeTopicNotExist  = 17
)

func isACLRefusal(err error) bool {
	_, refused := remoting.ACLRefusal(err.Error())
	return refused
}

// describe names what err means where the client's text does not: an ACL
// refusal becomes [ErrAccessDenied] with the broker's reason, without the
// Java class and source line around it; a missing route while no name
// server answers wraps [ErrNameServerUnreachable].
func (c *config) describe(ctx context.Context, err error) error {
	if reason, refused := remoting.ACLRefusal(err.Error()); refused {
		return fmt.Errorf("%w: %s", ErrAccessDenied, reason)
	}
	return c.probe.explain(ctx, err)
}

// classify translates an error of the official client's SendSync. The
// client reports broker refusals only as text ("CODE: n, DESC: ...") and
// missing routes as "... route info not found"; this boundary is the one
// place that reads them.
func classify(err error) (Outcome, int) {
	var code int
	if _, scanErr := fmt.Sscanf(err.Error(), "CODE: %d, DESC:", &code); scanErr == nil {
		switch {
		case code == codeMessageIllegal || code == codeNoPermission || code == codeTopicNotExist:
			return Permanent, code
		case isACLRefusal(err):
			return Permanent, code
		}
		return Transient, code // the broker answered: nothing stored
	}
	if strings.Contains(err.Error(), "route info not found") {
		return Transient, 0
	}
	if errors.Is(err, rmqerrors.ErrRequestTimeout) {
		return OutcomeUnknown, 0
	}
	// A failed dial sent nothing, nor did a failed "set": the client sets
	// the write deadline just before writing the frame, and gives up when
	// that fails (the connection closed under it). A failed write sent at
	// most part of the frame (net.Conn.Write returns an error only when
	// some bytes were not written), which the broker cannot decode, so
	// nothing was stored.
	var op *net.OpError
	if errors.As(err, &op) && (op.Op == "dial" || op.Op == "set" || op.Op == "write") {
		return Transient, 0
	}
	// Anything unrecognised: the request may have reached the broker.
	return OutcomeUnknown, 0
}
