package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/seed157d4c4d/reliablemq/outbox"
	"github.com/seed157d4c4d/reliablemq/producer"
	"github.com/seed157d4c4d/reliablemq/reconcile"
)

// transactPair: Relay.Transact (a business row and an outbox row in one
// transaction, then the send) against a business transaction followed by
// a plain send.
func (e *env) transactPair(w int) pair {
	return pair{name: "outbox Transact", baseline: "insert+commit, then send", subject: "Relay.Transact",
		target: 0.75, workers: w, run: func(ctx context.Context) (sample, sample, error) { return e.runTransact(ctx, w) }}
}

func (e *env) runTransact(ctx context.Context, w int) (sample, sample, error) {
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
	return e.both(w, plain, func() error {
		id := fmt.Sprint("t-", e.seq.Add(1))
		return relay.Transact(ctx, func(ctx context.Context, tx *outbox.Tx) error {
			if err := insert(ctx, tx, id); err != nil {
				return err
			}
			_, err := tx.Enqueue(ctx, outbox.Message{Topic: topic, Key: id, Body: e.body})
			return err
		})
	})
}

// drainPair: one Job.RunOnce over cfg.DrainRows pending outbox rows, the
// relay sending on w goroutines, against as many plain sends on w
// goroutines. The subject's latencies are those of the relay's sends.
func (e *env) drainPair(w int) pair {
	return pair{name: fmt.Sprintf("reconcile drain of %d rows", e.cfg.DrainRows), baseline: "raw send", subject: "Job.RunOnce",
		target: 0.7, workers: w, run: func(ctx context.Context) (sample, sample, error) { return e.runDrain(ctx, w) }}
}

func (e *env) runDrain(ctx context.Context, w int) (sample, sample, error) {
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
	if err := e.fillOutbox(ctx, relay, topic, rows); err != nil {
		return sample{}, sample{}, err
	}
	return e.sides(func() (sample, error) {
		return e.parallel(rows, w, func() error {
			_, err := e.prod.Send(ctx, producer.Message{Topic: topic, Body: e.body, Keys: []string{"raw"}})
			return err
		})
	}, func() (sample, error) {
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
	}, nil)
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
