package producer_test

import (
	"errors"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// TestDelayedMessageWithAShardingKeyIsRefused: the broker keeps a delayed
// message aside and appends it to its queue only when the delay ends, so
// "o-1 step 1, delayed 1 s" then "o-1 step 2" reached an orderly consumer
// as step 2, step 1, on rmqtest and on RocketMQ 4.9.4 alike. Such a send
// is refused before anything is written; a delayed message without a
// sharding key, and a keyed one without a delay, still go.
func TestDelayedMessageWithAShardingKeyIsRefused(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t)
	topic := testenv.Name(t, "T")
	env.CreateTopic(t, topic, 2)
	p := newProducer(t, env)
	ctx := ctxT(t)
	m := producer.Message{Topic: topic, Body: []byte("step 1"), Keys: []string{"o-1-1"}, ShardingKey: "o-1", Delay: time.Second}
	if err := producer.Validate(m); !errors.Is(err, producer.ErrInvalidMessage) {
		t.Fatalf("Validate: %v, want ErrInvalidMessage", err)
	}
	if _, err := p.Send(ctx, m); !errors.Is(err, producer.ErrInvalidMessage) || !producer.IsPermanent(err) {
		t.Fatalf("Send: %v, want a permanent ErrInvalidMessage", err)
	}
	if b := env.Embedded; b != nil && len(b.Messages(topic)) != 0 {
		t.Fatal("the refused message was stored")
	}
	unkeyed := m
	unkeyed.ShardingKey = ""
	if _, err := p.Send(ctx, unkeyed); err != nil {
		t.Fatalf("delayed message without a sharding key: %v", err)
	}
	undelayed := m
	undelayed.Delay = 0
	if _, err := p.Send(ctx, undelayed); err != nil {
		t.Fatalf("keyed message without a delay: %v", err)
	}
}
