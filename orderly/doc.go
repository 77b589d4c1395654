// Package orderly keeps the messages of one business key (an order id, a
// table row) in order, from producer to handler.
//
// Ordering in RocketMQ is per queue. [QueueIndex] maps a sharding key to a
// queue: FNV-1a 32 of the key modulo the queue count, unsigned, so it is
// never negative (a Java-style hashCode % n can be) and is the same in
// every process, on every restart and platform, and the same as the
// official client's hash selector. producer.Message.ShardingKey uses it
// through a [Selector]; consumer.NewOrderly consumes each queue serially,
// suspends (never skips) on failure, and parks after a persistent attempt
// cap.
//
// # Failure modes
//
// The mapping depends on the topic's writable queue count. When it
// changes (queues added, a broker of the cluster down) keys re-hash, and
// messages of a key already sent to its old queue may be consumed after
// newer ones on its new queue. The [Selector] reports such a change
// ([QueueCountChange]; producer.WithQueueCountChange); drain or pause the
// producers of ordered topics around planned queue changes.
package orderly
