package consumer_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2"
	rmqconsumer "github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// BenchmarkConsumeVsRaw loads b.N messages with distinct keys, then
// consumes them with the raw client and with the wrapper guarded by Redis
// (REDIS_ADDR), each in its own group, and reports both rates (first to
// last message, so client start-up is not counted) and their ratio.
func BenchmarkConsumeVsRaw(b *testing.B) {
	testenv.SkipUnderRace(b)
	env := testenv.NewRocketMQ(b)
	topic := testenv.Name(b, "B")
	env.CreateTopic(b, topic, 8)
	p, err := producer.New(env.NameServers())
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	body := make([]byte, 256)
	batch := make([]producer.Message, 0, 64)
	flush := func() {
		if len(batch) > 0 {
			if _, err := p.SendBatch(ctx, batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	for i := range b.N {
		batch = append(batch, producer.Message{Topic: topic, Body: body, Keys: []string{fmt.Sprint("k-", i)}})
		if len(batch) == cap(batch) {
			flush()
		}
	}
	flush()
	n := int64(b.N)

	// measure runs start, waits until count reaches n, and returns msgs/s
	// from the first message to the last.
	measure := func(start func(count func()) (stop func())) float64 {
		var got atomic.Int64
		var first, last atomic.Int64
		done := make(chan struct{})
		stop := start(func() {
			now := time.Now().UnixNano()
			first.CompareAndSwap(0, now)
			if got.Add(1) == n {
				last.Store(now)
				close(done)
			}
		})
		defer stop()
		select {
		case <-done:
		case <-time.After(5 * time.Minute):
			b.Fatalf("consumed %d of %d", got.Load(), n)
		}
		return float64(n) / time.Duration(last.Load()-first.Load()).Seconds()
	}
	b.ResetTimer()
	raw := measure(func(count func()) func() {
		c, err := rocketmq.NewPushConsumer(rmqconsumer.WithNameServer(env.NameServers()),
			rmqconsumer.WithGroupName(testenv.Name(b, "raw")), rmqconsumer.WithInstance(testenv.Name(b, "raw")),
			rmqconsumer.WithConsumeFromWhere(rmqconsumer.ConsumeFromFirstOffset))
		if err != nil {
			b.Fatal(err)
		}
		err = c.Subscribe(topic, rmqconsumer.MessageSelector{}, func(_ context.Context, msgs ...*primitive.MessageExt) (rmqconsumer.ConsumeResult, error) {
			for range msgs {
				count()
			}
			return rmqconsumer.ConsumeSuccess, nil
		})
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Start(); err != nil {
			b.Fatal(err)
		}
		return func() { c.Shutdown() }
	})
	guarded := measure(func(count func()) func() {
		group := testenv.Name(b, "G")
		store, err := idempotency.NewRedisStore(testenv.Redis(b), group+":")
		if err != nil {
			b.Fatal(err)
		}
		g, err := idempotency.NewGuard(group, store)
		if err != nil {
			b.Fatal(err)
		}
		c, err := consumer.New(env.NameServers(), group, topic, func(context.Context, *consumer.Message) error {
			count()
			return nil
		}, consumer.WithGuard(g), consumer.WithParker(&memoryParker{}))
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Start(); err != nil {
			b.Fatal(err)
		}
		return func() { c.Close() }
	})
	b.StopTimer()
	b.ReportMetric(raw, "raw_msgs/s")
	b.ReportMetric(guarded, "redis_guarded_msgs/s")
	b.ReportMetric(guarded/raw, "ratio")
}
