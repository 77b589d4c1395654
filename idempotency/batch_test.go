package idempotency_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/idempotency"
)

// want is one key's expected batch result.
type want struct {
	outcome idempotency.Outcome
	attempt int
	err     error
}

func claimBatch(t *testing.T, g *idempotency.Guard, keys []string, wants []want) []*idempotency.Claim {
	t.Helper()
	claims, errs := g.ClaimBatch(context.Background(), keys)
	if len(claims) != len(keys) || len(errs) != len(keys) {
		t.Fatalf("%d claims, %d errors for %d keys", len(claims), len(errs), len(keys))
	}
	for i, w := range wants {
		if w.err != nil || errs[i] != nil {
			if !errors.Is(errs[i], w.err) || claims[i] != nil {
				t.Fatalf("key %q: claim %v, error %v; want error %v", keys[i], claims[i], errs[i], w.err)
			}
			continue
		}
		c := claims[i]
		if c.Outcome != w.outcome || (w.outcome == idempotency.Acquired && c.Attempt != w.attempt) {
			t.Fatalf("key %q (item %d) = %v attempt %d, want %v attempt %d", keys[i], i, c.Outcome, c.Attempt, w.outcome, w.attempt)
		}
	}
	return claims
}

func completeBatch(t *testing.T, g *idempotency.Guard, claims []*idempotency.Claim, wants []error) {
	t.Helper()
	errs := g.CompleteBatch(context.Background(), claims)
	for i, w := range wants {
		if (w == nil) != (errs[i] == nil) || !errors.Is(errs[i], w) {
			t.Fatalf("complete item %d: %v, want %v", i, errs[i], w)
		}
	}
}

// TestStoreBatches runs the store cases of TestStores through
// Guard.ClaimBatch and Guard.CompleteBatch, on every backend, several
// outcomes in one batch: a batch result is the one single calls in order
// would give.
func TestStoreBatches(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			for _, counted := range []bool{true, false} {
				// Without attempts (the concurrent consumer's claims) every
				// outcome is the same; only the count is left out.
				att := func(n int) int {
					if counted {
						return n
					}
					return 0
				}
				t.Run(fmt.Sprint("mixed outcomes in one batch, counted ", counted), func(t *testing.T) {
					store := b.store(t)
					if _, ok := store.(idempotency.BatchStore); !ok {
						t.Fatalf("%T is not a BatchStore", store)
					}
					g := newGuard(t, store)
					if !counted {
						g = g.WithoutAttempts()
					}
					// A claim whose holder "crashed": its lease runs out below.
					stale := claim(t, g, "expired", idempotency.Acquired, att(1))
					released := claim(t, g, "released", idempotency.Acquired, att(1))
					if err := released.Release(ctx); err != nil {
						t.Fatal(err)
					}
					done := claim(t, g, "done", idempotency.Acquired, att(1))
					if err := done.Complete(ctx); err != nil {
						t.Fatal(err)
					}
					b.advance(t, lease+200*time.Millisecond)
					claim(t, g, "busy", idempotency.Acquired, att(1)) // a live claim of another consumer
					keys := []string{"new", "done", "busy", "expired", "dup", "released", "dup", "", "ключ 'x'"}
					claims := claimBatch(t, g, keys, []want{
						{outcome: idempotency.Acquired, attempt: att(1)},
						{outcome: idempotency.Done},
						{outcome: idempotency.Busy},
						{outcome: idempotency.Acquired, attempt: att(2)}, // taken over after the lease
						{outcome: idempotency.Acquired, attempt: att(1)},
						{outcome: idempotency.Acquired, attempt: att(2)},
						{outcome: idempotency.Busy}, // held by the first "dup" of this batch
						{err: idempotency.ErrEmptyKey},
						{outcome: idempotency.Acquired, attempt: att(1)},
					})
					if err := stale.Complete(ctx); !errors.Is(err, idempotency.ErrLostClaim) {
						t.Fatalf("stale complete: %v, want ErrLostClaim", err)
					}
					tokens := map[string]bool{}
					for _, c := range claims {
						if c != nil && c.Outcome == idempotency.Acquired {
							if len(c.Token()) != 32 || tokens[c.Token()] || c.Deadline().After(time.Now().Add(lease)) {
								t.Fatalf("claim token %q (seen %v), deadline %v", c.Token(), tokens[c.Token()], c.Deadline())
							}
							tokens[c.Token()] = true
						}
					}
					// The stale holder, a duplicate of one claim and a Busy
					// claim are lost; the others are done.
					completeBatch(t, g, []*idempotency.Claim{claims[0], stale, claims[3], claims[4], claims[4], claims[2], claims[5], claims[8]},
						[]error{nil, idempotency.ErrLostClaim, nil, nil, idempotency.ErrLostClaim, idempotency.ErrLostClaim, nil, nil})
					claimBatch(t, g, []string{"new", "expired", "dup", "released", "ключ 'x'", "busy"}, []want{
						{outcome: idempotency.Done}, {outcome: idempotency.Done}, {outcome: idempotency.Done},
						{outcome: idempotency.Done}, {outcome: idempotency.Done}, {outcome: idempotency.Busy}})
					completeBatch(t, g, claims[:1], []error{idempotency.ErrLostClaim}) // already done
				})
			}
			t.Run("keys of every byte, past the statement's inline budget", func(t *testing.T) {
				// MySQL writes the keys into the statements as hex
				// literals up to 512 KiB, and the rest as arguments: ten
				// 60 KiB keys take both paths in one statement.
				g := heldGuard(t, b.store(t))
				var all []byte
				for i := range 256 {
					all = append(all, byte(i))
				}
				var keys []string
				var acquired, done []want
				for i := range 10 {
					keys = append(keys, fmt.Sprint(i, string(all))+strings.Repeat(string(all), 60<<10/256))
					acquired = append(acquired, want{outcome: idempotency.Acquired, attempt: 1})
					done = append(done, want{outcome: idempotency.Done})
				}
				cs := claimBatch(t, g, keys, acquired)
				claim(t, g, keys[9], idempotency.Busy, 0)
				claim(t, g, keys[9][:len(keys[9])-1], idempotency.Acquired, 1) // a prefix is another key
				completeBatch(t, g, cs, make([]error, len(cs)))
				claimBatch(t, g, keys, done)
			})
			t.Run("a batch past one read chunk, a key twice across chunks", func(t *testing.T) {
				// The Redis scripts read their keys 256 at a time.
				g := newGuard(t, b.store(t))
				keys := make([]string, 600)
				wants := make([]want, len(keys))
				for i := range keys {
					keys[i], wants[i] = fmt.Sprint("k-", i), want{outcome: idempotency.Acquired, attempt: 1}
				}
				keys[300], wants[300] = keys[10], want{outcome: idempotency.Busy}
				claims := claimBatch(t, g, keys, wants)
				claims[300] = claims[10]
				errs := make([]error, len(claims))
				errs[300] = idempotency.ErrLostClaim // completed at item 10
				completeBatch(t, g, claims, errs)
				for i := range wants {
					wants[i] = want{outcome: idempotency.Done}
				}
				claimBatch(t, g, keys, wants)
			})
			t.Run("attempts count across batches; release and forget", func(t *testing.T) {
				g := newGuard(t, b.store(t))
				keys := []string{"a", "b"}
				cs := claimBatch(t, g, keys, []want{{outcome: idempotency.Acquired, attempt: 1}, {outcome: idempotency.Acquired, attempt: 1}})
				if err := cs[0].Release(ctx); err != nil {
					t.Fatal(err)
				}
				if err := cs[1].Forget(ctx); err != nil {
					t.Fatal(err)
				}
				cs = claimBatch(t, g, keys, []want{{outcome: idempotency.Acquired, attempt: 2}, {outcome: idempotency.Acquired, attempt: 1}})
				completeBatch(t, g, cs, []error{nil, nil})
				claimBatch(t, g, keys, []want{{outcome: idempotency.Done}, {outcome: idempotency.Done}})
			})
			t.Run("claims without attempts leave the count alone", func(t *testing.T) {
				store := b.store(t)
				g := heldGuard(t, store)
				u := g.WithoutAttempts()
				// A store that can leave the count out does; the others
				// count every claim, as their own claims do.
				_, leaves := store.(idempotency.UncountedClaimer)
				raised := func(n int) int {
					if leaves {
						return n
					}
					return n + 1
				}
				keys := []string{"a", "b"}
				for _, key := range keys {
					released := claim(t, g, key, idempotency.Acquired, 1)
					if err := released.Release(ctx); err != nil {
						t.Fatal(err)
					}
				}
				// One key alone and two in a batch: the paths differ.
				single := claim(t, u, "a", idempotency.Acquired, 0)
				cs := claimBatch(t, u, []string{"b", "c"}, []want{{outcome: idempotency.Acquired}, {outcome: idempotency.Acquired}})
				for _, c := range append(cs, single) {
					if err := c.Release(ctx); err != nil {
						t.Fatal(err)
					}
				}
				claim(t, g, "a", idempotency.Acquired, raised(2))
				cs = claimBatch(t, g, []string{"b", "c"}, []want{{outcome: idempotency.Acquired, attempt: raised(2)}, {outcome: idempotency.Acquired, attempt: raised(1)}})
				// Claims of either guard complete through the other.
				completeBatch(t, u, cs, []error{nil, nil})
				claimBatch(t, u, []string{"a", "b", "c"}, []want{{outcome: idempotency.Busy}, {outcome: idempotency.Done}, {outcome: idempotency.Done}})
			})
			t.Run("done marker past retention lets the key run again", func(t *testing.T) {
				g := newGuard(t, b.store(t), idempotency.WithRetention(time.Second))
				cs := claimBatch(t, g, []string{"k", "l"}, []want{{outcome: idempotency.Acquired, attempt: 1}, {outcome: idempotency.Acquired, attempt: 1}})
				completeBatch(t, g, cs, []error{nil, nil})
				b.advance(t, 1300*time.Millisecond)
				claimBatch(t, g, []string{"k", "l"}, []want{{outcome: idempotency.Acquired, attempt: 1}, {outcome: idempotency.Acquired, attempt: 1}})
			})
			t.Run("concurrent batches over shared keys apply each key once", func(t *testing.T) {
				g := heldGuard(t, b.store(t))
				var effects [12]atomic.Int32
				var wg sync.WaitGroup
				for w := range 6 {
					wg.Go(func() {
						left := map[int]bool{}
						for k := range effects {
							left[k] = true
						}
						for len(left) > 0 {
							var keys []string
							var idx []int
							for k := range effects { // each worker in its own order
								k = (k + 5*w) % len(effects)
								if left[k] {
									keys, idx = append(keys, fmt.Sprint("key-", k)), append(idx, k)
								}
							}
							claims, errs := g.ClaimBatch(ctx, keys)
							var won []*idempotency.Claim
							for i, c := range claims {
								switch {
								case errs[i] != nil:
									t.Error(errs[i])
									return
								case c.Outcome == idempotency.Acquired:
									effects[idx[i]].Add(1)
									won = append(won, c)
									delete(left, idx[i])
								case c.Outcome == idempotency.Done:
									delete(left, idx[i])
								}
							}
							for _, err := range g.CompleteBatch(ctx, won) {
								if err != nil {
									t.Error(err)
									return
								}
							}
							time.Sleep(time.Millisecond)
						}
					})
				}
				wg.Wait()
				for k := range effects {
					if n := effects[k].Load(); n != 1 {
						t.Errorf("key-%d applied %d times", k, n)
					}
				}
			})
		})
	}
}

// plainStore hides a store's batch methods.
type plainStore struct{ idempotency.Store }

// TestBatchWithoutBatchStoreClaimsOneByOne: on a store without batch
// methods the guard's batch calls give the same results, key by key.
func TestBatchWithoutBatchStoreClaimsOneByOne(t *testing.T) {
	t.Parallel()
	b := backends()[len(backends())-1] // miniredis
	if g := newGuard(t, b.store(t)); !g.Batched() {
		t.Fatal("a guard on a BatchStore says it is not batched")
	}
	g := newGuard(t, plainStore{b.store(t)})
	if g.Batched() {
		t.Fatal("a guard on a store without batch methods says it is batched")
	}
	cs := claimBatch(t, g, []string{"a", "a", ""}, []want{{outcome: idempotency.Acquired, attempt: 1}, {outcome: idempotency.Busy},
		{err: idempotency.ErrEmptyKey}})
	completeBatch(t, g, cs[:1], []error{nil})
	completeBatch(t, g, []*idempotency.Claim{cs[0], cs[0]}, []error{idempotency.ErrLostClaim, idempotency.ErrLostClaim})
	claimBatch(t, g, []string{"a"}, []want{{outcome: idempotency.Done}})
}

// miscountingStore's batch methods drop or add a result: a store that
// breaks the one-result-per-item contract.
type miscountingStore struct {
	idempotency.BatchStore
	extra int // results added (negative: dropped)
}

func (s miscountingStore) ClaimBatch(ctx context.Context, group string, items []idempotency.KeyToken, lease time.Duration) []idempotency.ClaimResult {
	r := s.BatchStore.ClaimBatch(ctx, group, items, lease)
	if s.extra < 0 {
		return r[:len(r)+s.extra]
	}
	return append(r, make([]idempotency.ClaimResult, s.extra)...)
}

func (s miscountingStore) CompleteBatch(ctx context.Context, group string, items []idempotency.KeyToken, retain time.Duration) []error {
	r := s.BatchStore.CompleteBatch(ctx, group, items, retain)
	if s.extra < 0 {
		return r[:len(r)+s.extra]
	}
	return append(r, make([]error, s.extra)...)
}

// TestBatchStoreWithTheWrongCountFailsEveryKey: a batch store that gives
// fewer or more results than items fails every key of the call with an
// error, neither a panic nor a claim or completion nobody made.
func TestBatchStoreWithTheWrongCountFailsEveryKey(t *testing.T) {
	t.Parallel()
	b := backends()[len(backends())-1] // miniredis
	for _, extra := range []int{-1, 1} {
		store := b.store(t).(idempotency.BatchStore)
		g := newGuard(t, miscountingStore{store, extra})
		claims, errs := g.ClaimBatch(context.Background(), []string{"a", "b"})
		for i := range errs {
			if errs[i] == nil || claims[i] != nil {
				t.Errorf("extra %d: key %d claimed (%v, %v); want an error", extra, i, claims[i], errs[i])
			}
		}
		good := newGuard(t, store)
		held, errs := good.ClaimBatch(context.Background(), []string{"c", "d"})
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		for i, err := range g.CompleteBatch(context.Background(), held) {
			if err == nil {
				t.Errorf("extra %d: claim %d reported completed", extra, i)
			}
		}
	}
}
