// Package idempotency makes a consumer group's side effect happen once per
// business key, although RocketMQ delivers at least once.
//
// Duplicates are certain: lost acks make producers resend, consumers
// restart or rebalance before committing offsets, the outbox resends
// what it could not confirm. Key the guard on the business key (an order
// id, a payment id), never the MsgId: a resent message gets a new MsgId.
//
// # Two modes
//
// A [Guard] claims a key before the handler runs and marks it done after,
// on a [Store] shared by all consumers of the group ([MySQLStore] or
// [RedisStore]):
//   - [Acquired]: run the effect, then [Claim.Complete]; on failure
//     [Claim.Release], so the retry can run at once.
//   - [Done]: the effect was applied already; acknowledge the message.
//   - [Busy]: another consumer is running it; retry later.
//
// A claim is a lease ([WithLease]): if the consumer crashes mid-handler,
// the key frees itself when the lease ends and the redelivery runs. Each
// claim carries a fencing token, so an owner whose lease expired cannot
// mark done or release the new owner's claim ([ErrLostClaim]). The attempt
// count per key survives restarts (orderly consumers use it as their
// retry cap). A caller that counts attempts elsewhere claims through
// [Guard.WithoutAttempts]: on Redis a claim is then one write, not two.
//
// [Guard.ClaimBatch] and [Guard.CompleteBatch] do the same for many keys
// in one round trip each on a [BatchStore] (both stores are: on MySQL one
// multi-row statement, one commit, plus one read when a claimed key had a
// row already; on Redis one script, or on a Cluster one script per key in
// one pipeline), with the same per-key outcomes, tokens, leases and
// attempt counts. The MySQL statements carry their values as hex literals
// (no prepared statements), whatever the DSN says about them.
//
// A [TxGuard] writes the done marker in the caller's MySQL transaction
// together with the business effects: both commit or neither does. When
// the business data lives in the same database this is exactly-once, with
// no lease and no window between effect and marker.
//
// # Limits
//
// Duplicates are suppressed while the done marker is retained
// ([WithRetention], default 7 days); a duplicate arriving later runs
// again. Size retention beyond the consumer's redelivery span and any
// upstream resend window. In claim mode, a crash between the effect and
// Complete leaves the key to expire and run again: make the effect itself
// idempotent, or use [TxGuard]. A Store error is never an outcome: the
// caller must retry, not acknowledge.
//
// Purge expired MySQL rows with [MySQLStore.Purge] from a scheduled job;
// Redis expires its keys itself.
package idempotency
