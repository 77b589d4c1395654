// Command order-outbox is an order service using the transactional outbox:
// the order row and its message row commit together, the message is sent
// right after the commit, and the reconcile job sends what a crash left
// behind.
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	"github.com/seed157d4c4d/reliablemq/examples/internal/exampleenv"
	"github.com/seed157d4c4d/reliablemq/outbox"
	"github.com/seed157d4c4d/reliablemq/producer"
	"github.com/seed157d4c4d/reliablemq/reconcile"
)

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, out io.Writer) error {
	env, err := exampleenv.Setup(ctx, "example_order_outbox")
	if err != nil {
		return err
	}
	defer env.Close()
	env.DB.MustExec("CREATE TABLE orders (id VARCHAR(64) PRIMARY KEY, total INT NOT NULL)")
	if err := env.CreateTopic(ctx, "order-events", 4); err != nil {
		return err
	}
	p, err := producer.New(env.NameServers)
	if err != nil {
		return err
	}
	defer p.Close()
	relay, err := outbox.NewRelay(env.DB, p)
	if err != nil {
		return err
	}

	// The API handler: business row + outbox row in one transaction.
	placeOrder := func(id string, total int) error {
		return relay.Transact(ctx, func(ctx context.Context, tx *outbox.Tx) error {
			if _, err := tx.ExecContext(ctx, "INSERT INTO orders (id, total) VALUES (?, ?)", id, total); err != nil {
				return err
			}
			_, err := tx.Enqueue(ctx, outbox.Message{Topic: "order-events", Key: id, Tag: "created",
				Body: fmt.Appendf(nil, `{"order":%q,"total":%d}`, id, total)})
			return err
		})
	}
	if err := placeOrder("o-1", 100); err != nil {
		return err
	}
	// The Sent mark is written in the background, many calls' to a
	// statement; Flush waits for it (a service calls it before exiting).
	if err := relay.Flush(ctx); err != nil {
		return err
	}
	row, err := relay.List(ctx, outbox.Sent, 0, 10)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "o-1 committed and sent right after the commit: %d row sent\n", len(row))

	// A crash between commit and send: the row is committed, nobody sent it.
	tx := env.DB.MustBegin()
	tx.MustExec("INSERT INTO orders (id, total) VALUES ('o-2', 250)")
	if _, _, err := relay.Enqueue(ctx, tx, outbox.Message{Topic: "order-events", Key: "o-2", Tag: "created", Body: []byte(`{"order":"o-2"}`)}); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	fmt.Fprintln(out, "o-2 committed, then the process died before sending")

	// The reconcile job (normally `reliablemq reconcile -every 10s`).
	job, err := reconcile.New(relay, reconcile.WithInterval(time.Second))
	if err != nil {
		return err
	}
	rep, err := job.RunOnce(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "reconcile sent %d, pending now %d\n", rep.Sent, rep.Pending)

	// A retried API call enqueues once.
	if err := placeOrder("o-1", 100); err != nil {
		fmt.Fprintln(out, "placing o-1 again fails on the order's primary key; the outbox holds one o-1 row")
	}
	return nil
}
