package idempotency_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

// reservedBatchStore is what these tests ask of a store: its batch calls
// and, where it has it, the uncounted claim.
type reservedBatchStore interface {
	idempotency.Store
	idempotency.BatchStore
}

// reservedItems makes n items over keys k0..: every fifth item's token is
// reserved; item i+step repeats item i's key (with a fresh token) for
// every i < reps, so that a key refused early is claimed later and a key
// claimed early is Busy later, across MySQL's 1000-item rounds when n is
// large.
func reservedItems(n, reps, step int, reserved string) []idempotency.KeyToken {
	items := make([]idempotency.KeyToken, n)
	for i := range items {
		items[i] = idempotency.KeyToken{Key: fmt.Sprint("k", i), Token: fmt.Sprint("t", i)}
		if i%5 == 0 {
			items[i].Token = reserved
		}
	}
	for i := 0; i < reps && i+step < n; i++ {
		items[i+step].Key = items[i].Key
	}
	return items
}

// checkReservedBatch runs a batch claim, a batch completion and a second
// claim over items, and checks every result in its place: a reserved
// token is refused (not ErrLostClaim, not an outcome), an item whose key
// an earlier live item holds is Busy (and its completion lost), every
// other live item is Acquired at attempt 1 (0 uncounted) and completes,
// and a key whose only items were refused stays free.
func checkReservedBatch(t *testing.T, s reservedBatchStore, items []idempotency.KeyToken, reserved string,
	claimBatch func(context.Context, string, []idempotency.KeyToken, time.Duration) []idempotency.ClaimResult, attempt int) {
	t.Helper()
	ctx := context.Background()
	group := testenv.Name(t, "g")
	refused := func(err error) bool { return err != nil && !errors.Is(err, idempotency.ErrLostClaim) }
	holder := map[string]int{} // key -> index of the live item that acquired it
	rs := claimBatch(ctx, group, items, time.Minute)
	if len(rs) != len(items) {
		t.Fatalf("ClaimBatch of %d items gave %d results", len(items), len(rs))
	}
	bad := 0
	for i, r := range rs {
		_, held := holder[items[i].Key]
		var ok bool
		switch {
		case items[i].Token == reserved:
			ok = refused(r.Err)
		case held:
			ok = r.Err == nil && r.Outcome == idempotency.Busy
		default:
			ok = r.Err == nil && r.Outcome == idempotency.Acquired && r.Attempts == attempt
			holder[items[i].Key] = i
		}
		if !ok && bad < 5 {
			bad++
			t.Errorf("claim item %d %+v: %+v (err %v)", i, items[i], r, r.Err)
		}
	}
	errs := s.CompleteBatch(ctx, group, items, time.Minute)
	if len(errs) != len(items) {
		t.Fatalf("CompleteBatch of %d items gave %d results", len(items), len(errs))
	}
	for i, err := range errs {
		var ok bool
		switch h, held := holder[items[i].Key]; {
		case items[i].Token == reserved:
			ok = refused(err)
		case held && h == i:
			ok = err == nil
		default:
			ok = errors.Is(err, idempotency.ErrLostClaim)
		}
		if !ok && bad < 10 {
			bad++
			t.Errorf("complete item %d %+v: %v", i, items[i], err)
		}
	}
	// Every key now: Done where a live item acquired it, free (Acquired,
	// first attempt) where only refused items named it.
	seen := map[string]bool{}
	var again []idempotency.KeyToken
	for _, it := range items {
		if !seen[it.Key] {
			seen[it.Key] = true
			again = append(again, idempotency.KeyToken{Key: it.Key, Token: "again-" + it.Key})
		}
	}
	rs = claimBatch(ctx, group, again, time.Minute)
	for i, r := range rs {
		want := idempotency.Done
		if _, held := holder[again[i].Key]; !held {
			want = idempotency.Acquired
		}
		if r.Err != nil || r.Outcome != want || (want == idempotency.Acquired && r.Attempts != attempt) {
			if bad < 15 {
				bad++
				t.Errorf("second claim of %q: %+v (err %v), want %v", again[i].Key, r, r.Err, want)
			}
		}
	}
}

// TestReservedTokensInBatchesMySQL: the MySQL store's batches with empty
// tokens scattered through them, past its 1000-item rounds, keys repeated
// across a round's edge; an empty batch; a batch of empty tokens only.
func TestReservedTokensInBatchesMySQL(t *testing.T) {
	t.Parallel()
	s, err := idempotency.NewMySQLStore(testenv.MySQL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Run("2600 items", func(t *testing.T) {
		checkReservedBatch(t, s, reservedItems(2600, 300, 1100, ""), "", s.ClaimBatch, 1)
	})
	t.Run("small", func(t *testing.T) {
		checkReservedBatch(t, s, reservedItems(12, 4, 3, ""), "", s.ClaimBatch, 1)
	})
	t.Run("empty", func(t *testing.T) {
		ctx := context.Background()
		if rs := s.ClaimBatch(ctx, "g", nil, time.Minute); len(rs) != 0 {
			t.Errorf("ClaimBatch of nothing: %v", rs)
		}
		if errs := s.CompleteBatch(ctx, "g", nil, time.Minute); len(errs) != 0 {
			t.Errorf("CompleteBatch of nothing: %v", errs)
		}
	})
	t.Run("only reserved", func(t *testing.T) {
		ctx := context.Background()
		items := make([]idempotency.KeyToken, 1500)
		for i := range items {
			items[i].Key = fmt.Sprint("r", i%700)
		}
		group := testenv.Name(t, "g")
		for i, r := range s.ClaimBatch(ctx, group, items, time.Minute) {
			if r.Err == nil {
				t.Fatalf("item %d of empty tokens: %+v, want refused", i, r)
			}
		}
		for i, err := range s.CompleteBatch(ctx, group, items, time.Minute) {
			if err == nil || errors.Is(err, idempotency.ErrLostClaim) {
				t.Fatalf("completion %d of empty tokens: %v, want refused", i, err)
			}
		}
		if o, n, err := s.Claim(ctx, group, "r1", "t", time.Minute); err != nil || o != idempotency.Acquired || n != 1 {
			t.Errorf("r1 after refused batches: %v %d %v, want Acquired at attempt 1", o, n, err)
		}
	})
}

// TestReservedTokensInBatchesRedis: the same over every Redis backend
// (a Cluster's per-key groups included), counted and uncounted, "done"
// being the reserved token.
func TestReservedTokensInBatchesRedis(t *testing.T) {
	t.Parallel()
	for _, b := range redisBackends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			rdb := b.rdb(t)
			s, _ := prefixedStore(t, rdb, "rt")
			n := 400
			if b.name == "miniredis" {
				n = 60
			}
			t.Run("counted", func(t *testing.T) {
				checkReservedBatch(t, s, reservedItems(n, n/4, n/2, "done"), "done", s.ClaimBatch, 1)
			})
			t.Run("uncounted", func(t *testing.T) {
				checkReservedBatch(t, s, reservedItems(n, n/4, n/2, "done"), "done", s.ClaimUncounted, 0)
			})
			t.Run("empty", func(t *testing.T) {
				ctx := context.Background()
				if rs := s.ClaimBatch(ctx, "g", nil, time.Minute); len(rs) != 0 {
					t.Errorf("ClaimBatch of nothing: %v", rs)
				}
				if rs := s.ClaimUncounted(ctx, "g", []idempotency.KeyToken{}, time.Minute); len(rs) != 0 {
					t.Errorf("ClaimUncounted of nothing: %v", rs)
				}
				if errs := s.CompleteBatch(ctx, "g", nil, time.Minute); len(errs) != 0 {
					t.Errorf("CompleteBatch of nothing: %v", errs)
				}
			})
		})
	}
}

// TestGuardBatchesAreNeverRefused: the guard's own tokens are never a
// store's reserved value: a guard's batch claim and completion of 1500
// keys (MySQL rounds) and of a Redis Cluster's keys succeed item by item.
func TestGuardBatchesAreNeverRefused(t *testing.T) {
	t.Parallel()
	ms, err := idempotency.NewMySQLStore(testenv.MySQL(t))
	if err != nil {
		t.Fatal(err)
	}
	stores := map[string]idempotency.Store{"mysql": ms}
	for _, b := range redisBackends()[:2] {
		rs, _ := prefixedStore(t, b.rdb(t), "gb")
		stores[b.name] = rs
	}
	for name, s := range stores {
		t.Run(name, func(t *testing.T) {
			g, err := idempotency.NewGuard(testenv.Name(t, "G"), s, idempotency.WithLease(time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			keys := make([]string, 1500)
			for i := range keys {
				keys[i] = fmt.Sprint("key-", i)
			}
			claims, errs := g.ClaimBatch(context.Background(), keys)
			for i, err := range errs {
				if err != nil || claims[i].Outcome != idempotency.Acquired {
					t.Fatalf("claim %d: %v", i, err)
				}
			}
			for i, err := range g.CompleteBatch(context.Background(), claims) {
				if err != nil {
					t.Fatalf("complete %d: %v", i, err)
				}
			}
		})
	}
}
