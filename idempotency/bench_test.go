package idempotency_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

const benchWorkers = 16

// rate runs op n times over benchWorkers goroutines and returns ops/s.
func rate(b *testing.B, n int, op func(i int64) error) float64 {
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range benchWorkers {
		wg.Go(func() {
			for i := next.Add(1); i <= int64(n); i = next.Add(1) {
				if err := op(i); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return float64(n) / time.Since(start).Seconds()
}

// BenchmarkMySQLGuardVsBound compares the claim guard (a claim and a
// complete per key: two commits) with the database's own bound at the same
// concurrency, half its rate of single-row INSERT commits; and the
// transactional guard with the business transaction alone. Sides
// alternate in rounds within one run; the ratios are reported.
func BenchmarkMySQLGuardVsBound(b *testing.B) {
	ctx := context.Background()
	db := testenv.MySQL(b)
	db.SetMaxOpenConns(benchWorkers)
	db.SetMaxIdleConns(benchWorkers)
	db.MustExec("CREATE TABLE scratch (id BIGINT PRIMARY KEY, v VARCHAR(64) NOT NULL)")
	db.MustExec("CREATE TABLE business (id VARCHAR(64) PRIMARY KEY, amount INT NOT NULL)")
	store, err := idempotency.NewMySQLStore(db)
	if err != nil {
		b.Fatal(err)
	}
	guard, err := idempotency.NewGuard("bench", store)
	if err != nil {
		b.Fatal(err)
	}
	txGuard, err := idempotency.NewTxGuard(db, "bench-tx")
	if err != nil {
		b.Fatal(err)
	}
	var seq atomic.Int64
	insert := func(int64) error {
		_, err := db.ExecContext(ctx, "INSERT INTO scratch (id, v) VALUES (?, 'x')", seq.Add(1))
		return err
	}
	guarded := func(int64) error {
		_, err := guard.Do(ctx, fmt.Sprint("k-", seq.Add(1)), func(context.Context) error { return nil })
		return err
	}
	business := func(tx *sqlx.Tx) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO business (id, amount) VALUES (?, 1)", fmt.Sprint("b-", seq.Add(1)))
		return err
	}
	plainTx := func(int64) error {
		tx, err := db.BeginTxx(ctx, nil)
		if err != nil {
			return err
		}
		if err := business(tx); err != nil {
			tx.Rollback()
			return err
		}
		return tx.Commit()
	}
	txGuarded := func(int64) error {
		_, err := txGuard.Do(ctx, fmt.Sprint("t-", seq.Add(1)), func(_ context.Context, tx *sqlx.Tx) error { return business(tx) })
		return err
	}
	b.ResetTimer()
	var r [4]float64
	const round = 1000
	rounds := 0
	for done := 0; done < b.N; done += round {
		n := min(round, b.N-done)
		for i, op := range []func(int64) error{insert, guarded, plainTx, txGuarded} {
			r[i] += rate(b, n, op)
		}
		rounds++
	}
	b.StopTimer()
	for i := range r {
		r[i] /= float64(rounds)
	}
	b.ReportMetric(r[0]/2, "bound_keys/s")
	b.ReportMetric(r[1], "guard_keys/s")
	b.ReportMetric(r[1]/(r[0]/2), "guard/bound")
	b.ReportMetric(r[2], "tx_alone/s")
	b.ReportMetric(r[3], "tx_guard/s")
	b.ReportMetric(r[3]/r[2], "txguard/tx")
}

// BenchmarkRedisGuard measures the Redis guard alone (a claim script and a
// complete script per key) against plain SET NX at the same concurrency,
// on REDIS_ADDR.
func BenchmarkRedisGuard(b *testing.B) {
	ctx := context.Background()
	rdb := testenv.Redis(b)
	prefix := testenv.Name(b, "bench") + ":"
	store, err := idempotency.NewRedisStore(rdb, prefix)
	if err != nil {
		b.Fatal(err)
	}
	guard, err := idempotency.NewGuard("bench", store)
	if err != nil {
		b.Fatal(err)
	}
	var seq atomic.Int64
	setnx := func(int64) error {
		return rdb.SetNX(ctx, fmt.Sprint(prefix, "nx-", seq.Add(1)), "1", time.Minute).Err()
	}
	guarded := func(int64) error {
		_, err := guard.Do(ctx, fmt.Sprint("k-", seq.Add(1)), func(context.Context) error { return nil })
		return err
	}
	b.ResetTimer()
	var r [2]float64
	rounds := 0
	for done := 0; done < b.N; done += 2000 {
		n := min(2000, b.N-done)
		r[0] += rate(b, n, setnx)
		r[1] += rate(b, n, guarded)
		rounds++
	}
	b.StopTimer()
	b.ReportMetric(r[0]/float64(rounds), "setnx/s")
	b.ReportMetric(r[1]/float64(rounds), "guard_keys/s")
	b.ReportMetric(r[1]/r[0], "guard/setnx")
}
