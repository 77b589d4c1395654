// Package producer sends RocketMQ messages honestly: a send returns nil
// only when the broker answered SEND_OK, and every failure says what
// happened to the message.
//
// A [Producer] wraps one long-lived official client (a unique instance
// name each, the client's process-wide logger contained and silent). The
// client's own blind retries are off; [Producer.Send] retries only
// [Transient] failures (nothing was stored), up to [WithRetry] attempts
// with the same client message id, backing off from [WithRetryBackoff].
//
// # Failure modes
//
// Errors are *[SendError] values carrying an [Outcome]:
//   - [OutcomeUnknown]: the request was written but no answer came (lost
//     ack, ctx deadline, broken connection). The message may be stored;
//     the outbox resends such rows and idempotent consumers absorb the
//     duplicate. Never retried here.
//   - [Transient]: not stored (broker down, no route, busy). Retried.
//   - [Permanent]: not stored, and the same message would fail again
//     (invalid message, unknown topic, no permission). Never retried.
//   - [NotDurable]: stored, but flush or replication timed out.
//
// Use [IsOutcomeUnknown], [IsRetryable], [IsPermanent] and [IsNotDurable]
// rather than inspecting the client's errors.
//
// # Delays and ordering
//
// Message.Delay is mapped to the smallest broker delay level not below it
// ([WithDelayLevels] must match the broker's table); a delay beyond the
// largest level is [ErrDelayTooLong], never a silent clamp. A message with
// a ShardingKey goes to the queue [orderly.QueueIndex] picks, so all
// messages of one key share a queue while the topic's queue count stays the
// same; [WithQueueCountChange] reports a change. [WithOrderedTopics] makes
// a missing key an error. A message with both a ShardingKey and a Delay is
// an [ErrInvalidMessage]: the broker appends a delayed message to its queue
// only when the delay ends, so it would be consumed after the key's
// messages sent meanwhile.
//
// # Lifecycle
//
// [New] does no I/O. [Producer.Close] stops new sends, waits for those in
// flight and shuts the client down; it is idempotent. Sends after Close
// return [ErrClosed].
//
// # Transactional messages
//
// [NewTransactional] starts a producer of RocketMQ transactional messages:
// [Transactional.SendInTransaction] stores a half message, runs the
// caller's local transaction and commits or rolls the message back by its
// answer; a [TxChecker] answers the broker's check-backs. It applies the
// same message rules, queue selector, credentials and instance naming as
// [New], and takes only the options that fit it ([TxOption]; options that
// fit both are [SharedOption]). Package outbox's TxMessenger is built on it.
package producer
