package idempotency

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/token"
)

// Sentinel errors.
var (
	// ErrLostClaim is returned when a claim is completed or released after
	// it stopped owning the key: its lease expired and another consumer
	// took the key over, or it was already completed or released.
	ErrLostClaim = errors.New("idempotency: claim lost")
	// ErrEmptyKey is returned for an empty business key.
	ErrEmptyKey = errors.New("idempotency: empty key")
	// ErrKeyTooLong is returned by the MySQL stores for a key longer than
	// their table's biz_key column holds (65,535 bytes).
	ErrKeyTooLong = errors.New("idempotency: key too long")
)

// quoted is key quoted for an error message, cut after its first 64 bytes.
func quoted(key string) string {
	if len(key) <= 64 {
		return strconv.Quote(key)
	}
	return fmt.Sprintf("%q... (%d bytes)", key[:64], len(key))
}

// Outcome is the result of claiming a key.
type Outcome int

const (
	// Acquired: this caller owns the key until its lease ends, and must run
	// the effect, then Complete (or Release on failure).
	Acquired Outcome = iota + 1
	// Done: the effect was applied already, within the retention window.
	// Acknowledge the message without running it.
	Done
	// Busy: another consumer holds a live lease on the key. Retry later;
	// if that consumer crashed, its lease expires and a later attempt runs.
	Busy
)

func (o Outcome) String() string {
	switch o {
	case Acquired:
		return "acquired"
	case Done:
		return "done"
	case Busy:
		return "busy"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// Store keeps claims and done markers. Implementations must make each
// method a single atomic step with respect to the others, for any number of
// processes sharing the store: [MySQLStore] and [RedisStore]. A token is
// unique per claim; a store refuses the values it keeps for itself (the
// MySQL store an empty token, a released claim's; the Redis store "done",
// its done marker), which would match other claims' keys.
type Store interface {
	// Claim takes key for group with the fencing token until lease ends,
	// when the key is free: never claimed, released, its lease expired,
	// or its done marker older than its retention. It returns the number
	// of claims made since the key was last completed, so the count
	// survives restarts; the count is meaningful only with Acquired.
	Claim(ctx context.Context, group, key, token string, lease time.Duration) (Outcome, int, error)
	// Complete turns token's claim into a done marker kept for retain. It
	// returns ErrLostClaim when token no longer owns the key.
	Complete(ctx context.Context, group, key, token string, retain time.Duration) error
	// Release frees token's claim so the next delivery can take it at
	// once. The attempt count is kept, unless forget is set: then the key
	// is removed entirely. ErrLostClaim when token no longer owns the key.
	Release(ctx context.Context, group, key, token string, forget bool) error
}

// Guard makes a consumer group's side effects happen once per business key
// while the key's done marker is retained. It is safe for concurrent use.
type Guard struct {
	group     string
	store     Store
	lease     time.Duration
	retention time.Duration
	uncounted bool // see WithoutAttempts
}

// NewGuard returns a guard for consumer group over store.
func NewGuard(group string, store Store, opts ...GuardOption) (*Guard, error) {
	c := defaults()
	for _, o := range opts {
		o.applyGuard(&c)
	}
	err := c.check(true)
	if group == "" {
		err = errors.Join(err, errors.New("idempotency: empty group"))
	}
	if store == nil {
		err = errors.Join(err, errors.New("idempotency: nil store"))
	}
	if _, ok := store.(*MySQLStore); ok {
		err = errors.Join(err, checkGroup(group))
	}
	if err != nil {
		return nil, err
	}
	return &Guard{group: group, store: store, lease: c.lease, retention: c.retention}, nil
}

// Lease returns the claim lease.
func (g *Guard) Lease() time.Duration { return g.lease }

// Retention returns how long done markers are kept.
func (g *Guard) Retention() time.Duration { return g.retention }

// WithoutAttempts returns a guard on g's store, group, lease and retention
// whose claims do not count attempts: their Attempt is 0. It is for
// callers that take the attempt from elsewhere (the consumer's concurrent
// mode takes it from the broker's redelivery count). On a store that
// implements [UncountedClaimer] ([RedisStore]) such a claim writes one key
// instead of two; other stores count it anyway, as their own claims do.
// Its claims are completed, released and forgotten as g's are.
func (g *Guard) WithoutAttempts() *Guard {
	u := *g
	u.uncounted = true
	return &u
}

// CountsAttempts reports whether the guard's claims count attempts: false
// for a guard made with [Guard.WithoutAttempts].
func (g *Guard) CountsAttempts() bool { return !g.uncounted }

// Batched reports whether the guard's store is a [BatchStore]: only then
// do [Guard.ClaimBatch] and [Guard.CompleteBatch] take one round trip for
// many keys (otherwise one per key, in order).
func (g *Guard) Batched() bool {
	_, ok := g.store.(BatchStore)
	return ok
}

// Claim is one attempt at a key.
type Claim struct {
	Outcome Outcome
	// Attempt counts the claims of the key since it was last completed,
	// this one included (1 on the first); set when Outcome is Acquired,
	// except by a guard made with [Guard.WithoutAttempts] (0).
	Attempt  int
	key      string
	token    string
	deadline time.Time
	guard    *Guard
}

// Token is the claim's fencing token: the store accepts Complete, Release
// and Forget only from the claim holding it. Effects outside the store can
// carry it the same way (a version column, a conditional write) to refuse
// a claim that lost its lease.
func (c *Claim) Token() string { return c.token }

// Deadline is when the lease ends at the earliest, counted from before the
// claim was asked for. After it another delivery may take the key over, so
// the effect must be done (and Complete called) before it; [Guard.Do] and
// the consumer bound the effect's ctx by it.
func (c *Claim) Deadline() time.Time { return c.deadline }

// Claim tries to take key. A store error means the outcome is unknown:
// treat it as a retry, never as done.
func (g *Guard) Claim(ctx context.Context, key string) (*Claim, error) {
	if key == "" {
		return nil, ErrEmptyKey
	}
	token := token.New()
	deadline := time.Now().Add(g.lease)
	var (
		o   Outcome
		n   int
		err error
	)
	if uc, ok := g.store.(UncountedClaimer); ok && g.uncounted {
		r := uc.ClaimUncounted(ctx, g.group, []KeyToken{{Key: key, Token: token}}, g.lease)
		if len(r) != 1 {
			r = []ClaimResult{{Err: fmt.Errorf("the store's ClaimUncounted gave %d results for 1 key", len(r))}}
		}
		o, err = r[0].Outcome, r[0].Err
	} else {
		o, n, err = g.store.Claim(ctx, g.group, key, token, g.lease)
	}
	if err != nil {
		return nil, fmt.Errorf("idempotency: claim %s: %w", quoted(key), err)
	}
	if g.uncounted {
		n = 0
	}
	return &Claim{Outcome: o, Attempt: n, key: key, token: token, deadline: deadline, guard: g}, nil
}

// Complete records the effect as applied, suppressing duplicates for the
// retention window.
func (c *Claim) Complete(ctx context.Context) error {
	if err := c.guard.store.Complete(ctx, c.guard.group, c.key, c.token, c.guard.retention); err != nil {
		return fmt.Errorf("idempotency: complete %s: %w", quoted(c.key), err)
	}
	return nil
}

// Release gives the key up after a failed attempt so the redelivery can
// run at once; the attempt count is kept.
func (c *Claim) Release(ctx context.Context) error { return c.release(ctx, false) }

// Forget removes the key and its attempt count, as if it had never been
// claimed: for a message parked for manual handling, so that its replay runs.
func (c *Claim) Forget(ctx context.Context) error { return c.release(ctx, true) }

func (c *Claim) release(ctx context.Context, forget bool) error {
	if err := c.guard.store.Release(ctx, c.guard.group, c.key, c.token, forget); err != nil {
		return fmt.Errorf("idempotency: release %s: %w", quoted(c.key), err)
	}
	return nil
}

// Do runs fn once per key: it claims key, runs fn when acquired, completes
// on success and releases on error. It returns the claim outcome; with
// Done or Busy fn did not run. fn's ctx ends with the lease
// ([Claim.Deadline]). fn's error is returned as is. A failure to
// record completion after fn succeeded is returned too: the effect is
// applied, and a redelivery after the lease may apply it again unless fn
// is itself idempotent.
func (g *Guard) Do(ctx context.Context, key string, fn func(context.Context) error) (Outcome, error) {
	c, err := g.Claim(ctx, key)
	if err != nil {
		return 0, err
	}
	if c.Outcome != Acquired {
		return c.Outcome, nil
	}
	// fn runs within the lease: past it another delivery may run it too.
	fctx, cancel := context.WithDeadline(ctx, c.Deadline())
	err = fn(fctx)
	cancel()
	if err != nil {
		if rerr := c.Release(ctx); rerr != nil {
			return Acquired, errors.Join(err, rerr)
		}
		return Acquired, err
	}
	return Acquired, c.Complete(ctx)
}
