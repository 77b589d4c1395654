package bench

import (
	"context"
	"crypto/sha256"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/idempotency"
)

// mysqlGuardPair: Guard.Do on the MySQL store (a claim and a completion,
// two commits) against half the rate of single-row INSERT+COMMITs, the
// database's bound for two commits in sequence; the bound's latencies and
// CPU times are doubled to match.
func (e *env) mysqlGuardPair(w int) pair {
	return pair{name: "MySQL guard", baseline: "DB bound: INSERT+COMMIT/2", subject: "Guard.Do (claim+complete)",
		target: 0.8, workers: w, run: func(ctx context.Context) (sample, sample, error) {
			store, err := idempotency.NewMySQLStore(e.db)
			if err != nil {
				return sample{}, sample{}, err
			}
			b, s, err := e.guardAgainst(ctx, w, store, fmt.Sprint("bench-", e.seq.Add(1)), e.insertScratch(ctx))
			b.rate, b.p50, b.p99 = b.rate/2, 2*b.p50, 2*b.p99
			for i := range b.cpu {
				b.cpu[i] *= 2
			}
			return b, s, err
		}}
}

// redisGuardPair: Guard.Do on the Redis store against one SET NX.
func (e *env) redisGuardPair(w int) pair {
	return pair{name: "Redis guard vs Redis's bound", baseline: "SET NX", subject: "Guard.Do (claim+complete)",
		workers: w, run: func(ctx context.Context) (sample, sample, error) {
			store, err := idempotency.NewRedisStore(e.rdb, idempotency.WithPrefix(fmt.Sprint("reliablemq_bench:", time.Now().UnixNano(), ":")))
			if err != nil {
				return sample{}, sample{}, err
			}
			setNX := func() error {
				return e.rdb.SetNX(ctx, fmt.Sprint("reliablemq_bench:nx:", time.Now().UnixNano(), ":", e.seq.Add(1)), "1", time.Minute).Err()
			}
			return e.guardAgainst(ctx, w, store, "bench-redis", setNX)
		}}
}

// guardAgainst measures base, then a Guard.Do with an empty effect on a
// fresh key per call.
func (e *env) guardAgainst(ctx context.Context, w int, store idempotency.Store, group string, base func() error) (sample, sample, error) {
	g, err := idempotency.NewGuard(group, store)
	if err != nil {
		return sample{}, sample{}, err
	}
	return e.both(w, base, func() error {
		_, err := g.Do(ctx, fmt.Sprint("k-", e.seq.Add(1)), func(context.Context) error { return nil })
		return err
	})
}

// txGuardPair: TxGuard.Do around a one-row business transaction against
// the same transaction alone.
func (e *env) txGuardPair(w int) pair {
	// The row by hand is measured in each run between the baseline and the
	// subject: the database's background work (purge, page flushes) after
	// a side lands in the next one, and the subject's predecessor then
	// writes as many rows as it does.
	var byHand sample
	return pair{name: "transactional guard", baseline: "business tx alone", subject: "TxGuard.Do",
		target: 0.72, workers: w, run: func(ctx context.Context) (sample, sample, error) { return e.runTxGuard(ctx, w, &byHand) },
		floor: func(context.Context) (sample, error) { return byHand, nil }, floorName: "raw, row by hand", floorWhole: true}
}

// txByHand runs the business transaction with the row TxGuard.Do adds
// written by hand: the same INSERT into the guard's table (its statement
// as the guard writes it, with a fresh key), then the business row, then
// COMMIT. The work a transactional guard cannot avoid beyond the
// business transaction's: one more statement, and its round trip.
func (e *env) txByHand(ctx context.Context, w int) (sample, error) {
	group := fmt.Sprint("bench-raw-", e.seq.Add(1))
	return e.parallel(e.cfg.Ops, w, func() error {
		key := fmt.Sprint("t-", e.seq.Add(1))
		h := sha256.Sum256([]byte(key))
		tx, err := e.db.BeginTxx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback() //nolint:errcheck // a no-op after Commit
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("INSERT INTO mq_consume_log (consumer_group, key_hash, biz_key, status, token,"+
			" attempts, expires_at, created_at, updated_at) VALUES ('%s', 0x%x, '%s', 2, '%s', 1,"+
			" UTC_TIMESTAMP(6) + INTERVAL 604800000000 MICROSECOND, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))",
			group, h[:], key, fmt.Sprintf("%032x", h[:16]))); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO business (id, amount) VALUES (?, 1)", fmt.Sprint("b-", e.seq.Add(1))); err != nil {
			return err
		}
		return tx.Commit()
	})
}

func (e *env) runTxGuard(ctx context.Context, w int, byHand *sample) (sample, sample, error) {
	g, err := idempotency.NewTxGuard(e.db, fmt.Sprint("bench-tx-", e.seq.Add(1)))
	if err != nil {
		return sample{}, sample{}, err
	}
	business := func(ctx context.Context, tx *sqlx.Tx) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO business (id, amount) VALUES (?, 1)", fmt.Sprint("b-", e.seq.Add(1)))
		return err
	}
	alone := func() error {
		tx, err := e.db.BeginTxx(ctx, nil)
		if err != nil {
			return err
		}
		if err := business(ctx, tx); err != nil {
			tx.Rollback()
			return err
		}
		return tx.Commit()
	}
	return e.sides(func() (sample, error) { return e.parallel(e.cfg.Ops, w, alone) }, func() (sample, error) {
		return e.parallel(e.cfg.Ops, w, func() error {
			_, err := g.Do(ctx, fmt.Sprint("t-", e.seq.Add(1)), business)
			return err
		})
	}, func() (err error) {
		*byHand, err = e.txByHand(ctx, w)
		return err
	})
}

// contextPair sets the two stores' own limits side by side: a Redis SET NX
// against a MySQL INSERT+COMMIT.
func (e *env) contextPair(w int) pair {
	return pair{name: "context: Redis SET NX vs MySQL commit", baseline: "MySQL INSERT+COMMIT", subject: "Redis SET NX",
		workers: w, run: func(ctx context.Context) (sample, sample, error) {
			return e.both(w, e.insertScratch(ctx), func() error {
				return e.rdb.SetNX(ctx, fmt.Sprint("reliablemq_bench:nx:", e.seq.Add(1)), "1", time.Minute).Err()
			})
		}}
}

// insertScratch returns an op that inserts and commits one scratch row.
func (e *env) insertScratch(ctx context.Context) func() error {
	return func() error {
		_, err := e.db.ExecContext(ctx, "INSERT INTO scratch (id, v) VALUES (?, 'x')", e.seq.Add(1))
		return err
	}
}
