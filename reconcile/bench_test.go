package reconcile_test

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
	"github.com/seed157d4c4d/reliablemq/reconcile"
)

// BenchmarkDrainVsRawSend loads b.N due outbox rows and drains them with
// RunOnce (16 concurrent sends), against b.N raw sends from 16 goroutines
// on the same broker, and reports both rates and their ratio.
func BenchmarkDrainVsRawSend(b *testing.B) {
	const workers = 16
	ctx := context.Background()
	env := testenv.NewRocketMQ(b)
	topic := testenv.Name(b, "B")
	env.CreateTopic(b, topic, 8)
	db := testenv.MySQL(b)
	db.SetMaxOpenConns(workers + 4)
	p, err := producer.New(env.NameServers())
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	relay, err := outbox.NewRelay(db, p, outbox.WithConcurrency(workers))
	if err != nil {
		b.Fatal(err)
	}
	job, err := reconcile.New(relay, reconcile.WithBatch(500))
	if err != nil {
		b.Fatal(err)
	}
	body := []byte(strings.Repeat("x", 256))
	// Load the rows in big transactions (not measured).
	for done := 0; done < b.N; {
		tx := db.MustBegin()
		for i := 0; i < 1000 && done < b.N; i, done = i+1, done+1 {
			if _, _, err := relay.Enqueue(ctx, tx, outbox.Message{Topic: topic, Key: fmt.Sprint("k-", done), Body: body}); err != nil {
				b.Fatal(err)
			}
		}
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := p.Send(ctx, producer.Message{Topic: topic, Body: body}); err != nil { // warm up
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	var left atomic.Int64
	left.Store(int64(b.N))
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				if _, err := p.Send(ctx, producer.Message{Topic: topic, Body: body, Keys: []string{"raw"}}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	raw := float64(b.N) / time.Since(start).Seconds()
	start = time.Now()
	rep, err := job.RunOnce(ctx)
	if err != nil {
		b.Fatal(err)
	}
	drain := float64(rep.Sent) / time.Since(start).Seconds()
	b.StopTimer()
	if rep.Sent != b.N || rep.Pending != 0 {
		b.Fatalf("drained %d of %d, %d pending", rep.Sent, b.N, rep.Pending)
	}
	b.ReportMetric(raw, "raw_sends/s")
	b.ReportMetric(drain, "drain_rows/s")
	b.ReportMetric(drain/raw, "ratio")
}
