package idempotency

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/seed157d4c4d/reliablemq/internal/combine"
)

// RedisStore keeps claims in Redis: per group and key, a claim string
// holding the fencing token (expiring with the lease) or "done" (expiring
// with the retention), and an attempt counter beside it, written by every
// claim but those of [RedisStore.ClaimUncounted]. Each method is
// one Lua script, atomic on the server. The two keys are
// "<prefix>{<tag>}:c" and "<prefix>{<tag>}:n", tag a hash of the group and
// the business key: no business key can name another's counter, and on
// Redis Cluster the two keys of one business key share a slot while
// different business keys spread over every master. A claim's token may
// be anything but "done", the done marker's value ([Guard] makes random
// hex tokens).
//
// Durability is Redis's: a failover that loses recent writes can lose done
// markers, letting a duplicate through. Use the MySQL store or [TxGuard]
// where that matters.
type RedisStore struct {
	rdb    redis.UniversalClient
	prefix string
	legacy bool // also honour done markers of the pre-hash key layout
	batch  *combine.Batcher[*scriptCall]
}

// NewRedisStore returns a store on rdb (keys under [WithPrefix]). On a
// single Redis (not Cluster) a claim also honours a done marker
// written under the key layout before this one ("<prefix><group>:<key>"),
// so an upgrade does not let duplicates through. A *redis.Ring is
// refused: it moves a key to another shard whenever its own misses the
// ring's heartbeats, and the key's done marker with it out of sight.
func NewRedisStore(rdb redis.UniversalClient, opts ...RedisOption) (*RedisStore, error) {
	c := defaults()
	for _, o := range opts {
		o.applyRedis(&c)
	}
	err := c.check(false)
	if rdb == nil {
		err = errors.Join(err, errors.New("idempotency: nil redis client"))
	}
	if _, ok := rdb.(*redis.Ring); ok {
		err = errors.Join(err, errRing)
	}
	if err != nil {
		return nil, err
	}
	_, single := rdb.(*redis.Client)
	s := &RedisStore{rdb: rdb, prefix: c.prefix, legacy: single}
	s.batch = combine.New(maxPipeline, func(ctx context.Context, calls []*scriptCall) { flush(ctx, rdb, calls) })
	return s, nil
}

// errRing refuses a redis.Ring: it moves a key to another shard whenever
// its own misses the ring's heartbeats (and when shards are added), so a
// claim or done marker there would be invisible and a duplicate applied.
var errRing = errors.New("idempotency: a redis.Ring moves keys between shards when one misses its heartbeats, hiding done markers; use a single Redis (or Sentinel) or a Redis Cluster")

var (
	// claimScript: a new key (the usual case) takes two writes, the claim
	// and its counter, each set only if absent. The old layout's marker
	// is read with MGET, as claimBatchScript reads it: a value other than
	// a string at its name (not ours) is no marker, rather than an error.
	// A key already held with the caller's own token was claimed by this
	// very call, run again by the client after losing its reply: it is
	// Acquired, with the count that run made. A value the store did not
	// write at the claim's or the counter's name (another type, a counter
	// that is no number) is outcome 4 (errForeign), with nothing written
	// (a resent call's own claim over a foreign counter is removed).
	claimScript = redis.NewScript(`
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
return {3, 0}`)
	completeScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], 'done', 'PX', ARGV[2])
redis.call('DEL', KEYS[2])
return 1`)
	releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if ARGV[2] == '1' then redis.call('DEL', KEYS[2]) end
return 1`)
)

// counterTTL bounds how long an attempt counter outlives its last claim.
const counterTTL = 7 * 24 * time.Hour

// millis is d in whole milliseconds (Redis's PX), rounded up: a lease
// must not end before the claim's [Claim.Deadline], nor a retention
// before the one asked for.
func millis(d time.Duration) int64 {
	ms := d.Milliseconds()
	if d%time.Millisecond > 0 {
		ms++
	}
	return ms
}

func (s *RedisStore) keys(group, key string) []string {
	return s.appendKeys(make([]string, 0, 2), group, key)
}

// appendKeys appends the claim and counter keys of group's key to dst.
// It runs twice per consumed message (claim, complete), so it hashes
// from a buffer on the stack and makes both names in one string.
func (s *RedisStore) appendKeys(dst []string, group, key string) []string {
	var in, out [256]byte
	b := strconv.AppendInt(in[:0], int64(len(group)), 10)
	b = append(append(append(append(b, ':'), group...), ':'), key...)
	sum := sha256.Sum256(b)
	// "<prefix>{<tag>}:c<prefix>{<tag>}:n", cut in two.
	both := out[:0]
	for _, suffix := range []string{"}:c", "}:n"} {
		both = append(append(both, s.prefix...), '{')
		both = hex.AppendEncode(both, sum[:16])
		both = append(both, suffix...)
	}
	names := string(both)
	return append(dst, names[:len(names)/2], names[len(names)/2:])
}

// errForeign is a claim refused because the claim's or the counter's name
// holds a value the store did not write (claim scripts' outcome 4).
var errForeign = errors.New("idempotency: a value this store did not write is at the key's claim or counter name")

// errDoneToken refuses a claim, completion or release whose token is the
// done marker's value: every other caller would read that claim as done,
// and that completion or release would match any done key (a release
// deleting its done marker lets a duplicate through).
var errDoneToken = errors.New(`idempotency: token "done" is the Redis store's done marker`)

// Claim implements [Store].
func (s *RedisStore) Claim(ctx context.Context, group, key, token string, lease time.Duration) (Outcome, int, error) {
	if token == "done" {
		return 0, 0, errDoneToken
	}
	keys := s.keys(group, key)
	if s.legacy && !strings.ContainsAny(group, ":{}") {
		// The old layout is ambiguous for groups holding its separator
		// or a hash tag (another key's name); those are not looked up.
		keys = append(keys, s.prefix+group+":"+key)
	}
	r, err := s.run(ctx, claimScript, keys, token, millis(lease), millis(counterTTL)).Int64Slice()
	if err != nil {
		return 0, 0, err
	}
	if len(r) != 2 {
		return 0, 0, errors.New("unexpected claim script reply")
	}
	if r[0] == 4 {
		return 0, 0, errForeign
	}
	return Outcome(r[0]), int(r[1]), nil
}

// Complete implements [Store].
func (s *RedisStore) Complete(ctx context.Context, group, key, token string, retain time.Duration) error {
	if token == "done" {
		return errDoneToken
	}
	return s.run1(ctx, completeScript, s.keys(group, key), token, millis(retain))
}

// Release implements [Store].
func (s *RedisStore) Release(ctx context.Context, group, key, token string, forget bool) error {
	if token == "done" {
		return errDoneToken
	}
	f := "0"
	if forget {
		f = "1"
	}
	return s.run1(ctx, releaseScript, s.keys(group, key), token, f)
}

func (s *RedisStore) run1(ctx context.Context, script *redis.Script, keys []string, args ...any) error {
	n, err := s.run(ctx, script, keys, args...).Int()
	if err != nil {
		return err
	}
	if n != 1 {
		return ErrLostClaim
	}
	return nil
}

// run evaluates script through the batcher: calls made at the same time by
// concurrent handlers share one pipelined round trip, the way a database's
// group commit shares one flush, and no caller flushes more than one
// batch (package combine). Each call still gets its own reply.
func (s *RedisStore) run(ctx context.Context, script *redis.Script, keys []string, args ...any) *redis.Cmd {
	c := &scriptCall{script: script, keys: keys, args: args}
	if !s.batch.Do(ctx, c) {
		// Gave up before any round trip carried it: not run.
		cmd := redis.NewCmd(ctx)
		cmd.SetErr(ctx.Err())
		return cmd
	}
	return c.cmd
}

type scriptCall struct {
	script *redis.Script
	keys   []string
	args   []any
	cmd    *redis.Cmd
}

// maxPipeline bounds the calls one round trip carries.
const maxPipeline = 128

// flush sends calls in one pipeline. Scripts the server does not know yet
// (NOSCRIPT) are retried one by one with their full source.
func flush(ctx context.Context, rdb redis.UniversalClient, calls []*scriptCall) {
	// The flusher serves other callers too: its own cancellation must not
	// fail their calls.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
	defer cancel()
	pipeline(ctx, rdb, calls)
}

// pipeline sends calls in one pipeline, setting each call's reply.
func pipeline(ctx context.Context, rdb redis.UniversalClient, calls []*scriptCall) {
	pipe := rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(calls))
	for i, c := range calls {
		cmds[i] = pipe.EvalSha(ctx, c.script.Hash(), c.keys, c.args...)
	}
	_, _ = pipe.Exec(ctx) // each command carries its own error
	for i, c := range calls {
		cmd := cmds[i]
		if err := cmd.Err(); err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			cmd = c.script.Run(ctx, rdb, c.keys, c.args...)
		}
		c.cmd = cmd
	}
}

// flushTimeout bounds one pipelined round trip.
const flushTimeout = 10 * time.Second
