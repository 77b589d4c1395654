package idempotency_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/sqldb"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

// forgeDoneMarker is a business key that, written into a statement
// through the driver's interpolation under a multibyte charset whose lead
// byte is lead, closes its string, ends its row, adds a done marker for
// victim in group and comments out the rest.
func forgeDoneMarker(lead, group, victim, junk string) string {
	h := sha256.Sum256([]byte(victim))
	row := func(g string, hash []byte, status int) string {
		return fmt.Sprintf("(0x%s, 0x%s, 0x%s, %d, 0x%s, 1, UTC_TIMESTAMP(6) + INTERVAL 1 DAY, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))",
			hex.EncodeToString([]byte(g)), hex.EncodeToString(hash), hex.EncodeToString([]byte("x")), status,
			hex.EncodeToString([]byte("t")))
	}
	return lead + "', 1, 0x74, 1, UTC_TIMESTAMP(6) + INTERVAL 1 DAY, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6)), " +
		row(group, h[:], 2) + " -- " + junk
}

// TestKeyPastTheBudgetCannotForgeDoneMarkers pins a fix found by hostile testing. What it guarded
// against: the Statement doc says no
// value can change the statement "in any sql_mode or character set". A
// key written past sqldb.InlineBudget goes as an argument, and with
// interpolateParams=true (which the driver accepts with charset=gbk,
// sjis, big5: it refuses only unsafe collation= values) the driver
// escapes it with backslashes that the multibyte lead byte swallows. One
// hostile message key then records another key as done: its message is
// acknowledged unrun. Shown through a batch whose other keys (each within
// RocketMQ's 32 KiB of properties) use up the budget, and through a
// single claim of a key over the budget (a custom key function).
func TestKeyPastTheBudgetCannotForgeDoneMarkers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.MySQL(t)
	for _, cs := range []struct{ charset, lead string }{{"gbk", "\xbf"}, {"sjis", "\x81"}, {"big5", "\xa1"}} {
		t.Run(cs.charset, func(t *testing.T) {
			gdb := testenv.MySQLWith(t, db, testenv.Interpolated(cs.charset))
			group := testenv.Name(t, "G")
			g := mysqlGuard(t, gdb, group)
			// A batch: 17 keys of 31 KiB fill the budget; the hostile key
			// is ground until it sorts last by hash.
			var keys []string
			var top []byte
			for i := range 17 {
				k := fmt.Sprint(i, strings.Repeat("k", 31<<10))
				keys = append(keys, k)
				if h := sqldb.Hash(k); bytes.Compare(h, top) > 0 {
					top = h
				}
			}
			var hostile string
			for i := 0; ; i++ {
				// Junk after the comment makes it larger than what the
				// budget has left: it goes as an argument.
				hostile = forgeDoneMarker(cs.lead, group, "victim-batch", fmt.Sprint(i, strings.Repeat("j", 31<<10)))
				if bytes.Compare(sqldb.Hash(hostile), top) > 0 {
					break
				}
			}
			_, errs := g.ClaimBatch(ctx, append(keys, hostile))
			for _, err := range errs {
				if err != nil {
					t.Logf("batch claim error: %.200s", err)
				}
			}
			// A single claim of a key over the budget.
			_, err := g.Claim(ctx, forgeDoneMarker(cs.lead, group, "victim-single", strings.Repeat("j", sqldb.InlineBudget)))
			if err != nil {
				t.Logf("single claim error: %.200s", err)
			}
			for _, victim := range []string{"victim-batch", "victim-single"} {
				if c := claimKey(t, mysqlGuard(t, db, group), victim); c.Outcome != idempotency.Acquired {
					t.Errorf("%s: a key never claimed is %v: another key's claim recorded it", victim, c.Outcome)
				}
			}
		})
	}
}

// TestClaimBatchMatchesOneByOneHostile5: the same sequence of batches and
// single calls, through ClaimBatch on the MySQL store and one Claim at a
// time, gives the same outcomes and attempts: new keys only (the plain
// INSERT), a key twice, keys differing in case and trailing space, held,
// done, released, forgotten and expired keys, and the fencing of a stale
// claim after a take-over.
func TestClaimBatchMatchesOneByOneHostile5(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.MySQL(t)
	const lease = 2 * time.Second // long enough for the steps before it ends, on a loaded machine
	batch := mysqlGuard(t, db, testenv.Name(t, "B"), idempotency.WithLease(lease))
	single := mysqlGuard(t, db, testenv.Name(t, "S"), idempotency.WithLease(lease))
	claimAll := func(g *idempotency.Guard, keys []string, one bool) ([]*idempotency.Claim, []error) {
		if !one {
			return g.ClaimBatch(ctx, keys)
		}
		cs, errs := make([]*idempotency.Claim, len(keys)), make([]error, len(keys))
		for i, k := range keys {
			cs[i], errs[i] = g.Claim(ctx, k)
		}
		return cs, errs
	}
	type outcome struct {
		o       idempotency.Outcome
		attempt int
		err     string
	}
	summary := func(cs []*idempotency.Claim, errs []error) []outcome {
		out := make([]outcome, len(cs))
		for i := range cs {
			switch {
			case errs[i] != nil:
				out[i].err = "error"
			case cs[i].Outcome == idempotency.Acquired:
				out[i] = outcome{o: cs[i].Outcome, attempt: cs[i].Attempt}
			default:
				out[i].o = cs[i].Outcome
			}
		}
		return out
	}
	type run struct {
		claims [2][]*idempotency.Claim
	}
	step := func(name string, keys []string) run {
		t.Helper()
		var r run
		var got [2][]outcome
		for i, g := range []*idempotency.Guard{batch, single} {
			cs, errs := claimAll(g, keys, i == 1)
			r.claims[i] = cs
			got[i] = summary(cs, errs)
		}
		if !slices.Equal(got[0], got[1]) {
			t.Errorf("%s: batch %v, one by one %v", name, got[0], got[1])
		}
		return r
	}
	fresh := []string{"a", "A", "a ", " a", "b", "c", "d", "e"}
	r1 := step("new keys", fresh)
	step("all held", fresh)
	step("a key twice, new", []string{"f", "f", "g"})
	// Settle some: a done, A released, "a " forgotten; the rest left to
	// expire.
	for i := range 2 {
		cs := r1.claims[i]
		if err := cs[0].Complete(ctx); err != nil {
			t.Fatal(err)
		}
		if err := cs[1].Release(ctx); err != nil {
			t.Fatal(err)
		}
		if err := cs[2].Forget(ctx); err != nil {
			t.Fatal(err)
		}
	}
	step("done, released, forgotten, held", append(slices.Clone(fresh), "h"))
	time.Sleep(lease + 300*time.Millisecond)
	r2 := step("after the leases ended", append(slices.Clone(fresh), "a ", "i"))
	// The first claims of " a" .. "e" were taken over: stale.
	for i, g := range []*idempotency.Guard{batch, single} {
		errs := g.CompleteBatch(ctx, r1.claims[i][3:])
		for j, err := range errs {
			if !errors.Is(err, idempotency.ErrLostClaim) {
				t.Errorf("guard %d: stale claim %q completed: %v", i, r1.claims[i][3+j].Outcome, err)
			}
		}
	}
	for i, g := range []*idempotency.Guard{batch, single} {
		var acquired []*idempotency.Claim
		for _, c := range r2.claims[i] {
			if c != nil && c.Outcome == idempotency.Acquired {
				acquired = append(acquired, c)
			}
		}
		for j, err := range g.CompleteBatch(ctx, acquired) {
			if err != nil {
				t.Errorf("guard %d: complete claim %d: %v", i, j, err)
			}
		}
	}
	step("all done", append(slices.Clone(fresh), "i"))
}

// TestConcurrentOverlappingBatchesHostile5: goroutines claim overlapping
// batches of new keys at once (the plain INSERT of one fails as a whole on
// a key another inserted; then the fallback). Each key is acquired by
// exactly one claim, with attempt 1, and no claim errs. After the leases
// end, the same again takes each key over exactly once, with attempt 2;
// the first holders' completions are refused.
func TestConcurrentOverlappingBatchesHostile5(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.MySQL(t)
	const lease = 2 * time.Second // longer than a round of 8 overlapping batches, on a loaded machine
	g := mysqlGuard(t, db, testenv.Name(t, "G"), idempotency.WithLease(lease))
	const workers, rounds, width = 8, 3, 12
	claimRound := func(round, wantAttempt int) [][]*idempotency.Claim {
		out := make([][]*idempotency.Claim, workers)
		keysOf := make([][]string, workers)
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				keys := make([]string, width)
				for i := range keys {
					keys[i] = fmt.Sprintf("r%d-k%d", round, (w*5+i*7)%(2*width)) // overlapping windows, some twice
				}
				cs, errs := g.ClaimBatch(ctx, keys)
				for i, err := range errs {
					if err != nil {
						t.Errorf("worker %d key %s: %v", w, keys[i], err)
					}
				}
				out[w], keysOf[w] = cs, keys
			})
		}
		wg.Wait()
		acquired := map[string]int{}
		for w, cs := range out {
			for i, c := range cs {
				if c == nil {
					continue
				}
				key := keysOf[w][i]
				if c.Outcome == idempotency.Acquired {
					acquired[key]++
					if c.Attempt != wantAttempt {
						t.Errorf("round %d: %s acquired with attempt %d, want %d", round, key, c.Attempt, wantAttempt)
					}
				} else if c.Outcome != idempotency.Busy {
					t.Errorf("round %d: %s is %v", round, key, c.Outcome)
				}
			}
		}
		for k, n := range acquired {
			if n != 1 {
				t.Errorf("round %d: %s acquired %d times", round, k, n)
			}
		}
		if len(acquired) != 2*width {
			t.Errorf("round %d: %d keys acquired, want %d", round, len(acquired), 2*width)
		}
		return out
	}
	for round := range rounds {
		first := claimRound(round, 1)
		time.Sleep(lease + 200*time.Millisecond)
		second := claimRound(round, 2)
		for _, cs := range first {
			for _, err := range g.CompleteBatch(ctx, acquiredOf(cs)) {
				if !errors.Is(err, idempotency.ErrLostClaim) {
					t.Errorf("round %d: a claim taken over completed: %v", round, err)
				}
			}
		}
		for _, cs := range second {
			acquired := acquiredOf(cs)
			for j, err := range g.CompleteBatch(ctx, acquired) {
				if err != nil && !lostAfterItsLease(err, acquired[j]) {
					t.Errorf("round %d: complete: %v", round, err)
				}
			}
		}
	}
}

// lostAfterItsLease reports whether err is c's claim lost because its
// lease ran out before the call (a loaded machine can stall a test that
// long): not a store's fault.
func lostAfterItsLease(err error, c *idempotency.Claim) bool {
	return errors.Is(err, idempotency.ErrLostClaim) && time.Now().After(c.Deadline())
}

func acquiredOf(cs []*idempotency.Claim) []*idempotency.Claim {
	var out []*idempotency.Claim
	for _, c := range cs {
		if c != nil && c.Outcome == idempotency.Acquired {
			out = append(out, c)
		}
	}
	return out
}

// claimKeyOf reads a claim's key through its String or, failing that, its
// printed form.
// TestAttemptsCountAcrossConcurrentTakeOversHostile5: claimers race on
// one key, each abandoning its claim (lease expiry) or releasing it; the
// attempts handed out are 1, 2, 3, ... with no number twice, on every
// store, through Claim and ClaimBatch alike.
func TestAttemptsCountAcrossConcurrentTakeOversHostile5(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			if b.name == "miniredis" {
				t.Skip("time moves only by FastForward")
			}
			ctx := context.Background()
			g := newGuard(t, b.store(t), idempotency.WithLease(300*time.Millisecond))
			var mu sync.Mutex
			var attempts []int
			var wg sync.WaitGroup
			deadline := time.Now().Add(3 * time.Second)
			for w := range 6 {
				wg.Go(func() {
					for i := 0; time.Now().Before(deadline); i++ {
						var c *idempotency.Claim
						var err error
						if (w+i)%2 == 0 {
							c, err = g.Claim(ctx, "k")
						} else {
							var cs []*idempotency.Claim
							var errs []error
							cs, errs = g.ClaimBatch(ctx, []string{"k", fmt.Sprint("other-", w, "-", i)})
							c, err = cs[0], errs[0]
						}
						if err != nil {
							t.Error(err)
							return
						}
						if c.Outcome != idempotency.Acquired {
							time.Sleep(5 * time.Millisecond)
							continue
						}
						mu.Lock()
						attempts = append(attempts, c.Attempt)
						mu.Unlock()
						if i%3 == 0 {
							if err := c.Release(ctx); err != nil && !lostAfterItsLease(err, c) {
								t.Error(err)
							}
						} // else: abandoned, expires
					}
				})
			}
			wg.Wait()
			slices.Sort(attempts)
			for i, a := range attempts {
				if a != i+1 {
					t.Fatalf("attempts handed out %v: want 1..%d, each once", attempts, len(attempts))
				}
			}
			if len(attempts) < 3 {
				t.Fatalf("only %d claims acquired", len(attempts))
			}
		})
	}
}

// TestKeysAtTheBlobLimitHostile5: a key of 65,535 bytes (biz_key's BLOB
// limit) is claimed and deduplicated. One byte more is refused with
// ErrKeyTooLong in a strict session and a loose one alike (which would
// otherwise store it cut), by Claim, TxGuard.Do and ClaimBatch, where it
// fails that key alone: the other messages of the batch are innocent.
func TestKeysAtTheBlobLimitHostile5(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.MySQL(t)
	limit := strings.Repeat("L", 65535)
	over := limit + "O"
	loose := testenv.MySQLWith(t, db, func(c *mysql.Config) { c.Params = map[string]string{"sql_mode": "''"} })
	for name, db := range map[string]*sqlx.DB{"strict": db, "loose": loose} {
		g := mysqlGuard(t, db, testenv.Name(t, "G"))
		c := claimKey(t, g, limit)
		if c.Outcome != idempotency.Acquired || c.Complete(ctx) != nil {
			t.Fatalf("%s: key of 65535 bytes: %v", name, c.Outcome)
		}
		if c := claimKey(t, g, limit); c.Outcome != idempotency.Done {
			t.Fatalf("%s: key of 65535 bytes again: %v, want Done", name, c.Outcome)
		}
		if _, err := g.Claim(ctx, over); !errors.Is(err, idempotency.ErrKeyTooLong) || len(err.Error()) > 300 {
			t.Errorf("%s: Claim of 65536 bytes: %.300v, want a short ErrKeyTooLong", name, err)
		}
		tg, err := idempotency.NewTxGuard(db, testenv.Name(t, "T"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tg.Do(ctx, over, func(context.Context, *sqlx.Tx) error { return nil }); !errors.Is(err, idempotency.ErrKeyTooLong) {
			t.Errorf("%s: TxGuard.Do of 65536 bytes: %.300v, want ErrKeyTooLong", name, err)
		}
		cs, errs := g.ClaimBatch(ctx, []string{"innocent-1", over, "innocent-2"})
		if !errors.Is(errs[1], idempotency.ErrKeyTooLong) {
			t.Errorf("%s: batch: the long key got %.300v, want ErrKeyTooLong", name, errs[1])
		}
		for _, i := range []int{0, 2} {
			if errs[i] != nil || cs[i].Outcome != idempotency.Acquired {
				t.Errorf("%s: batch with one oversized key: key %d got %.60v (one Claim per key acquires it)", name, i, errs[i])
			}
		}
	}
}

// TestValuesPastTheBudgetUnderSessionVariantsHostile5: keys of every byte
// that take both paths of the statement (hex literals, then arguments) in
// one batch, through charsets (without interpolation), interpolation
// with NO_BACKSLASH_ESCAPES, ANSI_QUOTES, a non-strict session, another
// character_set_connection and time zone, clientFoundRows: claimed,
// busy, completed, done, exactly; TxGuard too.
func TestValuesPastTheBudgetUnderSessionVariantsHostile5(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.MySQL(t)
	variants := map[string]func(*mysql.Config){
		"gbk":     func(c *mysql.Config) { c.Params = map[string]string{"charset": "gbk"} },
		"sjis":    func(c *mysql.Config) { c.Params = map[string]string{"charset": "sjis"} },
		"latin1":  func(c *mysql.Config) { c.Params = map[string]string{"charset": "latin1"} },
		"connlat": func(c *mysql.Config) { c.Params = map[string]string{"character_set_connection": "latin1"} },
		"nbe+interpolate": func(c *mysql.Config) {
			c.InterpolateParams = true
			c.Params = map[string]string{"sql_mode": "'NO_BACKSLASH_ESCAPES,STRICT_ALL_TABLES'"}
		},
		"ansi+interpolate": func(c *mysql.Config) {
			c.InterpolateParams = true
			c.Params = map[string]string{"sql_mode": "'ANSI_QUOTES,ANSI'"}
		},
		"nonstrict": func(c *mysql.Config) { c.Params = map[string]string{"sql_mode": "''"} },
		"tz+found": func(c *mysql.Config) {
			c.ClientFoundRows = true
			c.Loc = time.Local
			c.Params = map[string]string{"time_zone": "'+13:00'"}
		},
	}
	var all []byte
	for i := range 256 {
		all = append(all, byte(i))
	}
	for name, mutate := range variants {
		t.Run(name, func(t *testing.T) {
			vdb := testenv.MySQLWith(t, db, mutate)
			group := testenv.Name(t, "G") + "'\"\\`"
			g := mysqlGuard(t, vdb, group)
			var keys []string
			for i := range 10 {
				keys = append(keys, fmt.Sprint(i, "'\\\"", strings.Repeat(string(all), 60<<10/256)))
			}
			cs, errs := g.ClaimBatch(ctx, keys)
			for i := range keys {
				if errs[i] != nil || cs[i].Outcome != idempotency.Acquired || cs[i].Attempt != 1 {
					t.Fatalf("key %d: %.200v", i, errs[i])
				}
			}
			busy, errs := g.ClaimBatch(ctx, keys)
			for i := range keys {
				if errs[i] != nil || busy[i].Outcome != idempotency.Busy {
					t.Fatalf("key %d again: %.200v", i, errs[i])
				}
			}
			for i, err := range g.CompleteBatch(ctx, cs) {
				if err != nil {
					t.Fatalf("complete %d: %.200v", i, err)
				}
			}
			for _, k := range keys {
				if c := claimKey(t, mysqlGuard(t, db, group), k); c.Outcome != idempotency.Done {
					t.Fatalf("done key read back through the default session: %v", c.Outcome)
				}
			}
			tg, err := idempotency.NewTxGuard(vdb, group)
			if err != nil {
				t.Fatal(err)
			}
			for i, want := range []idempotency.Outcome{idempotency.Acquired, idempotency.Done} {
				o, err := tg.Do(ctx, keys[0]+"tx", func(context.Context, *sqlx.Tx) error { return nil })
				if err != nil || o != want {
					t.Fatalf("TxGuard delivery %d: %v %.200v", i, o, err)
				}
			}
		})
	}
}

// TestRedisCountersAndLegacyMarkersHostile5: the claim scripts' counter
// (set only if absent, else INCR) keeps a TTL on every path, counts across
// a lease that ended and a Release, restarts after Forget and Complete,
// and a done marker of the old layout wins over a live claim and over a
// free key, in single claims and batches alike, on real Redis.
func TestRedisCountersAndLegacyMarkersHostile5(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := testenv.Redis(t)
	prefix := testenv.Name(t, "idem") + ":"
	s, err := idempotency.NewRedisStore(rdb, idempotency.WithPrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	group := "g5"
	g, err := idempotency.NewGuard(group, s, idempotency.WithLease(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	// Key k's counter, found once: KEYS walks the whole server, which on a
	// busy one can take longer than a claim's lease.
	var counter string
	counterTTL := func() time.Duration {
		t.Helper()
		if counter == "" {
			names, err := rdb.Keys(ctx, prefix+"{*}:n").Result()
			if err != nil || len(names) != 1 {
				t.Fatalf("counters %v, %v", names, err)
			}
			counter = names[0]
		}
		d, err := rdb.PTTL(ctx, counter).Result()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	attempt := func(batch bool, want int) *idempotency.Claim {
		t.Helper()
		var c *idempotency.Claim
		if batch {
			cs, errs := g.ClaimBatch(ctx, []string{"k", "k"})
			if errs[0] != nil || errs[1] != nil || cs[1].Outcome != idempotency.Busy {
				t.Fatalf("batch: %v %v", cs, errs)
			}
			c = cs[0]
		} else {
			c = claimKey(t, g, "k")
		}
		if c.Outcome != idempotency.Acquired || c.Attempt != want {
			t.Fatalf("claim (batch %v): %v attempt %d, want attempt %d", batch, c.Outcome, c.Attempt, want)
		}
		if d := counterTTL(); d < 6*24*time.Hour {
			t.Fatalf("counter TTL %v after attempt %d", d, want)
		}
		return c
	}
	attempt(false, 1)
	time.Sleep(1200 * time.Millisecond) // past the lease
	c := attempt(true, 2)
	if err := c.Release(ctx); err != nil {
		t.Fatal(err)
	}
	c = attempt(false, 3)
	if err := c.Forget(ctx); err != nil {
		t.Fatal(err)
	}
	c = attempt(true, 1)
	time.Sleep(1200 * time.Millisecond) // past the lease
	c2 := attempt(false, 2)
	if err := c.Complete(ctx); !errors.Is(err, idempotency.ErrLostClaim) {
		t.Fatalf("stale complete: %v", err)
	}
	if err := c2.Complete(ctx); err != nil {
		t.Fatal(err)
	}
	// An old-layout done marker beside a live claim, and for a free key.
	claimKey(t, g, "live")
	if err := rdb.Set(ctx, prefix+group+":live", "done", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(ctx, prefix+group+":free", "done", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	cs, errs := g.ClaimBatch(ctx, []string{"live", "free", "new"})
	if errors.Join(errs...) != nil || cs[0].Outcome != idempotency.Done || cs[1].Outcome != idempotency.Done ||
		cs[2].Outcome != idempotency.Acquired || cs[2].Attempt != 1 {
		t.Fatalf("with old-layout markers: %v %v", cs, errs)
	}
	if c := claimKey(t, g, "free"); c.Outcome != idempotency.Done {
		t.Fatalf("single claim of an old-layout done key: %v", c.Outcome)
	}
}
