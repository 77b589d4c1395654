// Package orderly keeps the messages of one business key (an order id, a
// table row) in order, from producer to handler.
//
// Ordering in RocketMQ is per queue. [QueueIndex] maps a sharding key to a
// queue: FNV-1a 32 of the key modulo the queue count, unsigned, so it is
// never negative (a Java-style hashCode % n can be) and is the same in
// every process, on every restart and platform, and the same as the
// official client's hash selector on 64-bit platforms (not on 32-bit
// ones, where that selector's hash goes negative).
// producer.Message.ShardingKey uses it through a [Selector];
// consumer.NewOrderly consumes each queue serially, suspends (never skips)
// on failure, and parks after a persistent attempt cap.
//
// # Failure modes
//
// The mapping depends on the topic's queue layout. When a broker leaves
// the route (it died), the [Selector] keeps hashing over the old layout:
// keys whose queue was on the lost broker are held back (their sends fail
// as transient and the outbox retries them) rather than re-hashed onto a
// live queue while their earlier messages wait on the lost one; other keys
// keep their queues. After [Selector.LossGrace] (default 10 minutes) the
// smaller layout is adopted. Queues added (a new broker, more queues) are
// adopted at once. Either change re-hashes keys, and messages of a key
// already sent to its old queue may then be consumed after newer ones on
// its new queue; the Selector reports it ([QueueCountChange];
// producer.WithQueueCountChange). Drain or pause the producers of ordered
// topics around planned queue changes. Between a broker's death and the
// client's next route refresh (up to 30 s) sends to its queues fail in
// transport, which is transient too.
package orderly
