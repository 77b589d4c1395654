package consumer_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// TestHostile21TheShardingKeyIsNotAUserProperty: the official client
// carries a message's sharding key in the property SHARDING_KEY
// (primitive.PropertyShardingKey); the consumer hands it out as
// Message.ShardingKey. A keyed message that also has a user property kept
// SHARDING_KEY in Message.Properties too, as if the application had set
// it (the system properties are removed by name, and the list names the
// Java client's __SHARDINGKEY only), and so did its dead letter: a
// replay then sent the client's own property back as a user property of
// the new message.
func TestHostile21TheShardingKeyIsNotAUserProperty(t *testing.T) {
	t.Parallel()
	f := newFixtureNamed(t, 2, "H21_")
	var mu sync.Mutex
	var seen []map[string]string
	var keys []string
	h := func(ctx context.Context, m *consumer.Message) error {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, m.Properties)
		keys = append(keys, m.ShardingKey)
		return consumer.Permanent(context.Canceled) // parked, to see the dead letter too
	}
	f.start(consumer.NewOrderly(f.env.NameServers(), f.group, f.topic, h, consumer.ParkMessage,
		consumer.WithGuard(f.guard()), consumer.WithParker(f.dead), consumer.WithRetryDelay(50*time.Millisecond), hostile6Quiet))
	f.send(producer.Message{Body: []byte("x"), Keys: []string{"evt-1"}, ShardingKey: "order-1",
		Properties: map[string]string{"origin": "web"}})
	f.eventually("the message parked", func() bool { return len(f.parked()) == 1 })
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 || keys[0] != "order-1" || seen[0]["origin"] != "web" {
		t.Fatalf("handled %d times, sharding keys %q, properties %v", len(seen), keys, seen)
	}
	for _, name := range []string{primitive.PropertyShardingKey, "__SHARDINGKEY"} {
		if v, ok := seen[0][name]; ok {
			t.Errorf("Message.Properties has the client's %s=%q", name, v)
		}
		if v, ok := f.parked()[0].Properties[name]; ok {
			t.Errorf("the dead letter's properties have the client's %s=%q", name, v)
		}
	}
}
