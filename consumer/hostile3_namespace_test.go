package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2"
	rmqconsumer "github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	rmqproducer "github.com/apache/rocketmq-client-go/v2/producer"
	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// deliveries records "topic@attempt" per key.
type deliveries struct {
	mu   sync.Mutex
	seen map[string][]string
}

func (d *deliveries) add(m *consumer.Message) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.seen == nil {
		d.seen = map[string][]string{}
	}
	k := consumer.Key(m)
	d.seen[k] = append(d.seen[k], fmt.Sprintf("%s@%d", m.Topic, m.Attempt))
}

func (d *deliveries) get(k string) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.seen[k]...)
}

// The official client's namespaced producer -> our namespaced consumer
// (concurrent, batch and orderly), with a retry; our namespaced producer ->
// the official client's namespaced consumer.
func TestHostile3NamespaceInterop(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"concurrent", "batch", "orderly"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, 2)
			ns := testNamespace(t)
			f.env.CreateTopic(t, ns+"%"+f.topic, 2)
			f.env.CreateTopic(t, "%RETRY%"+ns+"%"+f.group, 1)
			raw, err := rocketmq.NewProducer(rmqproducer.WithNameServer(f.env.NameServers()), rmqproducer.WithNamespace(ns),
				rmqproducer.WithGroupName(testenv.Name(t, "RP")), rmqproducer.WithInstanceName(testenv.Name(t, "rawp")))
			if err != nil {
				t.Fatal(err)
			}
			if err := raw.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { raw.Shutdown() })
			var d deliveries
			h := func(ctx context.Context, m *consumer.Message) error {
				d.add(m)
				if consumer.Key(m) == "retry" && m.Attempt == 1 {
					return errors.New("once")
				}
				return nil
			}
			var c *consumer.Consumer
			switch mode {
			case "concurrent":
				c, err = consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithGuard(f.guard()),
					consumer.WithParker(f.dead), consumer.WithNamespace(ns), consumer.WithRetryDelay(time.Second))
			case "batch":
				c, err = consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithGuard(f.guard()),
					consumer.WithParker(f.dead), consumer.WithNamespace(ns), consumer.WithRetryDelay(time.Second), consumer.WithBatchSize(4))
			case "orderly":
				c, err = consumer.NewOrderly(f.env.NameServers(), f.group, f.topic, h, consumer.ParkKey, consumer.WithGuard(f.guard()),
					consumer.WithParker(f.dead), consumer.WithNamespace(ns), consumer.WithRetryDelay(time.Second))
			}
			f.start(c, err)
			for _, key := range []string{"ok", "retry"} {
				m := primitive.NewMessage(f.topic, []byte(key))
				m.WithKeys([]string{key})
				m.WithShardingKey("s")
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := raw.SendSync(ctx, m)
				cancel()
				if err != nil {
					t.Fatal(err)
				}
			}
			f.eventually("both handled", func() bool { return len(d.get("ok")) == 1 && len(d.get("retry")) == 2 })
			if got, want := fmt.Sprint(d.get("retry")), fmt.Sprint([]string{f.topic + "@1", f.topic + "@2"}); got != want {
				t.Errorf("retry deliveries %s, want %s", got, want)
			}
			if got, want := fmt.Sprint(d.get("ok")), fmt.Sprint([]string{f.topic + "@1"}); got != want {
				t.Errorf("ok deliveries %s, want %s", got, want)
			}
			if mode != "concurrent" {
				return
			}
			// Ours -> theirs.
			prod, err := producer.New(f.env.NameServers(), producer.WithNamespace(ns))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { prod.Close() })
			rc, err := rocketmq.NewPushConsumer(rmqconsumer.WithNameServer(f.env.NameServers()), rmqconsumer.WithNamespace(ns),
				rmqconsumer.WithGroupName(testenv.Name(t, "RG")), rmqconsumer.WithInstance(testenv.Name(t, "rawc")),
				rmqconsumer.WithConsumeFromWhere(rmqconsumer.ConsumeFromFirstOffset))
			if err != nil {
				t.Fatal(err)
			}
			got := make(chan string, 8)
			if err := rc.Subscribe(f.topic, rmqconsumer.MessageSelector{}, func(ctx context.Context, msgs ...*primitive.MessageExt) (rmqconsumer.ConsumeResult, error) {
				for _, m := range msgs {
					got <- m.Topic + ":" + string(m.Body)
				}
				return rmqconsumer.ConsumeSuccess, nil
			}); err != nil {
				t.Fatal(err)
			}
			if err := rc.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { rc.Shutdown() })
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := prod.Send(ctx, producer.Message{Topic: f.topic, Body: []byte("ours"), Keys: []string{"ours"}}); err != nil {
				t.Fatal(err)
			}
			want := map[string]bool{ns + "%" + f.topic + ":ok": true, ns + "%" + f.topic + ":retry": true, ns + "%" + f.topic + ":ours": true}
			deadline := time.After(waitFor)
			for len(want) > 0 {
				select {
				case s := <-got:
					delete(want, s)
				case <-deadline:
					t.Fatalf("the official namespaced consumer did not get %v", want)
				}
			}
		})
	}
}
