package consumer

import (
	"context"

	rmqconsumer "github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
)

// ParkPolicy says what an orderly consumer does with the messages of a
// sharding key after one of them is parked.
type ParkPolicy int

const (
	// ParkMessage parks only the failed message; later messages of its key
	// are consumed. For streams where a step may be skipped and redone by
	// a human later.
	ParkMessage ParkPolicy = iota
	// ParkKey parks the failed message and every later message of the same
	// sharding key while any message of the key is parked, so a key's
	// messages never apply out of order (binlog-style sync). The parker
	// must implement [KeyParker].
	ParkKey
)

// NewOrderly returns an orderly consumer: each queue is consumed by one
// handler at a time, in queue order, so messages sent with one sharding
// key (see orderly.QueueIndex) are handled in the order they were sent. A
// failure or panic suspends the queue for the retry delay (default 1 s)
// and retries the same message; nothing after it on the queue runs
// meanwhile. The attempt count lives in the guard's store (WithGuard is
// required), so the cap holds across restarts and rebalances; at the cap
// the message is parked per policy and the queue moves on.
func NewOrderly(nameServers []string, group, topic string, h Handler, policy ParkPolicy, opts ...OrderlyOption) (*Consumer, error) {
	return newConsumer(nameServers, group, topic, h, true, policy, func(c *config) {
		for _, o := range opts {
			o.applyOrderly(c)
		}
	})
}

func (c *Consumer) consumeOrderly(ctx context.Context, msgs ...*primitive.MessageExt) (rmqconsumer.ConsumeResult, error) {
	result := ack
	for i := range msgs { // one: the orderly consumer takes no batches
		items := newItems(msgs[i:i+1], c.cfg.namespace, c.group)
		c.handleBatch(ctx, items)
		if result = items[0].v; result != ack {
			break
		}
	}
	if result == closing {
		<-c.shutdown
	}
	if result != ack {
		// The only result v2.1.2 honours without skipping the message; the
		// suspend time must be set here, the client option is ignored.
		if oc, ok := primitive.GetOrderlyCtx(ctx); ok {
			oc.SuspendCurrentQueueTimeMillis = int(max(c.cfg.retryDelay.Milliseconds(), 1))
		}
		return rmqconsumer.SuspendCurrentQueueAMoment, nil
	}
	return rmqconsumer.ConsumeSuccess, nil
}
