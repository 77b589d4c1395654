// Package reconcile is the scheduled job behind the outbox: it sends what
// the outbox table still holds Pending, so nothing committed is lost on
// the way to the broker.
//
// [Job.RunOnce] claims due rows in batches (outbox.Relay.DispatchDue),
// sends them, reschedules failures with exponential backoff and jitter,
// makes rows Dead after the relay's attempt cap (alerting once), resends
// Sent rows no consumer confirmed when [WithConfirmTimeout] is set, purges
// old final rows when [WithRetention] is set, and returns a [Report] with
// the backlog (pending count, oldest pending age, dead rows). [Job.Run]
// does that on an interval or a cron-like [Schedule] until its ctx ends.
//
// Run as many instances as you like, in as many processes: claims use
// SELECT ... FOR UPDATE SKIP LOCKED and a lease, so no row is sent by two
// instances at once, and a crashed instance's rows come due again when its
// lease ends. One run sends every row due at its start, a sharding key's
// backlog in order, except rows behind an earlier row of their key that
// failed (also when instances' claims split a key's backlog: a row waits
// for the earlier row another instance is sending). `reliablemq reconcile`
// runs the job from the command line.
package reconcile
