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

	"github.com/alicebob/miniredis/v2"
	"github.com/jmoiron/sqlx"
	"github.com/redis/go-redis/v9"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

// backend is a store under test and a way to make its time pass.
type backend struct {
	name    string
	store   func(t *testing.T) idempotency.Store
	advance func(t *testing.T, d time.Duration)
}

func sleep(_ *testing.T, d time.Duration) { time.Sleep(d) }

func backends() []backend {
	var mini *miniredis.Miniredis
	return []backend{
		{"mysql", func(t *testing.T) idempotency.Store {
			s, err := idempotency.NewMySQLStore(testenv.MySQL(t))
			if err != nil {
				t.Fatal(err)
			}
			return s
		}, sleep},
		{"redis", func(t *testing.T) idempotency.Store {
			s, err := idempotency.NewRedisStore(testenv.Redis(t), idempotency.WithPrefix(testenv.Name(t, "idem")+":"))
			if err != nil {
				t.Fatal(err)
			}
			return s
		}, sleep},
		{"redis-cluster", func(t *testing.T) idempotency.Store {
			rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: testenv.RedisCluster(t)})
			t.Cleanup(func() { rdb.Close() })
			s, err := idempotency.NewRedisStore(rdb, idempotency.WithPrefix(testenv.Name(t, "idem")+":"))
			if err != nil {
				t.Fatal(err)
			}
			return s
		}, sleep},
		{"miniredis", func(t *testing.T) idempotency.Store {
			mini = miniredis.RunT(t)
			rdb := redis.NewClient(&redis.Options{Addr: mini.Addr()})
			t.Cleanup(func() { rdb.Close() })
			s, err := idempotency.NewRedisStore(rdb)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}, func(_ *testing.T, d time.Duration) { mini.FastForward(d) }},
	}
}

const lease = 400 * time.Millisecond

func newGuard(t *testing.T, s idempotency.Store, opts ...idempotency.GuardOption) *idempotency.Guard {
	t.Helper()
	g, err := idempotency.NewGuard(testenv.Name(t, "G"), s, append([]idempotency.GuardOption{idempotency.WithLease(lease)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// heldGuard is newGuard with a lease that cannot end during a subtest,
// for subtests that expect a claim to stay held (Busy) over several round
// trips: on a loaded machine they can take longer than the 400 ms lease.
func heldGuard(t *testing.T, s idempotency.Store) *idempotency.Guard {
	t.Helper()
	return newGuard(t, s, idempotency.WithLease(time.Minute))
}

func claim(t *testing.T, g *idempotency.Guard, key string, want idempotency.Outcome, wantAttempt int) *idempotency.Claim {
	t.Helper()
	c, err := g.Claim(context.Background(), key)
	if err != nil {
		t.Fatalf("claim %q: %v", key, err)
	}
	if c.Outcome != want || (want == idempotency.Acquired && c.Attempt != wantAttempt) {
		t.Fatalf("claim %q = %v attempt %d, want %v attempt %d", key, c.Outcome, c.Attempt, want, wantAttempt)
	}
	return c
}

func TestStores(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			t.Run("claim, busy, complete, done", func(t *testing.T) {
				g := heldGuard(t, b.store(t))
				c := claim(t, g, "order-1", idempotency.Acquired, 1)
				claim(t, g, "order-1", idempotency.Busy, 0)
				claim(t, g, "order-2", idempotency.Acquired, 1)
				if err := c.Complete(ctx); err != nil {
					t.Fatal(err)
				}
				claim(t, g, "order-1", idempotency.Done, 0)
				if err := c.Complete(ctx); !errors.Is(err, idempotency.ErrLostClaim) {
					t.Fatalf("second complete: %v, want ErrLostClaim", err)
				}
			})
			t.Run("keys of every byte", func(t *testing.T) {
				g := heldGuard(t, b.store(t))
				var all []byte
				for i := range 256 {
					all = append(all, byte(i))
				}
				long := strings.Repeat(string(all), 60<<10/256) // near what MySQL's BLOB column holds
				for _, key := range []string{string(all), long} {
					c := claim(t, g, key, idempotency.Acquired, 1)
					claim(t, g, key, idempotency.Busy, 0)
					claim(t, g, key[1:], idempotency.Acquired, 1) // a suffix is another key
					if err := c.Complete(ctx); err != nil {
						t.Fatal(err)
					}
					claim(t, g, key, idempotency.Done, 0)
				}
			})
			t.Run("failed attempt releases and counts", func(t *testing.T) {
				g := newGuard(t, b.store(t))
				c := claim(t, g, "k", idempotency.Acquired, 1)
				if err := c.Release(ctx); err != nil {
					t.Fatal(err)
				}
				c = claim(t, g, "k", idempotency.Acquired, 2)
				if err := c.Release(ctx); err != nil {
					t.Fatal(err)
				}
				c = claim(t, g, "k", idempotency.Acquired, 3)
				if err := c.Complete(ctx); err != nil {
					t.Fatal(err)
				}
				claim(t, g, "k", idempotency.Done, 0)
			})
			t.Run("crash mid-handler: lease expiry hands the key over, stale owner fenced", func(t *testing.T) {
				g := newGuard(t, b.store(t))
				stale := claim(t, g, "k", idempotency.Acquired, 1)
				claim(t, g, "k", idempotency.Busy, 0)
				b.advance(t, lease+200*time.Millisecond)
				fresh := claim(t, g, "k", idempotency.Acquired, 2)
				if err := stale.Complete(ctx); !errors.Is(err, idempotency.ErrLostClaim) {
					t.Fatalf("stale complete: %v, want ErrLostClaim", err)
				}
				if err := stale.Release(ctx); !errors.Is(err, idempotency.ErrLostClaim) {
					t.Fatalf("stale release: %v, want ErrLostClaim", err)
				}
				if err := fresh.Complete(ctx); err != nil {
					t.Fatal(err)
				}
				claim(t, g, "k", idempotency.Done, 0)
			})
			t.Run("done marker past retention lets the key run again", func(t *testing.T) {
				g := newGuard(t, b.store(t), idempotency.WithRetention(time.Second))
				c := claim(t, g, "k", idempotency.Acquired, 1)
				if err := c.Complete(ctx); err != nil {
					t.Fatal(err)
				}
				claim(t, g, "k", idempotency.Done, 0)
				b.advance(t, 1300*time.Millisecond)
				claim(t, g, "k", idempotency.Acquired, 1)
			})
			t.Run("forget resets the key", func(t *testing.T) {
				g := newGuard(t, b.store(t))
				c := claim(t, g, "k", idempotency.Acquired, 1)
				if err := c.Release(ctx); err != nil {
					t.Fatal(err)
				}
				c = claim(t, g, "k", idempotency.Acquired, 2)
				if err := c.Forget(ctx); err != nil {
					t.Fatal(err)
				}
				claim(t, g, "k", idempotency.Acquired, 1)
			})
			t.Run("unusual keys are distinct and exact", func(t *testing.T) {
				g := heldGuard(t, b.store(t))
				keys := []string{`it's "quoted"`, "with space", "ключ-注文-🔑", strings.Repeat("k", 1024),
					"\xff\xfe invalid utf8", "'; DROP TABLE mq_consume_log; --", "k", "K", "k "}
				for _, k := range keys {
					claim(t, g, k, idempotency.Acquired, 1)
				}
				for _, k := range keys {
					claim(t, g, k, idempotency.Busy, 0)
				}
			})
			t.Run("concurrent duplicates run once", func(t *testing.T) {
				g := heldGuard(t, b.store(t))
				var effects [5]atomic.Int32
				var wg sync.WaitGroup
				for range 20 {
					wg.Go(func() {
						for k := range effects {
							for {
								o, err := g.Do(ctx, fmt.Sprint("key-", k), func(context.Context) error {
									effects[k].Add(1)
									return nil
								})
								if err != nil {
									t.Error(err)
									return
								}
								if o != idempotency.Busy {
									break
								}
								time.Sleep(time.Millisecond)
							}
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

func TestStoreDownIsAnErrorNotAnOutcome(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	defer rdb.Close()
	rs, _ := idempotency.NewRedisStore(rdb)
	db := testenv.MySQL(t)
	closed, err := sqlx.Open("mysql", testenv.MySQLDSN(t, db))
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	ms2, _ := idempotency.NewMySQLStore(closed)
	for name, s := range map[string]idempotency.Store{"redis": rs, "mysql": ms2} {
		g, err := idempotency.NewGuard("g", s)
		if err != nil {
			t.Fatal(err)
		}
		ran := false
		if _, err := g.Do(ctx, "k", func(context.Context) error { ran = true; return nil }); err == nil || ran {
			t.Errorf("%s down: err = %v, ran = %v; want an error and no run", name, err, ran)
		}
	}
}

func TestMySQLStoresKeysVerbatimAndPurges(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.MySQL(t)
	s, err := idempotency.NewMySQLStore(db)
	if err != nil {
		t.Fatal(err)
	}
	g := newGuard(t, s, idempotency.WithRetention(time.Second))
	if g.Retention() != time.Second || g.Lease() != lease {
		t.Fatalf("retention %v, lease %v; want 1s, %v", g.Retention(), g.Lease(), lease)
	}
	key := "o'rder \"1\" \xff ключ " + strings.Repeat("x", 1000)
	c := claim(t, g, key, idempotency.Acquired, 1)
	var stored []byte
	if err := db.Get(&stored, "SELECT biz_key FROM mq_consume_log"); err != nil {
		t.Fatal(err)
	}
	if string(stored) != key {
		t.Fatalf("stored key %q, want %q", stored, key)
	}
	if err := c.Complete(ctx); err != nil {
		t.Fatal(err)
	}
	claim(t, g, "abandoned", idempotency.Acquired, 1)
	if n, err := s.Purge(ctx, time.Hour, 10); err != nil || n != 0 {
		t.Fatalf("purge before expiry: %d, %v", n, err)
	}
	time.Sleep(1200 * time.Millisecond)
	if n, err := s.Purge(ctx, 0, 1); err != nil || n != 2 {
		t.Fatalf("purge after expiry: %d rows, %v; want 2", n, err)
	}
}

func TestConfigurationIsValidated(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{})
	defer rdb.Close()
	rs, _ := idempotency.NewRedisStore(rdb)
	for name, opts := range map[string][]idempotency.GuardOption{
		"retention below lease": {idempotency.WithLease(time.Hour), idempotency.WithRetention(time.Minute)},
		"zero lease":            {idempotency.WithLease(0)},
	} {
		if _, err := idempotency.NewGuard("g", rs, opts...); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := idempotency.NewGuard("", rs); err == nil {
		t.Error("empty group accepted")
	}
	if _, err := idempotency.NewMySQLStore(nil); err == nil {
		t.Error("nil db accepted")
	}
	if _, err := idempotency.NewMySQLStore(&sqlx.DB{}, idempotency.WithTable("x; DROP TABLE y")); err == nil ||
		!strings.Contains(err.Error(), "table name") {
		t.Errorf("bad table: %v", err)
	}
	if _, err := idempotency.NewTxGuard(&sqlx.DB{}, "g", idempotency.WithTable("mq_consume_log`"), idempotency.WithRetention(0)); err == nil ||
		!strings.Contains(err.Error(), "table name") || !strings.Contains(err.Error(), "retention") {
		t.Errorf("tx guard: %v", err)
	}
	if _, err := idempotency.NewRedisStore(rdb, idempotency.WithPrefix("")); err == nil {
		t.Error("empty prefix accepted")
	}
	g, _ := idempotency.NewGuard("g", rs)
	if _, err := g.Claim(context.Background(), ""); !errors.Is(err, idempotency.ErrEmptyKey) {
		t.Errorf("empty key: %v", err)
	}
}
