// Command order-timeout closes orders left unpaid for 30 minutes with a
// delayed message: placing an order enqueues "close o-N if unpaid" delayed
// by 30 minutes (the broker's 30m delay level) in the order's own
// transaction, through the outbox, so an order placed is never left
// without its close check (a send that fails after the commit stays in
// the outbox for reconcile); the consumer closes it only if it is still
// unpaid, so a paid order is left alone and a redelivery is harmless. On
// rmqtest the program moves the broker's clock instead of waiting; on a
// real broker pass -delay to wait less.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/deadletter"
	"github.com/seed157d4c4d/reliablemq/examples/internal/exampleenv"
	"github.com/seed157d4c4d/reliablemq/outbox"
	"github.com/seed157d4c4d/reliablemq/producer"
)

func main() {
	delay := flag.Duration("delay", 30*time.Minute, "how long an order may stay unpaid (rounded up to a delay level)")
	flag.Parse()
	if err := run(context.Background(), os.Stdout, *delay); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, out io.Writer, delay time.Duration) error {
	env, err := exampleenv.Setup(ctx, "example_order_timeout")
	if err != nil {
		return err
	}
	defer env.Close()
	env.DB.MustExec("CREATE TABLE orders (id VARCHAR(64) PRIMARY KEY, status VARCHAR(16) NOT NULL)")
	if err := env.CreateTopic(ctx, "order-timeout", 2, "order-closer"); err != nil {
		return err
	}
	dead, err := deadletter.NewTable(env.DB)
	if err != nil {
		return err
	}
	closeIfUnpaid := func(ctx context.Context, m *consumer.Message) error {
		_, err := env.DB.ExecContext(ctx, "UPDATE orders SET status = 'closed' WHERE id = ? AND status = 'unpaid'", consumer.Key(m))
		return err // idempotent by its WHERE clause
	}
	c, err := consumer.New(env.NameServers, "order-closer", "order-timeout", closeIfUnpaid, consumer.WithParker(dead))
	if err != nil {
		return err
	}
	env.Go(ctx, c.Run)
	p, err := producer.New(env.NameServers)
	if err != nil {
		return err
	}
	defer p.Close()

	relay, err := outbox.NewRelay(env.DB, p)
	if err != nil {
		return err
	}
	defer relay.Flush(ctx) // Sent marks are written in the background: wait for them before exiting
	for _, id := range []string{"o-1", "o-2"} {
		// The order and its close check commit together: an order is never
		// left unpaid for ever because the process died before sending.
		err := relay.Transact(ctx, func(ctx context.Context, tx *outbox.Tx) error {
			if _, err := tx.ExecContext(ctx, "INSERT INTO orders (id, status) VALUES (?, 'unpaid')", id); err != nil {
				return err
			}
			_, err := tx.Enqueue(ctx, outbox.Message{Topic: "order-timeout", Key: id, Body: []byte(id), Delay: delay})
			return err
		})
		if err != nil {
			return err
		}
	}
	level, _ := p.DelayLevel(delay)
	fmt.Fprintf(out, "o-1 and o-2 placed; close checks scheduled in %v (delay level %d)\n", delay, level)
	env.DB.MustExec("UPDATE orders SET status = 'paid' WHERE id = 'o-1'")
	fmt.Fprintln(out, "o-1 paid")

	start := time.Now()
	if env.Broker != nil {
		env.Broker.Advance(delay - time.Second) // not yet due
		time.Sleep(200 * time.Millisecond)
		if c.Stats().Handled != 0 {
			return fmt.Errorf("a close check ran before its delay")
		}
	}
	if err := env.Wait(ctx, delay+time.Minute, func() bool { return c.Stats().Handled == 2 }); err != nil {
		return err
	}
	var o1, o2 string
	if err := env.DB.Get(&o1, "SELECT status FROM orders WHERE id = 'o-1'"); err != nil {
		return err
	}
	if err := env.DB.Get(&o2, "SELECT status FROM orders WHERE id = 'o-2'"); err != nil {
		return err
	}
	clock := "real time"
	if env.Broker != nil {
		clock = fmt.Sprintf("the broker's clock, in %v of real time", time.Since(start).Round(time.Second))
	}
	fmt.Fprintf(out, "after the delay (%s): o-1 %s, o-2 %s\n", clock, o1, o2)
	return nil
}
