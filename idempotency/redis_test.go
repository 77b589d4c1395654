package idempotency_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

func redisGuard(t *testing.T, rdb redis.UniversalClient, group string, opts ...idempotency.GuardOption) *idempotency.Guard {
	t.Helper()
	return guardOn(t, func() (*idempotency.RedisStore, error) { return idempotency.NewRedisStore(rdb) }, group, opts...)
}

// TestRedisKeysCannotCollide: business keys and groups built from the
// store's own separators never share a claim or a counter.
func TestRedisKeysCannotCollide(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: miniredis.RunT(t).Addr()})
	t.Cleanup(func() { rdb.Close() })
	ctx := context.Background()
	for _, pair := range [][2]string{{"g", "k"}, {"g", "k:n"}, {"g", "k:c"}, {"g", "k:x"}, {"g:k", "x"}, {"g", ":k"}, {"g:", "k"},
		{"g", "{k}"}, {"{g}", "k"}, {"G", "k"}} {
		c := claimKey(t, redisGuard(t, rdb, pair[0]), pair[1])
		if c.Outcome != idempotency.Acquired || c.Attempt != 1 {
			t.Fatalf("group %q key %q: %v attempt %d, want a fresh claim", pair[0], pair[1], c.Outcome, c.Attempt)
		}
		if err := c.Complete(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := idempotency.NewRedisStore(rdb, idempotency.WithPrefix("app:{pinned}:")); err == nil {
		t.Fatal("a prefix with a hash tag was accepted")
	}
}

// TestRedisKeyNamesArePinned: the names a claim writes are exactly
// "<prefix>{<first 16 bytes of sha256(len(group):group:key)>}:c" (and
// ":n" for the counter), also for a long key: a change would make every
// done marker written before an upgrade invisible after it.
func TestRedisKeyNamesArePinned(t *testing.T) {
	t.Parallel()
	mini := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mini.Addr()})
	t.Cleanup(func() { rdb.Close() })
	ctx := context.Background()
	for _, tc := range []struct{ group, key, tag string }{
		{"coupons", "order-7", "80b7034436fe205a96fc74736c0d0016"},
		{"g", strings.Repeat("x", 300), "f3457c5422ae7a1d4ff25179e86a6c75"},
	} {
		c := claimKey(t, redisGuard(t, rdb, tc.group), tc.key)
		name := "reliablemq:idem:{" + tc.tag + "}"
		if !mini.Exists(name+":c") || !mini.Exists(name+":n") {
			t.Fatalf("group %q key %.10q: no %s:c and :n among %q", tc.group, tc.key, name, mini.Keys())
		}
		if err := c.Complete(ctx); err != nil {
			t.Fatal(err)
		}
		if v, err := mini.Get(name + ":c"); err != nil || v != "done" {
			t.Fatalf("%s:c = %q, %v after Complete", name, v, err)
		}
	}
}

// TestRedisHonoursDoneMarkersOfTheOldLayout: after an upgrade, a key
// completed under the previous key layout is still a duplicate.
func TestRedisHonoursDoneMarkersOfTheOldLayout(t *testing.T) {
	t.Parallel()
	mini := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mini.Addr()})
	t.Cleanup(func() { rdb.Close() })
	if err := mini.Set("reliablemq:idem:coupons:order-7", "done"); err != nil {
		t.Fatal(err)
	}
	if c := claimKey(t, redisGuard(t, rdb, "coupons"), "order-7"); c.Outcome != idempotency.Done {
		t.Fatalf("claim of a key done under the old layout: %v, want Done", c.Outcome)
	}
	// A group shaped like another key's hash tag must not read that key's
	// marker through the old layout's name.
	ctx := context.Background()
	c := claimKey(t, redisGuard(t, rdb, "coupons"), "order-1")
	if err := c.Complete(ctx); err != nil {
		t.Fatal(err)
	}
	names, err := rdb.Keys(ctx, "reliablemq:idem:{*}:c").Result()
	if err != nil || len(names) != 1 {
		t.Fatalf("new-layout keys %v, %v", names, err)
	}
	tag := strings.TrimSuffix(strings.TrimPrefix(names[0], "reliablemq:idem:"), ":c")
	if c := claimKey(t, redisGuard(t, rdb, tag), "c"); c.Outcome != idempotency.Acquired {
		t.Fatalf("group %s key c: %v, want Acquired (it read another key's marker)", tag, c.Outcome)
	}
}

// TestRedisBatchHonoursDoneMarkersOfTheOldLayout: a batch claim reads the
// old layout's markers in chunks; a marker at either side of a chunk's
// edge counts, counted or not (an uncounted claim names no counter, so
// the markers sit at other places among the script's keys).
func TestRedisBatchHonoursDoneMarkersOfTheOldLayout(t *testing.T) {
	t.Parallel()
	rdb := testenv.Redis(t)
	for _, counted := range []bool{true, false} {
		group := strings.ReplaceAll(testenv.Name(t, "coupons"), ":", "_")
		old := map[int]bool{0: true, 255: true, 256: true, 511: true, 512: true, 599: true}
		keys := make([]string, 600)
		for i := range keys {
			keys[i] = fmt.Sprint("order-", i)
			if old[i] {
				if err := rdb.Set(context.Background(), "reliablemq:idem:"+group+":"+keys[i], "done", time.Minute).Err(); err != nil {
					t.Fatal(err)
				}
			}
		}
		g := redisGuard(t, rdb, group)
		if !counted {
			g = g.WithoutAttempts()
		}
		claims, errs := g.ClaimBatch(context.Background(), keys)
		for i, c := range claims {
			want := idempotency.Acquired
			if old[i] {
				want = idempotency.Done
			}
			if errs[i] != nil || c.Outcome != want {
				t.Fatalf("counted %v, item %d: %v, %v; want %v", counted, i, c, errs[i], want)
			}
		}
	}
}

// TestRedisRefusesTheDoneMarkerAsAToken: a claim holding the token
// "done" would read as done to every other caller.
func TestRedisRefusesTheDoneMarkerAsAToken(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store, err := idempotency.NewRedisStore(testenv.Redis(t), idempotency.WithPrefix(testenv.Name(t, "idem")+":"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.Claim(ctx, "g", "k", "done", time.Second); err == nil {
		t.Fatal(`Claim with token "done": no error`)
	}
	res := store.ClaimBatch(ctx, "g", []idempotency.KeyToken{{Key: "a", Token: "t1"}, {Key: "k", Token: "done"}, {Key: "b", Token: "t2"}}, time.Second)
	if res[0].Err != nil || res[0].Outcome != idempotency.Acquired || res[1].Err == nil || res[2].Err != nil || res[2].Outcome != idempotency.Acquired {
		t.Fatalf("batch: %+v", res)
	}
	if o, _, err := store.Claim(ctx, "g", "k", "t3", time.Second); err != nil || o != idempotency.Acquired {
		t.Fatalf("k after the refused claims: %v, %v; want Acquired", o, err)
	}
}

// TestRedisClaimLatencyStaysBelowTheLease: under steady load from many
// handlers, no single Claim waits long (a caller never keeps flushing
// other callers' work; the structural rule is pinned in internal/combine):
// the slowest call stays under the lease, so a claim cannot outlive the
// lease it took. The bound is the lease, not a speed: the machine may be
// loaded.
func TestRedisClaimLatencyStaysBelowTheLease(t *testing.T) {
	t.Parallel()
	var rdb redis.UniversalClient
	if os.Getenv("REDIS_ADDR") != "" {
		rdb = testenv.Redis(t)
	} else {
		rdb = redis.NewClient(&redis.Options{Addr: miniredis.RunT(t).Addr()})
		t.Cleanup(func() { rdb.Close() })
	}
	g := redisGuard(t, rdb, testenv.Name(t, "g"), idempotency.WithLease(5*time.Second))
	const workers = 32
	deadline := time.Now().Add(2 * time.Second)
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			var mine []time.Duration
			for i := 0; time.Now().Before(deadline); i++ {
				start := time.Now()
				if _, err := g.Claim(context.Background(), strings.Repeat("x", w%5)+string(rune('a'+w))+":"+string(rune(i))); err != nil {
					t.Error(err)
					return
				}
				mine = append(mine, time.Since(start))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	slices.Sort(lat)
	p999, worst := lat[len(lat)*999/1000], lat[len(lat)-1]
	t.Logf("%d claims from %d goroutines: p99.9 %v, max %v (lease %v)", len(lat), workers, p999, worst, g.Lease())
	if worst >= g.Lease() {
		t.Fatalf("slowest claim took %v, as long as the %v lease", worst, g.Lease())
	}
}

// TestRedisClusterSpreadsKeysOverEveryMaster runs the guard on a Redis
// Cluster (REDIS_CLUSTER_ADDRS, comma-separated; CI starts three masters):
// claims and completions work, and the keys land on every master.
func TestRedisClusterSpreadsKeysOverEveryMaster(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: testenv.RedisCluster(t)})
	t.Cleanup(func() { rdb.Close() })
	ctx := context.Background()
	g := redisGuard(t, rdb, testenv.Name(t, "g"))
	for i := range 300 {
		key := "order-" + string(rune('a'+i%26)) + strings.Repeat("x", i/26)
		c := claimKey(t, g, key)
		if c.Outcome != idempotency.Acquired {
			t.Fatalf("claim %s: %v", key, c.Outcome)
		}
		if err := c.Complete(ctx); err != nil {
			t.Fatalf("complete %s: %v", key, err)
		}
		if d := claimKey(t, g, key); d.Outcome != idempotency.Done {
			t.Fatalf("duplicate %s: %v", key, d.Outcome)
		}
	}
	var mu sync.Mutex
	var sizes []int64
	err := rdb.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		n, err := m.DBSize(ctx).Result()
		mu.Lock()
		sizes = append(sizes, n)
		mu.Unlock()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(sizes) < 3 || slices.Contains(sizes, 0) {
		t.Fatalf("keys per master %v: want every one of at least 3 masters used", sizes)
	}
}
