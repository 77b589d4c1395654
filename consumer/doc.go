// Package consumer consumes RocketMQ messages without losing them and,
// with an idempotency guard, without applying any twice.
//
// A [Consumer] wraps the official push consumer (a unique instance name,
// the client's logger contained). The handler is func(ctx, *Message)
// error, called once per message also when the client hands over batches
// ([WithBatchSize]):
//   - nil acknowledges the message;
//   - an error or a panic (a *[PanicError]) is a retry, never an ack: the
//     message comes back after [WithRetryDelay] through the group's
//     %RETRY% topic. The consumer stores the retry copy there itself (same
//     message id, keys, tag, properties and body; the attempt count in the
//     broker's own reconsumeTimes, so it survives restarts) and
//     acknowledges the original only once the copy is stored. While the
//     broker refuses the copy or cannot be reached, it tries again with
//     backoff and the message stays unacknowledged; on Close it is left
//     for redelivery. The client's send-back is never used: it drops a
//     message the broker refuses (#1106);
//   - a guard, parker or retry store that fails five times in a row, or a
//     key another consumer holds past several leases, is logged at Error
//     and reported to [WithTroubleAlert] once per run of failures;
//   - at the attempt cap ([WithMaxAttempts], default 4) or on a
//     [Permanent] error the message is parked with its error and attempt
//     count in a [Parker] (deadletter.Table), the alert hook fires
//     once (with a [ReportedParker], such as deadletter.Table, at least
//     once: a crash between the alert and its mark alerts it again), and
//     the message is acknowledged;
//   - a failure of the guard or of the parker is a retry too;
//   - a panic outside the handler (a hook, the key func, the parker, a
//     guard store: the program's bug) is logged at Error with its stack
//     and retries every message it left unsettled (it may run again); a
//     message it reached settled keeps its verdict (handled once its
//     handler returned nil, parked once the parker recorded it), and a
//     guard store that panics completing keys fails those completions
//     only, as one that fails does (in a combined round trip, that round
//     trip's keys). Without this the client would swallow the panic and
//     hold the message until its 15-minute consume timeout. A key a panic
//     left claimed before its handler ran is released for the retry. A
//     panic in a report (an alert, [WithTroubleAlert] or [WithAlert], or
//     the hooks' Event) is logged at Error and changes nothing: a report
//     tells of what already happened.
//
// With [WithGuard] each business key ([WithKeyFunc], default the message
// keys) runs once per consumer group while the guard retains it:
// redeliveries after a lost offset commit, a rebalance or an outbox resend
// are acknowledged without running. A message with no key is parked rather
// than run unguarded, and so is one whose key the guard's store cannot
// hold (idempotency.ErrKeyTooLong). The guard's retention must cover [RedeliverySpan].
//
// # Batches
//
// With [WithBatchSize] n > 1 the concurrent consumer takes up to n
// messages of a queue at once. Their handlers run at the same time, each
// on its own message; with a guard the batch's keys are claimed in one
// round trip (idempotency.Guard.ClaimBatch), shared with the claims of
// other batches made at the same moment, and each success is completed as
// its handler returns, in one round trip with the others finishing then
// (on a store with batch methods, idempotency.BatchStore; on another each
// batch claims, and each handler completes, on its own).
// The client's batch result is all or nothing, so the batch is
// acknowledged only once every message in it is settled: handled, a
// duplicate, parked, or its own retry copy stored. A failing message is
// retried or parked alone; a key that occurs twice in a batch runs once
// (the later message is claimed after the earlier one settles). If Close
// begins before a batch is settled (a retry copy the broker keeps
// refusing), the whole batch is redelivered after a restart.
//
// [NewOrderly] consumes each queue serially: with messages sent by
// sharding key (producer.Message.ShardingKey) a key's messages are handled
// in send order. A failure suspends the queue for the retry delay and
// retries the same message (the client's other results would skip it);
// the attempt count lives in the guard's store, so the cap holds across
// restarts. At the cap the message is parked, and under [ParkKey] every
// later message of its key is parked behind it until a human replays or
// discards the first (a redelivery of a message its guard already saw
// done is acknowledged as a duplicate, not parked).
//
// # Manual handling
//
// Package deadletter holds the parked messages: its Table is the usual
// [Parker] and lists, replays and discards them (`reliablemq dead` from the
// command line), and its Drain moves what the broker put in a group's
// %DLQ% topic there too.
//
// # Lifecycle
//
// [Consumer.Run] starts the consumer, consumes until its ctx ends and
// closes it; [Consumer.Start] and [Consumer.Close] are the same in two
// steps.
//
// # Shutdown
//
// [Consumer.Close] stops intake, waits for running handlers up to
// [WithShutdownTimeout], then cancels their ctx and still waits for them, and
// only then shuts the client down, so nothing touches a store after Close
// returns and an orderly queue is unlocked only when its handler is done.
// Messages delivered but not handled are redelivered after a restart; so
// is one whose handler returned an error after Close cancelled it: an
// interrupted attempt is never a failure that parks the message at the
// cap.
//
// # Limits
//
// Delivery is at least once; exactly-once effects need the guard, and in
// claim mode a crash between the effect and recording it can still repeat
// the effect after the lease (use idempotency.TxGuard inside the handler
// when the effect is a write to the same MySQL database). A new group
// starts from the first retained message (ConsumeFromFirstOffset). The
// client routes a group's %RETRY% topic only once it exists: on a real
// broker, create it with the group (or expect the first retry to wait for a
// route refresh, up to about a minute).
package consumer
