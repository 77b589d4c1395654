package idempotency_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/seed157d4c4d/reliablemq/idempotency"
)

// lateReply is a connection that, once armed, lets the first script
// call it carries run on the server, reads its reply, lets late pass
// (on miniredis's clock: the time a read timeout and go-redis's backoff
// take before the call is sent again), then fails as a reset connection:
// the client sends the call again.
type lateReply struct {
	net.Conn
	armed   *atomic.Bool
	dropped *atomic.Int32
	late    func()
	script  bool
}

func (c *lateReply) Write(b []byte) (int, error) {
	if bytes.Contains(bytes.ToLower(b), []byte("evalsha")) {
		c.script = true
	}
	return c.Conn.Write(b)
}

func (c *lateReply) Read(b []byte) (int, error) {
	if c.script && c.armed.CompareAndSwap(true, false) {
		if _, err := c.Conn.Read(b); err != nil {
			return 0, err
		}
		c.late()
		c.dropped.Add(1)
		c.Conn.Close()
		return 0, io.EOF
	}
	c.script = false
	return c.Conn.Read(b)
}

// lateRedis is a client on mini whose connections, each time arm is
// called, lose a script's reply after late has passed on mini's clock.
func lateRedis(t *testing.T, mini *miniredis.Miniredis, late time.Duration) (rdb *redis.Client, arm func(), dropped func() int32) {
	t.Helper()
	var armed atomic.Bool
	var n atomic.Int32
	rdb = redis.NewClient(&redis.Options{Addr: mini.Addr(), Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		conn, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &lateReply{Conn: conn, armed: &armed, dropped: &n, late: func() { mini.FastForward(late) }}, nil
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

// TestRedisResentCompletionOutlivingItsRetention: a retention shorter
// than the time go-redis takes to send a completion again (a 3 s read
// timeout by default, plus backoff) must not turn the rerun into a lost
// claim: the record of the call lives its minute whatever the retention,
// and the rerun succeeds on it alone (nothing else writes its nonce),
// with the done marker already expired.
func TestRedisResentCompletionOutlivingItsRetention(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const retain = 2 * time.Second
	mini := miniredis.RunT(t)
	// The call is sent again 3 s after it ran: a read timeout's worth.
	rdb, arm, dropped := lateRedis(t, mini, 3*time.Second)
	s, _ := prefixedStore(t, rdb, "idem")
	if o, n, err := s.Claim(ctx, "g", "one", "t1", retain); err != nil || o != idempotency.Acquired || n != 1 {
		t.Fatalf("claim: %v %d %v", o, n, err)
	}
	arm()
	if err := s.Complete(ctx, "g", "one", "t1", retain); err != nil {
		t.Errorf("a completion this call recorded, resent after its %v retention: %v", retain, err)
	}
	if dropped() != 1 {
		t.Fatalf("%d replies dropped, want 1 (the premise)", dropped())
	}

	items := []idempotency.KeyToken{{Key: "two", Token: "t2"}, {Key: "three", Token: "t3"}}
	for i, r := range s.ClaimBatch(ctx, "g", items, retain) {
		if r.Err != nil || r.Outcome != idempotency.Acquired {
			t.Fatalf("claim batch item %d: %+v", i, r)
		}
	}
	arm()
	for i, err := range s.CompleteBatch(ctx, "g", items, retain) {
		if err != nil {
			t.Errorf("batch item %d this call completed, resent after its %v retention: %v", i, retain, err)
		}
	}
	if dropped() != 2 {
		t.Fatalf("%d replies dropped, want 2 (the premise)", dropped())
	}
}

// The claim scripts of the previous release (before completions left a
// record), verbatim: what an instance not yet upgraded runs during a
// rolling upgrade (or after a rollback) on the same keys.
const (
	prevClaimScript = `
if KEYS[3] and redis.call('MGET', KEYS[3])[1] == 'done' then return {2, 0} end
if redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') then
  local n = 1
  if not redis.call('SET', KEYS[2], 1, 'PX', ARGV[3], 'NX') then
    local ok
    ok, n = pcall(redis.call, 'INCR', KEYS[2])
    if not ok then
      redis.call('DEL', KEYS[1])
      return {4, 0}
    end
    redis.call('PEXPIRE', KEYS[2], ARGV[3])
  end
  return {1, n}
end
local ok, held = pcall(redis.call, 'GET', KEYS[1])
if not ok then return {4, 0} end
if held == 'done' then return {2, 0} end
if held == ARGV[1] then
  local got, n = pcall(redis.call, 'GET', KEYS[2])
  if got then return {1, tonumber(n) or 0} end
  redis.call('DEL', KEYS[1])
  return {4, 0}
end
return {3, 0}`
	prevClaimBatchScript = `
local function mget(first, stride, n)
  local vals = {}
  for lo = 1, n, 256 do
    local hi = math.min(n, lo + 255)
    local names = {}
    for i = lo, hi do names[i - lo + 1] = KEYS[first + (i - 1) * stride] end
    local r = redis.call('MGET', unpack(names))
    for i = lo, hi do vals[i] = r[i - lo + 1] end
  end
  return vals
end
local stride = tonumber(ARGV[3])
local counted = ARGV[2] ~= '0'
local named = counted and 2 or 1
local n = #ARGV - 3
local legacy = {}
if stride > named then legacy = mget(named + 1, stride, n) end
local out = {}
for i = 1, n do
  local b = (i - 1) * stride
  if legacy[i] == 'done' then
    out[2 * i - 1], out[2 * i] = 2, 0
  elseif redis.call('SET', KEYS[b + 1], ARGV[3 + i], 'PX', ARGV[1], 'NX') then
    local ok, c = true, 0
    if counted then
      c = 1
      if not redis.call('SET', KEYS[b + 2], 1, 'PX', ARGV[2], 'NX') then
        ok, c = pcall(redis.call, 'INCR', KEYS[b + 2])
        if ok then
          redis.call('PEXPIRE', KEYS[b + 2], ARGV[2])
        else
          redis.call('DEL', KEYS[b + 1])
        end
      end
    end
    if ok then
      out[2 * i - 1], out[2 * i] = 1, c
    else
      out[2 * i - 1], out[2 * i] = 4, 0
    end
  else
    local ok, held = pcall(redis.call, 'GET', KEYS[b + 1])
    if not ok then
      out[2 * i - 1], out[2 * i] = 4, 0
    elseif held == 'done' then
      out[2 * i - 1], out[2 * i] = 2, 0
    elseif held == ARGV[3 + i] then
      local got, c = true, 0
      if counted then got, c = pcall(redis.call, 'GET', KEYS[b + 2]) end
      if got then
        out[2 * i - 1], out[2 * i] = 1, tonumber(c) or 0
      else
        redis.call('DEL', KEYS[b + 1])
        out[2 * i - 1], out[2 * i] = 4, 0
      end
    else
      out[2 * i - 1], out[2 * i] = 3, 0
    end
  end
end
return out`
)

// TestRedisPreviousReleaseClaimsAfterADoneMarkerWasRemoved: the
// completion's record must sit at a name no earlier release reads. Kept at
// the counter's name, where earlier claim scripts INCR a number, an
// instance still on the previous release (a rolling upgrade, a rollback)
// read it, once the done marker was deleted or evicted, as a foreign
// value: errForeign, a store error retried for as long as the record
// lives, where the same claim had been Acquired, attempt 1.
func TestRedisPreviousReleaseClaimsAfterADoneMarkerWasRemoved(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: miniredis.RunT(t).Addr()})
	t.Cleanup(func() { rdb.Close() })
	s, prefix := prefixedStore(t, rdb, "idem")
	names := func(key string) (claim, counter string) {
		claim = claimKeyName(prefix, "g", key)
		return claim, strings.TrimSuffix(claim, ":c") + ":n"
	}
	for _, key := range []string{"single", "batch"} {
		if o, _, err := s.Claim(ctx, "g", key, "t", time.Minute); err != nil || o != idempotency.Acquired {
			t.Fatalf("claim %s: %v %v", key, o, err)
		}
		if err := s.Complete(ctx, "g", key, "t", time.Hour); err != nil {
			t.Fatal(err)
		}
		// The done marker deleted by hand (or evicted) within the minute,
		// as in TestRedisClaimAfterADoneMarkerWasRemoved.
		claim, _ := names(key)
		if err := rdb.Del(ctx, claim).Err(); err != nil {
			t.Fatal(err)
		}
	}
	const lease, counterTTL = 60_000, 7 * 24 * 3_600_000
	claim, counter := names("single")
	r, err := redis.NewScript(prevClaimScript).Run(ctx, rdb, []string{claim, counter, prefix + "g:single"}, "u", lease, counterTTL).Int64Slice()
	if err != nil || len(r) != 2 || r[0] != 1 || r[1] != 1 {
		t.Errorf("previous release's claim after the done marker was removed: %v %v, want [1 1] (Acquired, attempt 1; 4 is errForeign)", r, err)
	}
	claim, counter = names("batch")
	r, err = redis.NewScript(prevClaimBatchScript).Run(ctx, rdb, []string{claim, counter, prefix + "g:batch"}, lease, counterTTL, 3, "u").Int64Slice()
	if err != nil || len(r) != 2 || r[0] != 1 || r[1] != 1 {
		t.Errorf("previous release's batch claim after the done marker was removed: %v %v, want [1 1]", r, err)
	}
}
