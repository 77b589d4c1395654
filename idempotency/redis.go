package idempotency

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisStore keeps claims in Redis: per key, a claim string holding the
// fencing token (expiring with the lease) or "done" (expiring with the
// retention), and an attempt counter beside it. Each method is one Lua
// script, atomic on the server. Keys are "<prefix><group>:<key>" and the
// same with ":n" appended; Redis Cluster users should put a hash tag in
// the prefix or group.
//
// Durability is Redis's: a failover that loses recent writes can lose done
// markers, letting a duplicate through. Use the MySQL store or [TxGuard]
// where that matters.
type RedisStore struct {
	rdb    redis.UniversalClient
	prefix string
	batch  scriptBatcher
}

// NewRedisStore returns a store on rdb whose keys start with prefix
// ("reliablemq:idem:" when empty).
func NewRedisStore(rdb redis.UniversalClient, prefix string) (*RedisStore, error) {
	if rdb == nil {
		return nil, errors.New("idempotency: nil redis client")
	}
	if prefix == "" {
		prefix = "reliablemq:idem:"
	}
	return &RedisStore{rdb: rdb, prefix: prefix}, nil
}

var (
	claimScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v == 'done' then return {2, 0} end
if v then return {3, 0} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local n = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return {1, n}`)
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

func (s *RedisStore) keys(group, key string) []string {
	k := s.prefix + group + ":" + key
	return []string{k, k + ":n"}
}

// Claim implements [Store].
func (s *RedisStore) Claim(ctx context.Context, group, key, token string, lease time.Duration) (Outcome, int, error) {
	r, err := s.run(ctx, claimScript, s.keys(group, key), token, lease.Milliseconds(), counterTTL.Milliseconds()).Int64Slice()
	if err != nil {
		return 0, 0, err
	}
	if len(r) != 2 {
		return 0, 0, errors.New("unexpected claim script reply")
	}
	return Outcome(r[0]), int(r[1]), nil
}

// Complete implements [Store].
func (s *RedisStore) Complete(ctx context.Context, group, key, token string, retain time.Duration) error {
	return s.run1(ctx, completeScript, s.keys(group, key), token, retain.Milliseconds())
}

// Release implements [Store].
func (s *RedisStore) Release(ctx context.Context, group, key, token string, forget bool) error {
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
// group commit shares one flush. Each call still gets its own reply.
func (s *RedisStore) run(ctx context.Context, script *redis.Script, keys []string, args ...any) *redis.Cmd {
	return s.batch.do(ctx, s.rdb, &scriptCall{script: script, keys: keys, args: args})
}

type scriptCall struct {
	script *redis.Script
	keys   []string
	args   []any
	cmd    *redis.Cmd
	done   chan struct{}
}

// scriptBatcher pipelines concurrent script calls: a caller that finds no
// flush in progress flushes everything queued, its own call included, and
// keeps flushing what queued meanwhile; the others wait for their reply.
type scriptBatcher struct {
	mu       sync.Mutex
	pending  []*scriptCall
	flushing bool
}

// maxPipeline bounds the calls one round trip carries.
const maxPipeline = 128

func (b *scriptBatcher) do(ctx context.Context, rdb redis.UniversalClient, c *scriptCall) *redis.Cmd {
	c.done = make(chan struct{})
	b.mu.Lock()
	b.pending = append(b.pending, c)
	if b.flushing {
		b.mu.Unlock()
		select {
		case <-c.done:
			return c.cmd
		case <-ctx.Done():
			// The reply will still be delivered to c; this caller stops
			// waiting. The outcome is unknown, as for any timed-out call.
			cmd := redis.NewCmd(ctx)
			cmd.SetErr(ctx.Err())
			return cmd
		}
	}
	b.flushing = true
	for len(b.pending) > 0 {
		calls := b.pending[:min(len(b.pending), maxPipeline)]
		b.pending = b.pending[len(calls):]
		b.mu.Unlock()
		flush(ctx, rdb, calls)
		b.mu.Lock()
	}
	b.flushing = false
	b.mu.Unlock()
	<-c.done
	return c.cmd
}

// flush sends calls in one pipeline. Scripts the server does not know yet
// (NOSCRIPT) are retried one by one with their full source.
func flush(ctx context.Context, rdb redis.UniversalClient, calls []*scriptCall) {
	// The flusher serves other callers too: its own cancellation must not
	// fail their calls.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
	defer cancel()
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
		close(c.done)
	}
}

// flushTimeout bounds one pipelined round trip.
const flushTimeout = 10 * time.Second
