package producer_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	rmqproducer "github.com/apache/rocketmq-client-go/v2/producer"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// BenchmarkSendVsRaw sends b.N messages through the raw client and b.N
// through the wrapper on the same broker, alternating in rounds so both
// sides see the same machine load, and reports both rates and their ratio.
func BenchmarkSendVsRaw(b *testing.B) {
	for _, workers := range []int{1, 16} {
		b.Run(map[int]string{1: "goroutines=1", 16: "goroutines=16"}[workers], func(b *testing.B) {
			env := testenv.NewRocketMQ(b)
			topic := testenv.Name(b, "B")
			env.CreateTopic(b, topic, 8)
			raw, err := rocketmq.NewProducer(rmqproducer.WithNameServer(env.NameServers()),
				rmqproducer.WithInstanceName(testenv.Name(b, "raw")), rmqproducer.WithGroupName("bench_raw"))
			if err != nil {
				b.Fatal(err)
			}
			if err := raw.Start(); err != nil {
				b.Fatal(err)
			}
			defer raw.Shutdown()
			p := newProducer(b, env)
			ctx := context.Background()
			body := make([]byte, 256)
			rawSend := func() error {
				_, err := raw.SendSync(ctx, primitive.NewMessage(topic, body).WithKeys([]string{"k"}))
				return err
			}
			wrapSend := func() error {
				_, err := p.Send(ctx, producer.Message{Topic: topic, Body: body, Keys: []string{"k"}})
				return err
			}
			// Warm both clients' routes and connections.
			for _, f := range []func() error{rawSend, wrapSend} {
				if err := f(); err != nil {
					b.Fatal(err)
				}
			}
			run := func(n int, f func() error) time.Duration {
				var left atomic.Int64
				left.Store(int64(n))
				var wg sync.WaitGroup
				start := time.Now()
				for range workers {
					wg.Go(func() {
						for left.Add(-1) >= 0 {
							if err := f(); err != nil {
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
			var rawT, wrapT time.Duration
			const round = 500
			for done := 0; done < b.N; done += round {
				n := min(round, b.N-done)
				rawT += run(n, rawSend)
				wrapT += run(n, wrapSend)
			}
			b.StopTimer()
			rawRate := float64(b.N) / rawT.Seconds()
			wrapRate := float64(b.N) / wrapT.Seconds()
			b.ReportMetric(rawRate, "raw_msgs/s")
			b.ReportMetric(wrapRate, "wrapper_msgs/s")
			b.ReportMetric(wrapRate/rawRate, "ratio")
		})
	}
}
