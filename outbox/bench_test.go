package outbox_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/outbox"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// BenchmarkTransactVsPlain compares Transact (business insert + outbox row
// + commit + send + mark sent) with the business insert and commit
// followed by a plain send, 16 goroutines, alternating in rounds on the
// same broker and database; it reports both rates and their ratio.
func BenchmarkTransactVsPlain(b *testing.B) {
	const workers = 16
	ctx := context.Background()
	env := testenv.NewRocketMQ(b)
	topic := testenv.Name(b, "B")
	env.CreateTopic(b, topic, 8)
	db := testenv.MySQL(b)
	db.SetMaxOpenConns(workers + 4)
	db.MustExec("CREATE TABLE orders (id VARCHAR(64) PRIMARY KEY, total INT NOT NULL)")
	p, err := producer.New(env.NameServers())
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	relay, err := outbox.NewRelay(db, p)
	if err != nil {
		b.Fatal(err)
	}
	body := []byte(strings.Repeat("x", 256))
	var seq atomic.Int64
	plain := func() error {
		id := fmt.Sprint("p-", seq.Add(1))
		tx, err := db.BeginTxx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO orders (id, total) VALUES (?, 1)", id); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
		_, err = p.Send(ctx, producer.Message{Topic: topic, Body: body, Keys: []string{id}})
		return err
	}
	transact := func() error {
		id := fmt.Sprint("t-", seq.Add(1))
		return relay.Transact(ctx, func(ctx context.Context, tx *outbox.Tx) error {
			if _, err := tx.ExecContext(ctx, "INSERT INTO orders (id, total) VALUES (?, 1)", id); err != nil {
				return err
			}
			_, err := tx.Enqueue(ctx, outbox.Message{Topic: topic, Key: id, Body: body})
			return err
		})
	}
	run := func(n int, op func() error) time.Duration {
		var left atomic.Int64
		left.Store(int64(n))
		var wg sync.WaitGroup
		start := time.Now()
		for range workers {
			wg.Go(func() {
				for left.Add(-1) >= 0 {
					if err := op(); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		return time.Since(start)
	}
	b.ResetTimer()
	var tPlain, tTransact time.Duration
	for done := 0; done < b.N; done += 1000 {
		n := min(1000, b.N-done)
		tPlain += run(n, plain)
		tTransact += run(n, transact)
	}
	b.StopTimer()
	rp, rt := float64(b.N)/tPlain.Seconds(), float64(b.N)/tTransact.Seconds()
	b.ReportMetric(rp, "plain_ops/s")
	b.ReportMetric(rt, "transact_ops/s")
	b.ReportMetric(rt/rp, "ratio")
}
