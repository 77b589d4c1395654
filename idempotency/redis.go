package idempotency

import (
	"context"
	"errors"
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
	r, err := claimScript.Run(ctx, s.rdb, s.keys(group, key), token, lease.Milliseconds(), counterTTL.Milliseconds()).Int64Slice()
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
	n, err := script.Run(ctx, s.rdb, keys, args...).Int()
	if err != nil {
		return err
	}
	if n != 1 {
		return ErrLostClaim
	}
	return nil
}
