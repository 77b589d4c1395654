// Package deadletter is where messages go that no retry can deliver, and
// where a human takes them back.
//
// A [Table] (mq_dead_letter, created by the migrations package) is the
// consumer's parker (consumer.WithParker): the consumer records a message
// there after its attempt cap or a permanent error, then acknowledges it.
// Parking is idempotent per group and message id, so a delivery parked
// twice (a crash between parking and the ack) is one entry; the entry
// remembers whether its parker reported it (logged and alerted), and a
// later park of a message nobody reported reports it. The table
// lists and shows entries, replays one (a new send to its original topic
// with its keys, tag, properties and sharding key; the consumer's guard
// forgot the key when it was parked, so the replay runs once) and discards
// one; each is one conditional UPDATE, so two operators cannot both
// replay an entry. `reliablemq dead` is the same from the command line.
//
// A replay is sent before the entry is marked replayed: if marking fails
// the message may be sent twice (the guard absorbs it), never marked
// without being sent. Under the orderly consumer's consumer.ParkKey policy
// a replay waits only for entries of its key parked before it, and a
// replay that fails again keeps the original's place.
//
// A [Drain] empties a group's broker dead-letter topic (%DLQ%<group>) into
// the table, so what the official client or another consumer gave up on
// is seen too.
package deadletter
