package outbox

import (
	"context"
	"database/sql"
	"time"
)

// rowStore is the seam between the relay's policy (dispatch.go: grouping,
// ordering, backoff, dead rows, resends) and where the rows live
// (mysqlStore). The policy decides; the store records each decision as one
// conditional change and reports whether it still held the row.
//
// Claims stamp rows with an owner and a lease, given to the store when it
// is made: a claimed row is due again, to any claimer, when its lease ends.
// Every change that names an owner applies only while the row still has
// that owner (and the status the change starts from), so a relay whose
// lease ran out cannot overwrite the claimer that took over.
//
// Methods return errors already wrapped with the operation and row id.
type rowStore interface {
	// enqueue inserts m as a Pending row through ex (the caller's
	// transaction, or a storeTx from begin). With an owner the row is
	// written claimed by it for the lease. A topic and key already present
	// return the existing row's id with created false. A sharding key is
	// locked until ex's transaction ends, so a key's rows get ids in the
	// order their transactions enqueued them.
	enqueue(ctx context.Context, ex Execer, m Message, owner string) (id int64, created bool, err error)
	// begin starts a business transaction for Transact.
	begin(ctx context.Context) (storeTx, error)
	// claimDue claims up to limit Pending rows that were due by asOf (the
	// zero time: now; oldest due first, skipping rows another claim is
	// taking) for owner and returns them in id order.
	claimDue(ctx context.Context, owner string, asOf time.Time, limit int) ([]*Row, error)
	// claimUnconfirmed claims up to limit Sent rows that were due by asOf
	// and were sent (plus their delay) more than timeout ago, and returns
	// them in id order.
	claimUnconfirmed(ctx context.Context, owner string, asOf time.Time, timeout time.Duration, limit int) ([]*Row, error)
	// predecessor reports what row's sharding key has before it: the state
	// of its oldest row with a smaller id not Sent (nor Confirmed) yet, and
	// how long until that row is due (0 when it is, or is Dead).
	predecessor(ctx context.Context, row *Row) (earlier, time.Duration, error)
	// markSent moves a Pending row owner holds to Sent, counting the
	// attempt; it reports whether owner still held it.
	markSent(ctx context.Context, id int64, owner, msgID string) (bool, error)
	// markSentBatch marks rows Sent (resend: counts another send of Sent
	// rows) and returns how many were still held by one of owners; on an
	// error, how many it marked before it. Each row is held by at most one
	// of owners.
	markSentBatch(ctx context.Context, owners []string, rows []sentRow, resend bool) (int64, error)
	// retryLater counts a failed attempt on a row of status owner holds,
	// records lastErr and makes it due after after; it reports whether
	// owner still held it.
	retryLater(ctx context.Context, id int64, status Status, owner, lastErr string, after time.Duration) (bool, error)
	// markDead moves a Pending row owner holds to Dead, counting the
	// attempt; it reports whether owner still held it.
	markDead(ctx context.Context, id int64, owner, lastErr string) (bool, error)
	// giveUp leaves a Sent row owner holds Sent and never due again,
	// counting a failed attempt when sent (a resend failed); it reports
	// whether owner still held it.
	giveUp(ctx context.Context, id int64, owner, lastErr string, sent bool) (bool, error)
	// release gives up owner's claim on rows, due again after after.
	release(ctx context.Context, ids []int64, owner string, after time.Duration) error
	// confirm moves the Pending or Sent row of topic and key to Confirmed
	// through ex, reporting whether one moved.
	confirm(ctx context.Context, ex Execer, topic, key string) (bool, error)
	// replay moves a Dead row to Pending, attempts reset, due now; it
	// reports whether the row was Dead.
	replay(ctx context.Context, id int64) (bool, error)
	// get returns one row, or an error matching ErrNotFound.
	get(ctx context.Context, id int64) (*Row, error)
	// list returns up to limit rows of status after afterID, in id order.
	list(ctx context.Context, status Status, afterID int64, limit int) ([]*Row, error)
	// find returns the rows of key, in every topic, in id order.
	find(ctx context.Context, key string) ([]*Row, error)
	// purge deletes up to limit rows of status not updated for retention.
	purge(ctx context.Context, status Status, retention time.Duration, limit int) (int64, error)
	// backlog counts Pending and Dead rows.
	backlog(ctx context.Context) (Backlog, error)
}

// storeTx is a business transaction begun by a rowStore: the statements
// [Tx] offers, and its end. *sqlx.Tx satisfies it.
type storeTx interface {
	Execer
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	GetContext(ctx context.Context, dest any, query string, args ...any) error
	SelectContext(ctx context.Context, dest any, query string, args ...any) error
	NamedExecContext(ctx context.Context, query string, arg any) (sql.Result, error)
	PrepareContext(ctx context.Context, query string) (*sql.Stmt, error)
	Commit() error
	Rollback() error
}

// sentRow is a row sent and waiting to be marked Sent.
type sentRow struct {
	id    int64
	msgID string
}

// earlier is what a row of a sharding key finds before it.
type earlier int

const (
	allSent   earlier = iota // no earlier row of the key is Pending or Dead
	inFlight                 // the oldest is Pending and claimed under a live lease: being sent
	claimable                // it is Pending and due: a claim under way may be taking it
	blocked                  // it is Dead, or Pending and not due (it failed and backs off)
)
