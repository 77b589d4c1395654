package idempotency

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The batch scripts read what they can in one MGET per chunk of keys
// rather than one GET per key: each command a script calls costs the
// server about as much again as the command's own work.
var (
	// claimBatchScript is claimScript over several keys, in order (a new
	// key: two writes, each set only if absent). KEYS holds stride keys
	// per item: the claim, the counter unless the counter TTL is 0, then
	// the legacy marker if stride has room for it; ARGV is lease, counter
	// TTL, stride, then one token per item. It returns outcome and count
	// per item, flattened. No item writes a legacy marker, so they are
	// all read first. A counter TTL of 0 claims without counting
	// (ClaimUncounted): the counter is neither named nor touched, and the
	// count returned is 0. A key held with the item's own token is
	// Acquired, and a foreign value is outcome 4, as in claimScript: it
	// fails that item only.
	claimBatchScript = redis.NewScript(mgetLua + `
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
return out`)
	// completeBatchScript is completeScript over several keys, in order.
	// KEYS holds claim and counter per item; ARGV is the retention, then
	// one token per item. It returns 1 (done) or 0 (lost) per item. The
	// claims are read first; one this script has already completed (a
	// key twice in the batch) reads as "done", as a GET would (the token
	// "done" is refused before the script). The completed items' counters
	// go in one DEL per 256 at the end: the script's effect is the same,
	// and a call per key cost the server about as much as the SET.
	completeBatchScript = redis.NewScript(mgetLua + `
local n = #ARGV - 1
local written = {}
local claims = mget(1, 2, n)
local counters = {}
local out = {}
for i = 1, n do
  local k = KEYS[2 * i - 1]
  if (written[k] or claims[i]) == ARGV[1 + i] then
    redis.call('SET', k, 'done', 'PX', ARGV[1])
    counters[#counters + 1] = KEYS[2 * i]
    written[k] = 'done'
    out[i] = 1
  else
    out[i] = 0
  end
end
for lo = 1, #counters, 256 do
  redis.call('DEL', unpack(counters, lo, math.min(#counters, lo + 255)))
end
return out`)
)

// mgetLua defines mget(first, stride, n): the values of KEYS[first],
// KEYS[first+stride], ... (n keys), false where absent, read in chunks of
// 256 keys (unpack has a bounded stack).
const mgetLua = `
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
`

// groups splits item indexes into the sets one script may touch
// together: on a single Redis every item at once; on a Cluster (or any
// other client), where each business key hashes to its own slot, one set
// per distinct key (a key's items stay together and in order).
func (s *RedisStore) groups(items []KeyToken) [][]int {
	if len(items) == 0 {
		return nil
	}
	if _, single := s.rdb.(*redis.Client); single {
		all := make([]int, len(items))
		for i := range all {
			all[i] = i
		}
		return [][]int{all}
	}
	var out [][]int
	at := make(map[string]int, len(items))
	for i, it := range items {
		if g, ok := at[it.Key]; ok {
			out[g] = append(out[g], i)
			continue
		}
		at[it.Key] = len(out)
		out = append(out, []int{i})
	}
	return out
}

// ClaimBatch implements [BatchStore]: on a single Redis one script claims
// every key, sharing the round trip with other calls in flight; on a
// Cluster one script per key, all in one pipeline (one round trip per
// node).
func (s *RedisStore) ClaimBatch(ctx context.Context, group string, items []KeyToken, lease time.Duration) []ClaimResult {
	return withoutToken(items, "done", errDoneToken, claimRefused, func(items []KeyToken) []ClaimResult {
		return s.claimBatch(ctx, group, items, lease, counterTTL)
	})
}

// ClaimUncounted implements [UncountedClaimer]: ClaimBatch without the
// counter's write.
func (s *RedisStore) ClaimUncounted(ctx context.Context, group string, items []KeyToken, lease time.Duration) []ClaimResult {
	return withoutToken(items, "done", errDoneToken, claimRefused, func(items []KeyToken) []ClaimResult {
		return s.claimBatch(ctx, group, items, lease, 0)
	})
}

// claimBatch claims items, counting their attempts in counters kept for
// counterTTL, or not at all when it is 0.
func (s *RedisStore) claimBatch(ctx context.Context, group string, items []KeyToken, lease, counterTTL time.Duration) []ClaimResult {
	counted := counterTTL != 0
	stride := 1 // the claim
	if counted {
		stride++ // its counter
	}
	legacy := s.legacy && !strings.ContainsAny(group, ":{}")
	if legacy {
		stride++
	}
	results := make([]ClaimResult, len(items))
	groups := s.groups(items)
	calls := make([]*scriptCall, len(groups))
	for g, idx := range groups {
		keys := make([]string, 0, stride*len(idx))
		args := make([]any, 0, 3+len(idx))
		args = append(args, millis(lease), millis(counterTTL), stride)
		for _, i := range idx {
			keys = s.appendKeys(keys, group, items[i].Key)
			if !counted {
				keys = keys[:len(keys)-1] // the counter's name
			}
			if legacy {
				keys = append(keys, s.prefix+group+":"+items[i].Key)
			}
			args = append(args, items[i].Token)
		}
		calls[g] = &scriptCall{script: claimBatchScript, keys: keys, args: args}
	}
	if len(calls) > 0 {
		s.runAll(ctx, calls)
	}
	for g, idx := range groups {
		r, err := calls[g].cmd.Int64Slice()
		if err == nil && len(r) != 2*len(idx) {
			err = errors.New("unexpected claim script reply")
		}
		for j, i := range idx {
			switch {
			case err != nil:
				results[i].Err = err
			case r[2*j] == 4:
				results[i].Err = errForeign
			default:
				results[i] = ClaimResult{Outcome: Outcome(r[2*j]), Attempts: int(r[2*j+1])}
			}
		}
	}
	return results
}

// CompleteBatch implements [BatchStore], split as ClaimBatch is.
func (s *RedisStore) CompleteBatch(ctx context.Context, group string, items []KeyToken, retain time.Duration) []error {
	return withoutToken(items, "done", errDoneToken, completionRefused, func(items []KeyToken) []error {
		return s.completeBatch(ctx, group, items, retain)
	})
}

func (s *RedisStore) completeBatch(ctx context.Context, group string, items []KeyToken, retain time.Duration) []error {
	errs := make([]error, len(items))
	groups := s.groups(items)
	calls := make([]*scriptCall, len(groups))
	for g, idx := range groups {
		keys := make([]string, 0, 2*len(idx))
		args := make([]any, 0, 1+len(idx))
		args = append(args, millis(retain))
		for _, i := range idx {
			keys = s.appendKeys(keys, group, items[i].Key)
			args = append(args, items[i].Token)
		}
		calls[g] = &scriptCall{script: completeBatchScript, keys: keys, args: args}
	}
	if len(calls) > 0 {
		s.runAll(ctx, calls)
	}
	for g, idx := range groups {
		r, err := calls[g].cmd.Int64Slice()
		if err == nil && len(r) != len(idx) {
			err = errors.New("unexpected complete script reply")
		}
		for j, i := range idx {
			switch {
			case err != nil:
				errs[i] = err
			case r[j] != 1:
				errs[i] = ErrLostClaim
			}
		}
	}
	return errs
}

// runAll runs calls, each getting its own reply: one call through the
// batcher (shared with the calls of other goroutines), several in one
// pipeline of their own.
func (s *RedisStore) runAll(ctx context.Context, calls []*scriptCall) {
	if len(calls) == 1 {
		calls[0].cmd = s.run(ctx, calls[0].script, calls[0].keys, calls[0].args...)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, flushTimeout)
	defer cancel()
	pipeline(ctx, s.rdb, calls)
}
