package rmqtest_test

import (
	"context"
	"testing"

	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/rmqtest"
)

func TestWithoutAutoCreateTopicsRefusesUnknownTopics(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t, rmqtest.WithoutAutoCreateTopics())
	env.RequireEmbedded(t)
	p := newProducer(t, env, producer.WithRetry(0))
	topic := testenv.Name(t, "T")
	if _, err := p.SendSync(context.Background(), primitive.NewMessage(topic, []byte("x"))); err == nil {
		t.Fatal("a send to an unknown topic succeeded without auto-creation")
	}
	created := testenv.Name(t, "C")
	env.CreateTopic(t, created, 1)
	sendSync(t, p, primitive.NewMessage(created, []byte("y")))
}

func TestClearFaultsDropsFaultsNotYetApplied(t *testing.T) {
	t.Parallel()
	env, b, topic := embeddedTopic(t, 1)
	p := newProducer(t, env, producer.WithRetry(0))
	b.Inject(rmqtest.SendMessage, rmqtest.Fault{Times: 100, Code: rmqtest.CodeServiceNotAvailable})
	if _, err := p.SendSync(context.Background(), primitive.NewMessage(topic, []byte("x"))); err == nil {
		t.Fatal("the injected fault did not apply")
	}
	b.ClearFaults()
	sendSync(t, p, primitive.NewMessage(topic, []byte("y")))
}

func TestConsumersListsTheGroupsClients(t *testing.T) {
	t.Parallel()
	env, b, topic := embeddedTopic(t, 1)
	group := testenv.Name(t, "G")
	if ids := b.Consumers(group); len(ids) != 0 {
		t.Fatalf("clients %v before any consumer started", ids)
	}
	stop := startConsumer(t, env, consumerCfg{group: group, topic: topic}, newCollector().listener)
	waitUntil(t, "the consumer registered", func() bool { return len(b.Consumers(group)) == 1 })
	stop()
	waitUntil(t, "the consumer left", func() bool { return len(b.Consumers(group)) == 0 })
}
