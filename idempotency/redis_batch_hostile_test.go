package idempotency_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

// redisBackends are the Redis flavours a batch runs on: a single Redis
// (one script for the whole batch, keys read in chunks), a Cluster (one
// script per business key) and miniredis.
func redisBackends() []struct {
	name string
	rdb  func(t *testing.T) redis.UniversalClient
} {
	return []struct {
		name string
		rdb  func(t *testing.T) redis.UniversalClient
	}{
		{"redis", func(t *testing.T) redis.UniversalClient { return testenv.Redis(t) }},
		{"redis-cluster", func(t *testing.T) redis.UniversalClient {
			rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: testenv.RedisCluster(t)})
			t.Cleanup(func() { rdb.Close() })
			return rdb
		}},
		{"miniredis", func(t *testing.T) redis.UniversalClient {
			rdb := redis.NewClient(&redis.Options{Addr: miniredis.RunT(t).Addr()})
			t.Cleanup(func() { rdb.Close() })
			return rdb
		}},
	}
}

// claimKeyName is the claim key of group's key under prefix (the layout
// TestRedisKeyNamesArePinned pins); ":n" instead of ":c" is its counter.
func claimKeyName(prefix, group, key string) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "%d:%s:%s", len(group), group, key))
	return prefix + "{" + hex.EncodeToString(sum[:16]) + "}:c"
}

// storeResult is one item's result in a comparable form.
type storeResult struct {
	outcome  idempotency.Outcome
	attempts int
	err      string
}

func errClass(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, idempotency.ErrLostClaim):
		return "lost"
	}
	return "error: " + err.Error()
}

// TestRedisBatchMatchesOneByOneRandomized: random sequences of ClaimBatch,
// CompleteBatch, Release and Forget over a few keys, with batches of up
// to 600 items (a key many times, within a read chunk and across its
// edges; live, stale, foreign tokens; old-layout done markers), give the
// same results on one store as the single-key methods applied item by
// item, in order, on another, and leave the same claim and counter values
// behind.
func TestRedisBatchMatchesOneByOneRandomized(t *testing.T) {
	t.Parallel()
	for _, b := range redisBackends() {
		for _, group := range []string{"plain", "with:colon", "with{brace}"} {
			t.Run(b.name+"/"+group, func(t *testing.T) {
				t.Parallel()
				rdb := b.rdb(t)
				seeds := []uint64{1, 2}
				if b.name == "miniredis" {
					seeds = seeds[:1] // its Lua is slower
				}
				for _, seed := range seeds {
					matchOneByOne(t, rdb, group, seed)
				}
			})
		}
	}
}

func matchOneByOne(t *testing.T, rdb redis.UniversalClient, group string, seed uint64) {
	ctx := context.Background()
	const lease, retain = time.Minute, time.Minute
	rng := rand.New(rand.NewPCG(seed, 99))
	batch, batchPrefix := prefixedStore(t, rdb, "B")
	single, singlePrefix := prefixedStore(t, rdb, "S")
	prefixes := [2]string{batchPrefix, singlePrefix}
	keys := []string{"a", "b", "c", "a:b", "{a}", "ünï", "\x00\xff", " a", "x}"}
	// tokens[k] are the tokens ever used for key k: live, stale or never
	// granted.
	tokens := map[string][]string{}
	next := 0
	fresh := func() string { next++; return fmt.Sprint("t", seed, "-", next) }
	pickToken := func(k string) string {
		switch ts := tokens[k]; {
		case rng.IntN(10) == 0:
			return "done" // the done marker's value
		case len(ts) > 0 && rng.IntN(4) > 0:
			return ts[rng.IntN(len(ts))]
		}
		return fresh()
	}
	size := func() int {
		switch rng.IntN(4) {
		case 0:
			return []int{0, 1, 2, 255, 256, 257, 511, 512, 513}[rng.IntN(9)]
		case 1:
			return 250 + rng.IntN(20) // around the first chunk's edge
		}
		return rng.IntN(12)
	}
	pickItems := func(claim bool) []idempotency.KeyToken {
		n := size()
		items := make([]idempotency.KeyToken, n)
		few := keys
		if rng.IntN(3) == 0 {
			few = keys[:1+rng.IntN(2)] // a key many times
		}
		for i := range items {
			k := few[rng.IntN(len(few))]
			tok := fresh()
			if !claim {
				tok = pickToken(k)
			}
			items[i] = idempotency.KeyToken{Key: k, Token: tok}
		}
		return items
	}
	for step := range 40 {
		var got [2][]storeResult
		var what string
		switch op := rng.IntN(10); {
		case op < 4:
			items := pickItems(true)
			what = fmt.Sprintf("ClaimBatch of %d", len(items))
			for _, r := range batch.ClaimBatch(ctx, group, items, lease) {
				got[0] = append(got[0], storeResult{r.Outcome, r.Attempts, errClass(r.Err)})
			}
			for _, it := range items {
				o, n, err := single.Claim(ctx, group, it.Key, it.Token, lease)
				got[1] = append(got[1], storeResult{o, n, errClass(err)})
				tokens[it.Key] = append(tokens[it.Key], it.Token)
			}
		case op < 8:
			items := pickItems(false)
			what = fmt.Sprintf("CompleteBatch of %d", len(items))
			for _, err := range batch.CompleteBatch(ctx, group, items, retain) {
				got[0] = append(got[0], storeResult{err: errClass(err)})
			}
			for _, it := range items {
				got[1] = append(got[1], storeResult{err: errClass(single.Complete(ctx, group, it.Key, it.Token, retain))})
			}
		case op < 9:
			k := keys[rng.IntN(len(keys))]
			tok, forget := pickToken(k), rng.IntN(2) == 0
			what = fmt.Sprintf("Release %q forget %v", k, forget)
			for i, s := range [2]*idempotency.RedisStore{batch, single} {
				got[i] = []storeResult{{err: errClass(s.Release(ctx, group, k, tok, forget))}}
			}
		default:
			// An old-layout done marker, or something else at its name.
			k := keys[rng.IntN(len(keys))]
			kind := rng.IntN(3)
			what = fmt.Sprintf("old-layout name for %q, kind %d", k, kind)
			for _, p := range prefixes {
				name := p + group + ":" + k
				var err error
				switch kind {
				case 0:
					err = rdb.Set(ctx, name, "done", time.Minute).Err()
				case 1:
					err = rdb.Set(ctx, name, "done ", time.Minute).Err()
				default:
					err = rdb.Del(ctx, name).Err()
					if err == nil {
						err = rdb.RPush(ctx, name, "done").Err() // not a string
					}
				}
				if err != nil {
					t.Fatal(err)
				}
			}
		}
		if len(got[0]) != len(got[1]) {
			t.Fatalf("seed %d step %d, %s: %d results in a batch, %d one by one", seed, step, what, len(got[0]), len(got[1]))
		}
		for i := range got[0] {
			if got[0][i] != got[1][i] {
				t.Fatalf("seed %d step %d, %s: item %d: batch %+v, one by one %+v", seed, step, what, i, got[0][i], got[1][i])
			}
		}
		for _, k := range keys {
			for _, suffix := range []string{":c", ":n"} {
				var vals [2]string
				for i, p := range prefixes {
					name := strings.TrimSuffix(claimKeyName(p, group, k), ":c") + suffix
					v, err := rdb.Get(ctx, name).Result()
					if err != nil && err != redis.Nil {
						t.Fatal(err)
					}
					vals[i] = v
				}
				if vals[0] != vals[1] {
					t.Fatalf("seed %d step %d, %s: key %q%s holds %q after batches, %q one by one", seed, step, what, k, suffix, vals[0], vals[1])
				}
			}
		}
	}
}

// TestRedisBatchOfManyKeys: one ClaimBatch and one CompleteBatch of
// 30,000 keys (10,000 on miniredis; three script keys each with the old
// layout's, far more than one read chunk or Lua's stack holds), a key
// twice at far ends and old-layout markers at chunk edges, on a single
// Redis and on miniredis.
func TestRedisBatchOfManyKeys(t *testing.T) {
	t.Parallel()
	for _, b := range redisBackends() {
		if b.name == "redis-cluster" {
			continue // one script per business key: no chunks
		}
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			rdb := b.rdb(t)
			s, prefix := prefixedStore(t, rdb, "idem")
			n, group := 30000, "many"
			if b.name == "miniredis" {
				n = 10000 // its Lua is slower
			}
			old := map[int]bool{255: true, 256: true, 8191: true, 8192: true, n - 1: true}
			items := make([]idempotency.KeyToken, n)
			for i := range items {
				items[i] = idempotency.KeyToken{Key: fmt.Sprint("k", i), Token: fmt.Sprint("t", i)}
				if old[i] {
					if err := rdb.Set(ctx, prefix+group+":"+items[i].Key, "done", time.Minute).Err(); err != nil {
						t.Fatal(err)
					}
				}
			}
			items[n-2].Key = items[1].Key // twice: Busy the second time
			for i, r := range s.ClaimBatch(ctx, group, items, time.Minute) {
				want := idempotency.ClaimResult{Outcome: idempotency.Acquired, Attempts: 1}
				switch {
				case old[i]:
					want = idempotency.ClaimResult{Outcome: idempotency.Done}
				case i == n-2:
					want = idempotency.ClaimResult{Outcome: idempotency.Busy}
				}
				if r != want {
					t.Fatalf("claim item %d: %+v, want %+v", i, r, want)
				}
			}
			items[n-2].Token = items[1].Token // completed at item 1 already
			for i, err := range s.CompleteBatch(ctx, group, items, time.Minute) {
				lost := old[i] || i == n-2
				if lost != errors.Is(err, idempotency.ErrLostClaim) || (!lost && err != nil) {
					t.Fatalf("complete item %d: %v, lost %v", i, err, lost)
				}
			}
			for i, r := range s.ClaimBatch(ctx, group, items, time.Minute) {
				if r != (idempotency.ClaimResult{Outcome: idempotency.Done}) {
					t.Fatalf("claim item %d after completing: %+v", i, r)
				}
			}
		})
	}
}

// TestRedisBatchAfterScriptFlush: with the script cache flushed before
// every call (a restart, a failover to a replica that never saw the
// scripts), batches of several read chunks still run and give the same
// results.
func TestRedisBatchAfterScriptFlush(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	mini := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mini.Addr()})
	t.Cleanup(func() { rdb.Close() })
	s, err := idempotency.NewRedisStore(rdb)
	if err != nil {
		t.Fatal(err)
	}
	flush := func() {
		t.Helper()
		if err := rdb.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
	}
	items := make([]idempotency.KeyToken, 600)
	for i := range items {
		items[i] = idempotency.KeyToken{Key: fmt.Sprint("k", i%300), Token: fmt.Sprint("t", i)}
	}
	flush()
	for i, r := range s.ClaimBatch(ctx, "g", items, time.Minute) {
		want := idempotency.ClaimResult{Outcome: idempotency.Acquired, Attempts: 1}
		if i >= 300 {
			want = idempotency.ClaimResult{Outcome: idempotency.Busy}
		}
		if r != want {
			t.Fatalf("claim item %d: %+v, want %+v", i, r, want)
		}
	}
	flush()
	for i, err := range s.CompleteBatch(ctx, "g", items, time.Minute) {
		if lost := i >= 300; lost != errors.Is(err, idempotency.ErrLostClaim) || (!lost && err != nil) {
			t.Fatalf("complete item %d: %v", i, err)
		}
	}
	flush()
	for i, r := range s.ClaimBatch(ctx, "g", items, time.Minute) {
		if r != (idempotency.ClaimResult{Outcome: idempotency.Done}) {
			t.Fatalf("claim item %d after completing: %+v", i, r)
		}
	}
}

// TestRedisConcurrentBatchesApplyEachKeyOnce: goroutines claim shuffled
// batches of shared keys (each key several times, batches past a read
// chunk) and complete what they acquired, in batches holding stale and
// foreign tokens too, until every key is done. Each key is acquired
// exactly once and completed exactly once.
func TestRedisConcurrentBatchesApplyEachKeyOnce(t *testing.T) {
	t.Parallel()
	for _, b := range redisBackends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			rdb := b.rdb(t)
			s, _ := prefixedStore(t, rdb, "idem")
			g, err := idempotency.NewGuard("conc", s, idempotency.WithLease(time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			const workers, nkeys = 6, 400
			var mu sync.Mutex
			acquired, completed := map[string]int{}, map[string]int{}
			var wg sync.WaitGroup
			for w := range workers {
				wg.Go(func() {
					rng := rand.New(rand.NewPCG(uint64(w), 7))
					for range 4 {
						keys := make([]string, 300)
						for i := range keys {
							keys[i] = fmt.Sprint("k", rng.IntN(nkeys))
						}
						cs, errs := g.ClaimBatch(ctx, keys)
						// Each claim twice (the second a completed one),
						// Busy and Done claims too (their tokens own
						// nothing), shuffled.
						var mine []*idempotency.Claim
						var of []string
						for i, c := range cs {
							if errs[i] != nil {
								t.Errorf("claim %s: %v", keys[i], errs[i])
								return
							}
							mine, of = append(mine, c, c), append(of, keys[i], keys[i])
						}
						rng.Shuffle(len(mine), func(i, j int) {
							mine[i], mine[j] = mine[j], mine[i]
							of[i], of[j] = of[j], of[i]
						})
						errs = g.CompleteBatch(ctx, mine)
						mu.Lock()
						for i, c := range cs {
							if c.Outcome == idempotency.Acquired {
								acquired[keys[i]]++
							}
						}
						for i, err := range errs {
							switch {
							case err == nil:
								completed[of[i]]++
								if mine[i].Outcome != idempotency.Acquired {
									t.Errorf("%s: a %v claim completed", of[i], mine[i].Outcome)
								}
							case !errors.Is(err, idempotency.ErrLostClaim):
								t.Errorf("complete %s: %v", of[i], err)
							}
						}
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			for k, n := range acquired {
				if n != 1 || completed[k] != 1 {
					t.Errorf("%s: acquired %d times, completed %d times", k, n, completed[k])
				}
			}
			if len(completed) != len(acquired) {
				t.Errorf("%d keys completed, %d acquired", len(completed), len(acquired))
			}
			all := make([]string, nkeys)
			for i := range all {
				all[i] = fmt.Sprint("k", i)
			}
			cs, errs := g.ClaimBatch(ctx, all)
			for i, c := range cs {
				want := idempotency.Acquired
				if acquired[all[i]] > 0 {
					want = idempotency.Done
				}
				if errs[i] != nil || c.Outcome != want {
					t.Errorf("%s at the end: %v, %v; want %v", all[i], c, errs[i], want)
				}
			}
		})
	}
}

// TestRedisCompleteBatchOfAKeyTwiceReadsItsDoneMarker: a key completed
// earlier in the same CompleteBatch holds "done" for the items after it,
// as it does for Complete called after Complete: the completed claim's
// token no longer matches it, past a read chunk's edge as well (where the
// chunk read still holds the token). A token "done" is refused in both,
// the items after it in their places.
func TestRedisCompleteBatchOfAKeyTwiceReadsItsDoneMarker(t *testing.T) {
	t.Parallel()
	for _, b := range redisBackends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			s, _ := prefixedStore(t, b.rdb(t), "idem")
			items := []idempotency.KeyToken{{Key: "k", Token: "t"}, {Key: "k", Token: "done"}, {Key: "k", Token: "t"}}
			for range 300 {
				items = append(items, idempotency.KeyToken{Key: "k", Token: "x"})
			}
			items = append(items, idempotency.KeyToken{Key: "k", Token: "t"})
			for _, group := range []string{"batch", "single"} {
				if o, _, err := s.Claim(ctx, group, "k", "t", time.Minute); err != nil || o != idempotency.Acquired {
					t.Fatalf("claim: %v, %v", o, err)
				}
			}
			got := s.CompleteBatch(ctx, "batch", items, time.Minute)
			for i, it := range items {
				want := s.Complete(ctx, "single", it.Key, it.Token, time.Minute)
				if errClass(got[i]) != errClass(want) {
					t.Fatalf("item %d (token %q): batch %v, one by one %v", i, it.Token, got[i], want)
				}
			}
		})
	}
}

// TestRedisOldLayoutNameHoldingAnotherType: something other than a string
// at a key's old-layout name (another application's list) is no done
// marker, for a single claim and a batch alike: the key is acquired, not
// failed on every delivery by one path only.
func TestRedisOldLayoutNameHoldingAnotherType(t *testing.T) {
	t.Parallel()
	for _, b := range redisBackends() {
		if b.name == "redis-cluster" {
			continue // no old-layout lookup
		}
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			rdb := b.rdb(t)
			s, prefix := prefixedStore(t, rdb, "idem")
			for _, group := range []string{"single", "batch"} {
				if err := rdb.RPush(ctx, prefix+group+":k", "done").Err(); err != nil {
					t.Fatal(err)
				}
			}
			o, n, err := s.Claim(ctx, "single", "k", "t", time.Minute)
			r := s.ClaimBatch(ctx, "batch", []idempotency.KeyToken{{Key: "k", Token: "t"}, {Key: "j", Token: "t"}}, time.Minute)
			if err != nil || o != idempotency.Acquired || n != 1 || r[0] != (idempotency.ClaimResult{Outcome: o, Attempts: n}) {
				t.Fatalf("one by one %v %d %v; batch %+v", o, n, err, r[0])
			}
		})
	}
}

// prefixedStore returns a Redis store on rdb under a prefix of the test's
// own, and the prefix.
func prefixedStore(t *testing.T, rdb redis.UniversalClient, name string) (*idempotency.RedisStore, string) {
	t.Helper()
	prefix := testenv.Name(t, name) + ":"
	s, err := idempotency.NewRedisStore(rdb, idempotency.WithPrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	return s, prefix
}
