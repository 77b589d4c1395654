package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	rmqproducer "github.com/apache/rocketmq-client-go/v2/producer"
	"github.com/seed157d4c4d/reliablemq/rmqtest"
)

// brokerPair: raw sends to the RMQ_NAMESRV broker against raw sends to an
// in-process rmqtest, on w goroutines each (only on a real broker).
func (e *env) brokerPair(w int) pair {
	return pair{name: "real broker vs rmqtest (raw send)", baseline: "rmqtest", subject: "RMQ_NAMESRV broker",
		workers: w, run: func(ctx context.Context) (sample, sample, error) { return e.runBroker(ctx, w) }}
}

func (e *env) runBroker(ctx context.Context, w int) (sample, sample, error) {
	b, err := rmqtest.Start()
	if err != nil {
		return sample{}, sample{}, err
	}
	defer b.Close()
	if err := b.CreateTopic("BenchEmbedded", 8); err != nil {
		return sample{}, sample{}, err
	}
	p, err := rocketmq.NewProducer(rmqproducer.WithNameServer([]string{b.NamesrvAddr()}), rmqproducer.WithGroupName("bench_embedded"),
		rmqproducer.WithInstanceName(fmt.Sprint("bench-embedded-", time.Now().UnixNano())))
	if err != nil {
		return sample{}, sample{}, err
	}
	if err := p.Start(); err != nil {
		return sample{}, sample{}, err
	}
	defer p.Shutdown()
	topic, err := e.topic(ctx, "BenchReal")
	if err != nil {
		return sample{}, sample{}, err
	}
	send := func(p rocketmq.Producer, topic string) func() error {
		return func() error {
			_, err := p.SendSync(ctx, primitive.NewMessage(topic, e.body))
			return err
		}
	}
	embedded, real := send(p, "BenchEmbedded"), send(e.raw, topic)
	for _, warm := range []func() error{embedded, real} {
		if err := warm(); err != nil {
			return sample{}, sample{}, err
		}
	}
	return e.both(w, embedded, real)
}
