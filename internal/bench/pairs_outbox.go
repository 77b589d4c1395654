package bench

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/seed157d4c4d/reliablemq/outbox"
	"github.com/seed157d4c4d/reliablemq/producer"
	"github.com/seed157d4c4d/reliablemq/reconcile"
)

// transactPair: Relay.Transact (a business row and an outbox row in one
// transaction, then the send) against a business transaction followed by
// a plain send.
func (e *env) transactPair(w int) pair {
	// As for the transactional guard, the row by hand is measured between
	// the sides of each run.
	var byHand sample
	return pair{name: "outbox Transact", baseline: "insert+commit, then send", subject: "Relay.Transact",
		target: 0.75, workers: w, run: func(ctx context.Context) (sample, sample, error) { return e.runTransact(ctx, w, &byHand) },
		floor: func(context.Context) (sample, error) { return byHand, nil }, floorName: "raw, row by hand", floorWhole: true}
}

// outboxRowByHand is the outbox row Transact writes, as one literal
// statement: a fresh key, already claimed (status Sent here, so that no
// later drain counts it as due).
func (e *env) outboxRowByHand(topic, key string) string {
	h, empty := sha256.Sum256([]byte(key)), sha256.Sum256(nil)
	return fmt.Sprintf("INSERT INTO mq_log (topic, key_hash, biz_key, tag, sharding_key, sharding_hash, properties, `body`, delay_ms,"+
		" status, attempts, next_attempt_at, lease_owner, last_error, msg_id, created_at, updated_at) VALUES ('%s', 0x%x, '%s', '', '',"+
		" 0x%x, '{}', '%s', 0, 1, 0, UTC_TIMESTAMP(6) + INTERVAL 30000000 MICROSECOND, '%032x', '', '', UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))",
		topic, h[:], key, empty[:], e.body, h[:16])
}

func (e *env) runTransact(ctx context.Context, w int, byHand *sample) (sample, sample, error) {
	topic, err := e.topic(ctx, "BenchOutbox")
	if err != nil {
		return sample{}, sample{}, err
	}
	relay, err := outbox.NewRelay(e.db, e.prod)
	if err != nil {
		return sample{}, sample{}, err
	}
	insert := func(ctx context.Context, ex outbox.Execer, id string) error {
		_, err := ex.ExecContext(ctx, "INSERT INTO business (id, amount) VALUES (?, 1)", id)
		return err
	}
	plain := func() error {
		id := fmt.Sprint("p-", e.seq.Add(1))
		tx, err := e.db.BeginTxx(ctx, nil)
		if err != nil {
			return err
		}
		if err := insert(ctx, tx, id); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
		_, err = e.prod.Send(ctx, producer.Message{Topic: topic, Body: e.body, Keys: []string{id}})
		return err
	}
	// The least an outbox adds to plain: the row in the transaction, its
	// statement and round trip; no mark once the broker has the message.
	rowByHand := func() error {
		id := fmt.Sprint("h-", e.seq.Add(1))
		tx, err := e.db.BeginTxx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback() //nolint:errcheck // a no-op after Commit
		if err := insert(ctx, tx, id); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, e.outboxRowByHand(topic, id)); err != nil {
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
		_, err = e.prod.Send(ctx, producer.Message{Topic: topic, Body: e.body, Keys: []string{id}})
		return err
	}
	return e.sides(func() (sample, error) { return e.parallel(e.cfg.Ops, w, plain) }, func() (sample, error) {
		// The last marks, written in the background, count in the side's
		// time: Flush is the last call's.
		var calls atomic.Int64
		return e.parallel(e.cfg.Ops, w, func() error {
			last := calls.Add(1) == int64(e.cfg.Ops)
			id := fmt.Sprint("t-", e.seq.Add(1))
			err := relay.Transact(ctx, func(ctx context.Context, tx *outbox.Tx) error {
				if err := insert(ctx, tx, id); err != nil {
					return err
				}
				_, err := tx.Enqueue(ctx, outbox.Message{Topic: topic, Key: id, Body: e.body})
				return err
			})
			if err == nil && last {
				err = relay.Flush(ctx)
			}
			return err
		})
	}, func() (err error) {
		*byHand, err = e.parallel(e.cfg.Ops, w, rowByHand)
		return err
	})
}

// drainPair: one Job.RunOnce over cfg.DrainRows pending outbox rows, the
// relay sending on w goroutines, against as many plain sends on w
// goroutines. The subject's latencies are those of the relay's sends.
func (e *env) drainPair(w int) pair {
	var byHand sample
	return pair{name: fmt.Sprintf("reconcile drain of %d rows", e.cfg.DrainRows), baseline: "raw send", subject: "Job.RunOnce",
		target: 0.7, workers: w, run: func(ctx context.Context) (sample, sample, error) { return e.runDrain(ctx, w, &byHand) },
		floor: func(context.Context) (sample, error) { return byHand, nil }, floorName: "raw, rows by hand", floorWhole: true}
}

func (e *env) runDrain(ctx context.Context, w int, byHand *sample) (sample, sample, error) {
	rows := e.cfg.DrainRows
	topic, err := e.topic(ctx, "BenchDrain")
	if err != nil {
		return sample{}, sample{}, err
	}
	sends := &timedPublisher{pub: e.prod}
	relay, err := outbox.NewRelay(e.db, sends, outbox.WithConcurrency(w))
	if err != nil {
		return sample{}, sample{}, err
	}
	job, err := reconcile.New(relay)
	if err != nil {
		return sample{}, sample{}, err
	}
	// Each side that drains fills the outbox just before its clock starts,
	// so that the table holds only its own rows.
	return e.sides(func() (sample, error) {
		return e.parallel(rows, w, func() error {
			_, err := e.prod.Send(ctx, producer.Message{Topic: topic, Body: e.body, Keys: []string{"raw"}})
			return err
		})
	}, func() (sample, error) {
		if err := e.fillOutbox(ctx, relay, topic, rows); err != nil {
			return sample{}, err
		}
		start, cpu := time.Now(), e.meter.now()
		rep, err := job.RunOnce(ctx)
		if err != nil {
			return sample{}, err
		}
		if rep.Sent != rows {
			return sample{}, fmt.Errorf("drained %d of %d rows", rep.Sent, rows)
		}
		subject := sample{rate: float64(rows) / time.Since(start).Seconds(), cpu: e.meter.perOp(cpu, rows)}
		subject.p50, subject.p99 = sends.percentiles()
		return subject, nil
	}, func() (err error) {
		if err := e.fillOutbox(ctx, relay, topic, rows); err != nil {
			return err
		}
		*byHand, err = e.drainByHand(ctx, w, rows)
		return err
	})
}

// drainByHand sends every due outbox row with the least database work a
// relay that several instances run at once needs: per batch of 500, a
// locking read that skips rows others hold, the sends (on w goroutines),
// one statement marking them Sent, and the commit. (The relay instead
// stamps a lease on its claim and commits it before sending, so that no
// transaction stays open across the sends, and records each message's id.)
func (e *env) drainByHand(ctx context.Context, w, rows int) (sample, error) {
	start, cpu := time.Now(), e.meter.now()
	drained := 0
	for {
		n, err := e.drainBatchByHand(ctx, w)
		if err != nil {
			return sample{}, err
		}
		if n == 0 {
			break
		}
		drained += n
	}
	if drained != rows {
		return sample{}, fmt.Errorf("drained %d of %d rows by hand", drained, rows)
	}
	return sample{rate: float64(rows) / time.Since(start).Seconds(), cpu: e.meter.perOp(cpu, rows)}, nil
}

func (e *env) drainBatchByHand(ctx context.Context, w int) (int, error) {
	tx, err := e.db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return 0, err
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	var batch []struct {
		ID    int64  `db:"id"`
		Topic string `db:"topic"`
		Key   string `db:"biz_key"`
		Body  []byte `db:"body"`
	}
	if err := tx.SelectContext(ctx, &batch, "SELECT id, topic, biz_key, `body` FROM mq_log WHERE status = 0"+
		" AND next_attempt_at <= UTC_TIMESTAMP(6) ORDER BY next_attempt_at LIMIT 500 FOR UPDATE SKIP LOCKED"); err != nil {
		return 0, err
	}
	if len(batch) == 0 {
		return 0, tx.Commit()
	}
	var next atomic.Int64
	if _, err := parallel(len(batch), w, func() error {
		m := batch[next.Add(1)-1]
		_, err := e.prod.Send(ctx, producer.Message{Topic: m.Topic, Body: m.Body, Keys: []string{m.Key}})
		return err
	}); err != nil {
		return 0, err
	}
	ids := make([]string, len(batch))
	for i, m := range batch {
		ids[i] = strconv.FormatInt(m.ID, 10)
	}
	if _, err := tx.ExecContext(ctx, "UPDATE mq_log SET status = 1, attempts = attempts + 1, sent_at = UTC_TIMESTAMP(6),"+
		" next_attempt_at = UTC_TIMESTAMP(6), updated_at = UTC_TIMESTAMP(6) WHERE id IN ("+strings.Join(ids, ", ")+")"); err != nil {
		return 0, err
	}
	return len(batch), tx.Commit()
}

// fillOutbox enqueues rows pending messages for topic, 1000 per transaction.
func (e *env) fillOutbox(ctx context.Context, relay *outbox.Relay, topic string, rows int) error {
	seq := fmt.Sprint(time.Now().UnixNano(), "_", e.seq.Add(1))
	for done := 0; done < rows; {
		tx, err := e.db.BeginTxx(ctx, nil)
		if err != nil {
			return err
		}
		for i := 0; i < 1000 && done < rows; i, done = i+1, done+1 {
			if _, _, err := relay.Enqueue(ctx, tx, outbox.Message{Topic: topic, Key: fmt.Sprint("d-", seq, "-", done), Body: e.body}); err != nil {
				tx.Rollback()
				return err
			}
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}

// timedPublisher records the latency of each send it passes on.
type timedPublisher struct {
	pub outbox.Publisher
	recorder
}

func (p *timedPublisher) Send(ctx context.Context, m producer.Message) (producer.Result, error) {
	start := time.Now()
	res, err := p.pub.Send(ctx, m)
	p.add(time.Since(start))
	return res, err
}
