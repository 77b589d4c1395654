package rmqtest_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

// BenchmarkSend measures the official client's SendSync through the broker
// (rmqtest, or a real one with RMQ_NAMESRV) with 1 and 16 goroutines.
func BenchmarkSend(b *testing.B) {
	for _, workers := range []int{1, 16} {
		b.Run(fmt.Sprintf("goroutines=%d", workers), func(b *testing.B) {
			env := testenv.NewRocketMQ(b)
			topic := testenv.Name(b, "Bench")
			env.CreateTopic(b, topic, 8)
			p := newProducer(b, env)
			body := make([]byte, 256)
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for next.Add(1) <= int64(b.N) {
						if _, err := p.SendSync(context.Background(), primitive.NewMessage(topic, body)); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}

// BenchmarkConsumeBacklog measures how fast the official push consumer
// drains a backlog of b.N messages.
func BenchmarkConsumeBacklog(b *testing.B) {
	env := testenv.NewRocketMQ(b)
	topic := testenv.Name(b, "Bench")
	env.CreateTopic(b, topic, 4)
	p := newProducer(b, env)
	body := make([]byte, 256)
	for sent := 0; sent < b.N; {
		batch := make([]*primitive.Message, 0, 64)
		for i := 0; i < 64 && sent < b.N; i++ {
			batch = append(batch, primitive.NewMessage(topic, body))
			sent++
		}
		if _, err := p.SendSync(context.Background(), batch...); err != nil {
			b.Fatal(err)
		}
	}
	var got atomic.Int64
	done := make(chan struct{})
	c, err := rocketmq.NewPushConsumer(consumer.WithNameServer(env.NameServers()), consumer.WithGroupName(testenv.Name(b, "CG")),
		consumer.WithInstance(testenv.Name(b, "c")), consumer.WithConsumeFromWhere(consumer.ConsumeFromFirstOffset))
	if err != nil {
		b.Fatal(err)
	}
	c.Subscribe(topic, consumer.MessageSelector{}, func(ctx context.Context, msgs ...*primitive.MessageExt) (consumer.ConsumeResult, error) {
		if got.Add(int64(len(msgs))) == int64(b.N) {
			close(done)
		}
		return consumer.ConsumeSuccess, nil
	})
	b.ResetTimer()
	start := time.Now()
	if err := c.Start(); err != nil {
		b.Fatal(err)
	}
	defer c.Shutdown()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		b.Fatalf("consumed %d of %d", got.Load(), b.N)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}
