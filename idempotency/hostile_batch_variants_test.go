package idempotency_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

// TestHostileBatchUnderDSNVariantsAndSQLModes runs the batch claim and
// completion (multi-row INSERT ... ODKU, one UPDATE, the marked SELECT)
// through every DSN variant and through sessions with unusual sql_modes,
// with duplicates, an expired claim, a lost claim, long and binary keys.
func TestHostileBatchUnderDSNVariantsAndSQLModes(t *testing.T) {
	t.Parallel()
	db := testenv.MySQL(t)
	vs := testenv.MySQLVariants(t, db)
	cfg, err := mysql.ParseDSN(testenv.MySQLDSN(t, db))
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"'TRADITIONAL'", "'ANSI'", "'NO_BACKSLASH_ESCAPES'", "'PAD_CHAR_TO_FULL_LENGTH,STRICT_ALL_TABLES'", "''"} {
		for _, interp := range []bool{false, true} {
			c := cfg.Clone()
			c.InterpolateParams = interp
			c.Params = map[string]string{"sql_mode": mode}
			vdb, err := sqlx.Open("mysql", c.FormatDSN())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { vdb.Close() })
			vs = append(vs, testenv.Variant{Name: fmt.Sprintf("sql_mode %s interpolate %v", mode, interp), DB: vdb})
		}
	}
	ctx := context.Background()
	long := strings.Repeat("k", 5000)
	bin := "\x00\xff'\"\\%_\n"
	for _, v := range vs {
		t.Run(v.Name, func(t *testing.T) {
			group := testenv.Name(t, "g")
			g := mysqlGuard(t, v.DB, group, idempotency.WithLease(time.Second))
			other := mysqlGuard(t, v.DB, group, idempotency.WithLease(time.Minute))
			stale := claimKey(t, g, "stale")
			if stale.Outcome != idempotency.Acquired {
				t.Fatal(stale.Outcome)
			}
			time.Sleep(1200 * time.Millisecond)
			keys := []string{"a", long, "a", bin, "stale", "A", bin}
			cl, errs := g.ClaimBatch(ctx, keys)
			want := []idempotency.Outcome{idempotency.Acquired, idempotency.Acquired, idempotency.Busy, idempotency.Acquired,
				idempotency.Acquired, idempotency.Acquired, idempotency.Busy}
			for i := range keys {
				if errs[i] != nil {
					t.Fatalf("key %d: %v", i, errs[i])
				}
				if cl[i].Outcome != want[i] {
					t.Errorf("key %d (%.10q): %v, want %v", i, keys[i], cl[i].Outcome, want[i])
				}
			}
			if cl[4].Attempt != 2 {
				t.Errorf("expired key taken over with attempt %d, want 2", cl[4].Attempt)
			}
			// "A" is taken over by another consumer after its lease: its
			// completion must be refused, the others' must succeed.
			time.Sleep(1100 * time.Millisecond)
			if c := claimKey(t, other, "A"); c.Outcome != idempotency.Acquired {
				t.Fatalf("take-over: %v", c.Outcome)
			}
			done := []*idempotency.Claim{cl[0], cl[1], cl[3], cl[4], cl[5]}
			cerrs := g.CompleteBatch(ctx, done)
			for i, err := range cerrs {
				if i == 4 {
					if !errors.Is(err, idempotency.ErrLostClaim) {
						t.Errorf("completion of a taken-over claim: %v, want ErrLostClaim", err)
					}
					continue
				}
				if err != nil {
					t.Errorf("completion %d: %v", i, err)
				}
			}
			again, errs := other.ClaimBatch(ctx, []string{"a", long, bin, "stale"})
			for i, c := range again {
				if errs[i] != nil || c.Outcome != idempotency.Done {
					t.Errorf("after completion key %d: %v %v, want Done", i, c, errs[i])
				}
			}
		})
	}
}
