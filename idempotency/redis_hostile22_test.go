package idempotency_test

import (
	"bytes"
	"context"
	"io"
	"math"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

// TestRedisStoreOnARingLosesNoDoneMarkerHostile22: a redis.Ring moves a
// key to another shard as soon as its own is marked down by the ring's
// heartbeat (a few missed pings: a GC pause, a busy server, a network
// blip; nothing lost on the server). A done marker on that shard is then
// invisible and a duplicate is Acquired and applied again. The store
// must refuse a Ring rather than run on it.
func TestRedisStoreOnARingLosesNoDoneMarkerHostile22(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	minis := map[string]*miniredis.Miniredis{"a": miniredis.RunT(t), "b": miniredis.RunT(t)}
	var down atomic.Value // the address the heartbeat reports down
	down.Store("")
	ring := redis.NewRing(&redis.RingOptions{
		Addrs:              map[string]string{"a": minis["a"].Addr(), "b": minis["b"].Addr()},
		HeartbeatFrequency: 20 * time.Millisecond,
		HeartbeatFn: func(ctx context.Context, c *redis.Client) bool {
			return c.Options().Addr != down.Load().(string)
		},
	})
	t.Cleanup(func() { ring.Close() })
	s, err := idempotency.NewRedisStore(ring)
	if err != nil {
		return // refused: what this test wants
	}
	g, err := idempotency.NewGuard("coupons", s)
	if err != nil {
		t.Fatal(err)
	}
	c := claimKey(t, g, "order-7")
	if c.Outcome != idempotency.Acquired {
		t.Fatalf("first claim: %v", c.Outcome)
	}
	if err := c.Complete(ctx); err != nil {
		t.Fatal(err)
	}
	name := claimKeyName("reliablemq:idem:", "coupons", "order-7")
	for _, m := range minis {
		if m.Exists(name) {
			down.Store(m.Addr())
		}
	}
	if down.Load() == "" {
		t.Fatalf("no shard holds %s", name)
	}
	// The shard stays up and keeps the marker; only the heartbeat says
	// otherwise, until the ring has taken it out.
	for deadline := time.Now().Add(30 * time.Second); ring.Len() != 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the ring never marked the shard down")
		}
	}
	if d := claimKey(t, g, "order-7"); d.Outcome == idempotency.Acquired {
		t.Fatalf("duplicate of a completed key on a Ring whose shard missed heartbeats: %v (applied twice)", d.Outcome)
	}
}

// TestRedisLeaseAndRetentionAreNotRoundedDownHostile22: a lease or a
// retention that is not a whole number of milliseconds is written to
// Redis rounded up, never down: the claim must hold the key at least
// until its Deadline (lease counted from before the claim was sent), and
// a lease under a millisecond must not become "PX 0" (an error) on the
// store's own methods. A lease of a year and the largest Duration are
// written as they are (no overflow).
func TestRedisLeaseAndRetentionAreNotRoundedDownHostile22(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	mini := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mini.Addr()})
	t.Cleanup(func() { rdb.Close() })
	s, prefix := prefixedStore(t, rdb, "idem")
	for i, d := range []time.Duration{10*time.Millisecond + 999*time.Microsecond, 1500 * time.Microsecond, 500 * time.Microsecond, 1} {
		key := string(rune('a' + i))
		name := claimKeyName(prefix, "g", key)
		o, n, err := s.Claim(ctx, "g", key, "t", d)
		if err != nil || o != idempotency.Acquired || n != 1 {
			t.Fatalf("claim with lease %v: %v %d %v", d, o, n, err)
		}
		if ttl := mini.TTL(name); ttl < d {
			t.Errorf("lease %v written as a TTL of %v: the key is free before the claim's deadline", d, ttl)
		}
		if err := s.Complete(ctx, "g", key, "t", d); err != nil {
			t.Fatalf("complete with retention %v: %v", d, err)
		}
		if ttl := mini.TTL(name); ttl < d {
			t.Errorf("retention %v written as a TTL of %v", d, ttl)
		}
	}
	// Batches write the same TTLs.
	d := 20*time.Millisecond + time.Microsecond
	items := []idempotency.KeyToken{{Key: "x", Token: "t"}, {Key: "y", Token: "t"}}
	for _, r := range s.ClaimBatch(ctx, "g", items, d) {
		if r.Err != nil || r.Outcome != idempotency.Acquired {
			t.Fatalf("batch claim with lease %v: %+v", d, r)
		}
	}
	if ttl := mini.TTL(claimKeyName(prefix, "g", "x")); ttl < d {
		t.Errorf("batch lease %v written as a TTL of %v", d, ttl)
	}
	for _, err := range s.CompleteBatch(ctx, "g", items, d) {
		if err != nil {
			t.Fatal(err)
		}
	}
	if ttl := mini.TTL(claimKeyName(prefix, "g", "y")); ttl < d {
		t.Errorf("batch retention %v written as a TTL of %v", d, ttl)
	}

	// Huge leases on a real Redis (miniredis keeps TTLs as Durations).
	real, realPrefix := prefixedStore(t, testenv.Redis(t), "idem")
	rr := testenv.Redis(t)
	for i, d := range []time.Duration{365 * 24 * time.Hour, math.MaxInt64} {
		key := string(rune('a' + i))
		if o, _, err := real.Claim(ctx, "g", key, "t", d); err != nil || o != idempotency.Acquired {
			t.Fatalf("claim with lease %v: %v %v", d, o, err)
		}
		// Raw milliseconds: go-redis's Duration overflows past 292 years.
		if ms, err := rr.Do(ctx, "PTTL", claimKeyName(realPrefix, "g", key)).Int64(); err != nil || ms < (364*24*time.Hour).Milliseconds() {
			t.Fatalf("lease %v: PTTL %d ms, %v", d, ms, err)
		}
		if err := real.Complete(ctx, "g", key, "t", d); err != nil {
			t.Fatalf("complete with retention %v: %v", d, err)
		}
		if o, _, err := real.Claim(ctx, "g", key, "u", time.Second); err != nil || o != idempotency.Done {
			t.Fatalf("claim after completing with retention %v: %v %v", d, o, err)
		}
		if err := rr.Del(ctx, claimKeyName(realPrefix, "g", key)).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// dropFirstReply is a connection that, once armed, lets the first script
// call it carries reach the server and run there, reads the reply and
// then fails as a connection reset after a request would: the client
// (MaxRetries, 3 by default) sends the call again.
type dropFirstReply struct {
	net.Conn
	armed   *atomic.Bool
	dropped *atomic.Int32
	script  bool // a script call was written and its reply not read yet
}

func (c *dropFirstReply) Write(b []byte) (int, error) {
	if bytes.Contains(bytes.ToLower(b), []byte("evalsha")) {
		c.script = true
	}
	return c.Conn.Write(b)
}

func (c *dropFirstReply) Read(b []byte) (int, error) {
	if c.script && c.armed.CompareAndSwap(true, false) {
		// The reply arrives once the script has run: wait for it, then
		// lose it.
		if _, err := c.Conn.Read(b); err != nil {
			return 0, err
		}
		c.dropped.Add(1)
		c.Conn.Close()
		return 0, io.EOF
	}
	c.script = false
	return c.Conn.Read(b)
}

// flakyRedis is a client on a fresh miniredis whose connections lose a
// script's reply each time arm is called.
func flakyRedis(t *testing.T) (rdb *redis.Client, arm func(), dropped func() int32) {
	t.Helper()
	mini := miniredis.RunT(t)
	var armed atomic.Bool
	var n atomic.Int32
	rdb = redis.NewClient(&redis.Options{Addr: mini.Addr(), Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		conn, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &dropFirstReply{Conn: conn, armed: &armed, dropped: &n}, nil
	}})
	t.Cleanup(func() { rdb.Close() })
	// Load the scripts, so that the calls are EVALSHA from the start.
	s, err := idempotency.NewRedisStore(rdb, idempotency.WithPrefix("warm:"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	items := []idempotency.KeyToken{{Key: "a", Token: "t"}, {Key: "b", Token: "t"}}
	s.ClaimBatch(ctx, "g", items, time.Second)
	s.CompleteBatch(ctx, "g", items, time.Second)
	s.Claim(ctx, "g", "c", "t", time.Second)
	s.Release(ctx, "g", "c", "t", false)
	s.Complete(ctx, "g", "c", "t", time.Second)
	return rdb, func() { armed.Store(true) }, n.Load
}

// TestRedisClaimWhoseReplyWasLostHostile22: go-redis sends a script call
// again when the connection fails after the request went out (io.EOF, a
// read timeout), so the server may run a claim twice. The second run
// finds the key held by the first, with the caller's own token: the
// caller owns the key and must hear Acquired (attempt 1), not Busy, which
// would strand its own claim for a whole lease and count an attempt
// that never ran.
func TestRedisClaimWhoseReplyWasLostHostile22(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, arm, dropped := flakyRedis(t)
	g := redisGuard(t, rdb, "g")
	arm()
	c := claimKey(t, g, "order-1")
	if dropped() != 1 {
		t.Fatalf("%d replies dropped, want 1 (the premise)", dropped())
	}
	if c.Outcome != idempotency.Acquired || c.Attempt != 1 {
		t.Fatalf("claim whose first reply was lost: %v attempt %d, want Acquired attempt 1", c.Outcome, c.Attempt)
	}
	if err := c.Complete(ctx); err != nil {
		t.Fatal(err)
	}
	arm()
	cs, errs := g.ClaimBatch(ctx, []string{"order-2", "order-3", "order-2"})
	if dropped() != 2 {
		t.Fatalf("%d replies dropped, want 2 (the premise)", dropped())
	}
	for i, want := range []idempotency.Outcome{idempotency.Acquired, idempotency.Acquired, idempotency.Busy} {
		if errs[i] != nil || cs[i].Outcome != want || (want == idempotency.Acquired && cs[i].Attempt != 1) {
			t.Fatalf("batch item %d whose reply was lost: %v, %v; want %v attempt 1", i, cs[i], errs[i], want)
		}
	}
	for i, err := range g.CompleteBatch(ctx, cs[:2]) {
		if err != nil {
			t.Fatalf("complete batch item %d: %v", i, err)
		}
	}
	// Uncounted claims too.
	arm()
	if c := claimKey(t, g.WithoutAttempts(), "order-4"); c.Outcome != idempotency.Acquired {
		t.Fatalf("uncounted claim whose reply was lost: %v", c.Outcome)
	}
}

// TestRedisForeignValueFailsOnlyItsOwnKeyHostile22: something this store
// did not write at a key's claim or counter name (another application
// sharing the prefix: a list, a string that is no number) fails that
// key's claim with an error, and nothing else: the claim it could not
// count is not left behind (the key would be Busy to its own retries for
// a lease, every time), and the other keys of the same batch are claimed
// as if it were not there, rather than failed and left held by claims
// nobody owns.
func TestRedisForeignValueFailsOnlyItsOwnKeyHostile22(t *testing.T) {
	t.Parallel()
	for _, b := range redisBackends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			rdb := b.rdb(t)
			s, prefix := prefixedStore(t, rdb, "idem")
			g, err := idempotency.NewGuard("g", s, idempotency.WithLease(time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			counter := func(key string) string { return strings.TrimSuffix(claimKeyName(prefix, "g", key), ":c") + ":n" }
			foreign := map[string]func() error{
				"list-counter":   func() error { return rdb.RPush(ctx, counter("list-counter"), "x").Err() },
				"text-counter":   func() error { return rdb.Set(ctx, counter("text-counter"), "abc", time.Hour).Err() },
				"list-claim":     func() error { return rdb.RPush(ctx, claimKeyName(prefix, "g", "list-claim"), "x").Err() },
				"list-uncounted": func() error { return rdb.RPush(ctx, claimKeyName(prefix, "g", "list-uncounted"), "x").Err() },
			}
			for key, write := range foreign {
				if err := write(); err != nil {
					t.Fatal(err)
				}
				gg := g
				if key == "list-uncounted" {
					gg = g.WithoutAttempts()
				}
				keys := []string{"before-" + key, key, "after-" + key}
				cs, errs := gg.ClaimBatch(ctx, keys)
				if errs[1] == nil {
					t.Fatalf("%s: claimed (%v) over a foreign value", key, cs[1])
				}
				for _, i := range []int{0, 2} {
					if errs[i] != nil || cs[i].Outcome != idempotency.Acquired {
						t.Errorf("%s: batch neighbour %s: %v, %v; want Acquired", key, keys[i], cs[i], errs[i])
					}
				}
				if _, err := gg.Claim(ctx, key); err == nil {
					t.Fatalf("%s: single claim over a foreign value: no error", key)
				}
				// Once the foreign value is gone, the key is free: no
				// claim of the failed calls holds it.
				if err := rdb.Del(ctx, counter(key), claimKeyName(prefix, "g", key)).Err(); err != nil {
					t.Fatal(err)
				}
				if c := claimKey(t, gg, key); c.Outcome != idempotency.Acquired {
					t.Errorf("%s: after removing the foreign value: %v, want Acquired", key, c.Outcome)
				}
			}
		})
	}
}
