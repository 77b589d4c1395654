// Command quickstart sends and consumes messages through an in-process
// RocketMQ broker (rmqtest) with the official client, and reports what
// arrived. Set RMQ_NAMESRV to run it against a real cluster instead.
//
// It grows with the library: each guarantee reliablemq ships is shown here
// working, on embedded defaults.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"time"

	"github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"
	"github.com/seed157d4c4d/reliablemq/internal/clientlog"
	"github.com/seed157d4c4d/reliablemq/rmqtest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

const messages = 100

func run(ctx context.Context, out io.Writer) error {
	clientlog.Install(nil)
	namesrv := os.Getenv("RMQ_NAMESRV")
	if namesrv == "" {
		b, err := rmqtest.Start()
		if err != nil {
			return err
		}
		defer b.Close()
		namesrv = b.NamesrvAddr()
		fmt.Fprintf(out, "broker: rmqtest (in-process) at %s\n", namesrv)
	} else {
		fmt.Fprintf(out, "broker: RocketMQ at %s\n", namesrv)
	}
	suffix := fmt.Sprint(time.Now().UnixNano())
	topic, group := "Quickstart_"+suffix, "QuickstartGroup_"+suffix

	p, err := rocketmq.NewProducer(producer.WithNameServer([]string{namesrv}),
		producer.WithGroupName("QuickstartProducer"), producer.WithInstanceName("quickstart-p-"+suffix))
	if err != nil {
		return err
	}
	if err := p.Start(); err != nil {
		return err
	}
	defer p.Shutdown()
	for i := 0; i < messages; i++ {
		m := primitive.NewMessage(topic, []byte(fmt.Sprintf("order %d paid", i))).WithKeys([]string{fmt.Sprintf("order-%d", i)})
		if _, err := p.SendSync(ctx, m); err != nil {
			return fmt.Errorf("send %d: %w", i, err)
		}
	}
	fmt.Fprintf(out, "sent:     %d\n", messages)

	var mu sync.Mutex
	seen := map[string]int{}
	done := make(chan struct{})
	c, err := rocketmq.NewPushConsumer(consumer.WithNameServer([]string{namesrv}), consumer.WithGroupName(group),
		consumer.WithInstance("quickstart-c-"+suffix), consumer.WithConsumeFromWhere(consumer.ConsumeFromFirstOffset))
	if err != nil {
		return err
	}
	err = c.Subscribe(topic, consumer.MessageSelector{}, func(ctx context.Context, msgs ...*primitive.MessageExt) (consumer.ConsumeResult, error) {
		mu.Lock()
		defer mu.Unlock()
		for _, m := range msgs {
			seen[m.GetKeys()]++
		}
		if len(seen) == messages {
			select {
			case <-done:
			default:
				close(done)
			}
		}
		return consumer.ConsumeSuccess, nil
	})
	if err != nil {
		return err
	}
	if err := c.Start(); err != nil {
		return err
	}
	defer c.Shutdown()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
	case <-ctx.Done():
		return ctx.Err()
	}
	mu.Lock()
	defer mu.Unlock()
	fmt.Fprintf(out, "consumed: %d distinct keys\nlost:     %d\n", len(seen), messages-len(seen))
	if len(seen) != messages {
		return fmt.Errorf("%d messages lost", messages-len(seen))
	}
	return nil
}
