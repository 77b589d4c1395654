package idempotency

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/token"
)

// KeyToken names one claim in a batch: a business key and the claim's
// fencing token.
type KeyToken struct {
	Key, Token string
}

// ClaimResult is one key's result in [BatchStore.ClaimBatch]: what
// [Store.Claim] would have returned for it.
type ClaimResult struct {
	Outcome  Outcome
	Attempts int
	// Err is this key's store error: its outcome is unknown (treat it as
	// a retry, never as done). Outcome and Attempts are then zero.
	Err error
}

// BatchStore is a [Store] that claims and completes many keys of one
// group in one round trip. [MySQLStore] and [RedisStore] implement it;
// [Guard.ClaimBatch] and [Guard.CompleteBatch] use it when the store has
// it and fall back to one call per key otherwise.
//
// Each result is the one the single-key method would have returned had
// the items been applied one after another in order: a key twice in one
// ClaimBatch is Acquired by its first item and Busy for its second; a key
// completed twice with the same token succeeds once, then ErrLostClaim.
// The fencing, lease, attempt-count and retention rules are [Store]'s.
// A failure can be partial (a Redis Cluster node down): every item
// carries its own error.
type BatchStore interface {
	Store
	// ClaimBatch claims each item's key with its token until lease ends;
	// it returns one result per item, in order.
	ClaimBatch(ctx context.Context, group string, items []KeyToken, lease time.Duration) []ClaimResult
	// CompleteBatch turns each item's claim into a done marker kept for
	// retain; it returns one error per item, in order: nil, ErrLostClaim
	// when the token no longer owns the key, or a store error.
	CompleteBatch(ctx context.Context, group string, items []KeyToken, retain time.Duration) []error
}

// UncountedClaimer is a store that can claim keys without counting the
// attempt, for [Guard.WithoutAttempts]. ClaimUncounted is
// [BatchStore.ClaimBatch] (one key or many) with every Attempts 0: the
// key's count is neither created nor raised, and a count left by earlier
// claims is kept as it is. [RedisStore] implements it: its count is a key
// of its own, one more write per claim.
type UncountedClaimer interface {
	ClaimUncounted(ctx context.Context, group string, items []KeyToken, lease time.Duration) []ClaimResult
}

// ClaimBatch claims keys together: on a [BatchStore] in one round trip,
// otherwise with one [Guard.Claim] per key, in order. It returns one claim
// and one error per key: claims[i] is nil exactly when errs[i] is not
// (ErrEmptyKey for an empty key, or a store error: the outcome is
// unknown, retry). Each claim has its own fencing token and lease
// deadline, counted from before the round trip, and is completed,
// released or forgotten on its own or with [Guard.CompleteBatch]. A key
// given twice is Busy the second time (the first holds it).
func (g *Guard) ClaimBatch(ctx context.Context, keys []string) (claims []*Claim, errs []error) {
	claims, errs = make([]*Claim, len(keys)), make([]error, len(keys))
	var claimBatch func(context.Context, string, []KeyToken, time.Duration) []ClaimResult
	if bs, ok := g.store.(BatchStore); ok {
		claimBatch = bs.ClaimBatch
	}
	if uc, ok := g.store.(UncountedClaimer); ok && g.uncounted {
		claimBatch = uc.ClaimUncounted
	}
	if claimBatch == nil || len(keys) == 1 {
		for i, k := range keys {
			claims[i], errs[i] = g.Claim(ctx, k)
		}
		return claims, errs
	}
	items := make([]KeyToken, 0, len(keys))
	at := make([]int, 0, len(keys)) // items[j] is keys[at[j]]
	for i, k := range keys {
		if k == "" {
			errs[i] = ErrEmptyKey
			continue
		}
		items = append(items, KeyToken{Key: k, Token: token.New()})
		at = append(at, i)
	}
	if len(items) == 0 {
		return claims, errs
	}
	deadline := time.Now().Add(g.lease)
	results := claimBatch(ctx, g.group, items, g.lease)
	if len(results) != len(items) {
		err := fmt.Errorf("idempotency: the store's batch claim gave %d results for %d keys", len(results), len(items))
		for _, i := range at {
			errs[i] = err
		}
		return claims, errs
	}
	all := make([]Claim, len(results))
	for j, r := range results {
		i := at[j]
		if r.Err != nil {
			errs[i] = fmt.Errorf("idempotency: claim %s: %w", quoted(items[j].Key), r.Err)
			continue
		}
		if g.uncounted {
			r.Attempts = 0
		}
		all[j] = Claim{Outcome: r.Outcome, Attempt: r.Attempts, key: items[j].Key, token: items[j].Token,
			deadline: deadline, guard: g}
		claims[i] = &all[j]
	}
	return claims, errs
}

// CompleteBatch completes claims together (each as [Claim.Complete]
// would): on a [BatchStore] in one round trip, otherwise one by one. It
// returns one error per claim, nil where the effect is recorded as done.
// Every claim must come from this guard.
func (g *Guard) CompleteBatch(ctx context.Context, claims []*Claim) []error {
	errs := make([]error, len(claims))
	if len(claims) == 0 {
		return errs
	}
	bs, ok := g.store.(BatchStore)
	if !ok || len(claims) == 1 {
		for i, c := range claims {
			errs[i] = c.Complete(ctx)
		}
		return errs
	}
	items := make([]KeyToken, len(claims))
	for i, c := range claims {
		items[i] = KeyToken{Key: c.key, Token: c.token}
	}
	results := bs.CompleteBatch(ctx, g.group, items, g.retention)
	if len(results) != len(items) {
		err := fmt.Errorf("idempotency: the store's CompleteBatch gave %d results for %d claims", len(results), len(items))
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	for i, err := range results {
		if err != nil {
			errs[i] = fmt.Errorf("idempotency: complete %s: %w", quoted(claims[i].key), err)
		}
	}
	return errs
}

// withoutToken runs do over the items whose token is not reserved (a
// value the store keeps for itself, which would match other claims'
// keys), in order, and gives the others refused(err) in their places.
func withoutToken[R any](items []KeyToken, reserved string, err error, refused func(error) R, do func([]KeyToken) []R) []R {
	if !slices.ContainsFunc(items, func(it KeyToken) bool { return it.Token == reserved }) {
		return do(items)
	}
	results := make([]R, len(items))
	var rest []KeyToken
	var at []int
	for i, it := range items {
		if it.Token == reserved {
			results[i] = refused(err)
			continue
		}
		rest, at = append(rest, it), append(at, i)
	}
	if len(rest) > 0 {
		for j, r := range do(rest) {
			results[at[j]] = r
		}
	}
	return results
}

func claimRefused(err error) ClaimResult { return ClaimResult{Err: err} }

func completionRefused(err error) error { return err }
