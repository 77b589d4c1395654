// Package outbox makes "the order committed, so its message is sent" true,
// whatever fails in between.
//
// # The relay
//
// A [Relay] writes each message as a row of the mq_log table inside the
// caller's own transaction ([Relay.Enqueue] takes any [Execer]: *sql.Tx,
// *sqlx.Tx...), so the row exists exactly when the business data does.
// [Relay.Transact] runs a function in a transaction and sends its rows
// right after the commit; unordered rows are then marked Sent in the
// background, many calls' to a statement ([Relay.Flush] waits for the
// marks: call it before the process exits, or rows whose mark was lost are
// sent again once their lease ends). What is not sent then (broker down, send timed
// out, process killed between commit and send) stays Pending, and the
// reconcile job sends it later, backing off per row, until the attempt cap
// makes it Dead and fires the alert. [Relay.Replay] puts a Dead row back.
//
// Rows move only forward, each step one conditional UPDATE:
//
//	Pending -> Sent -> Confirmed     Pending -> Dead -> (replay) Pending
//
// Rows with a ShardingKey are ordered: row n+1 of a key is never sent
// before row n is Sent, so a failing row blocks its own key only. A row
// whose earlier row is being sent waits for it: for as long as it takes
// when another batch of the same relay sends it (the job's other claim
// loop, a concurrent Transact), up to 5 s when another process does. A row
// behind a failed row is handed back, due again when that row is (or at
// once when a consumer confirms it: its send had reached the broker after
// all); behind a Dead row, a second later.
//
// Any number of relays and reconcile jobs may share the table: claims take
// due rows with SELECT ... FOR UPDATE SKIP LOCKED and stamp them with an
// owner and a lease; sends happen outside the claiming transaction; marks
// check the owner. Marks and hand-backs of many rows never wait for a row
// lock: they take the rows no other transaction holds and poll the others
// (a consumer's open Confirm) until they are free or the 10 s bound of
// the mark ends.
//
// The relay's rules (per-key order, backoff, Dead rows and the alert,
// resends, lost claims) are kept apart from the SQL: they talk to the
// table through one unexported row store, implemented for MySQL, so they
// are tested without a database and the MySQL tests check the store keeps
// them.
//
// # Guarantees and limits
//
// At least once: a send whose ack was lost is sent again, so consumers must
// be idempotent on the message key (package idempotency). The broker may
// lose a message after acknowledging it (asynchronous flush, master
// crash); consumers that share the database can [Relay.Confirm] it, and
// reconcile resends what stays unconfirmed (reconcile.WithConfirmTimeout).
// Enqueue is unique per topic and key: a retried API call enqueues once.
//
// Each row statement is a single query with its values written in as hex
// literals (one round trip, no prepared statement). Values past 256 KiB in
// one statement (a large body) are the exception: they go as arguments of
// a prepared statement, as they are, so a row fits the server's
// max_allowed_packet whenever its values do (MariaDB's default 16 MiB,
// MySQL 8's 64 MiB). A statement larger than max_allowed_packet makes the
// server close the connection, and with it the caller's transaction.
//
// # Transactional messages
//
// [TxMessenger] is the alternative built on RocketMQ's half messages: the
// half message is stored first, the business transaction writes the row,
// and the message commits only if the transaction did. A lost outcome is
// settled by the broker's check-back from the table, decisively (see
// [TxMessenger]). It needs no reconcile sends, but transactional messages
// cannot be delayed and take a broker round trip before the transaction.
// It sends through producer.NewTransactional, so its messages obey the
// producer's rules and carry its credentials ([WithCredentials]).
//
// # Options
//
// [NewRelay] takes an [Option], [NewTxMessenger] a [TxOption]; [WithTable]
// and [WithLogger] fit both ([SharedOption]). An option that does not
// apply to a constructor does not compile.
package outbox
