// Command tx-message uses RocketMQ transactional messages instead of the
// outbox relay: a half message is stored first, the business transaction
// runs and records the message row, and the message becomes visible only
// if that transaction committed. When the commit or rollback never reaches
// the broker (the process died right after its transaction), the broker
// checks back and the answer comes from the table.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/examples/internal/exampleenv"
	"github.com/seed157d4c4d/reliablemq/outbox"
	"github.com/seed157d4c4d/reliablemq/rmqtest"
)

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, out io.Writer) error {
	env, err := exampleenv.Setup(ctx, "example_tx_message")
	if err != nil {
		return err
	}
	defer env.Close()
	env.DB.MustExec("CREATE TABLE payments (order_id VARCHAR(64) PRIMARY KEY, amount INT NOT NULL)")
	if err := env.CreateTopic(ctx, "payments", 2); err != nil {
		return err
	}
	m, err := outbox.NewTxMessenger(env.DB, env.NameServers, "payment-service")
	if err != nil {
		return err
	}
	defer m.Close()
	pay := func(order string, amount int) error {
		msg := outbox.Message{Topic: "payments", Key: order, Body: fmt.Appendf(nil, `{"order":%q,"amount":%d}`, order, amount)}
		return m.Send(ctx, msg, func(ctx context.Context, tx *sqlx.Tx) error {
			if amount <= 0 {
				return errors.New("invalid amount")
			}
			_, err := tx.ExecContext(ctx, "INSERT INTO payments (order_id, amount) VALUES (?, ?)", order, amount)
			return err
		})
	}
	fmt.Fprintf(out, "pay o-1: %v\n", pay("o-1", 30))
	fmt.Fprintf(out, "pay o-2: %v (the half message is rolled back)\n", pay("o-2", -5))

	if env.Broker == nil {
		fmt.Fprintln(out, "skipped: losing the commit on its way to the broker needs rmqtest's fault injection (RMQ_NAMESRV names a real broker)")
		return nil
	}
	// The process "dies" after its local transaction: the outcome never
	// reaches the broker.
	env.Broker.Inject(rmqtest.EndTransaction, rmqtest.Fault{Code: rmqtest.CodeSystemError})
	fmt.Fprintf(out, "pay o-3: %v (committed locally; the commit never reached the broker)\n", pay("o-3", 70))
	visible := func(order string) bool {
		for _, msg := range env.Broker.Messages("payments") {
			if len(msg.Keys) == 1 && msg.Keys[0] == order {
				return true
			}
		}
		return false
	}
	fmt.Fprintf(out, "o-3 visible before the check-back: %v\n", visible("o-3"))
	// Check-backs go to a producer that has registered by heartbeat.
	for deadline := time.Now().Add(10 * time.Second); env.Broker.Producers("payment-service") == 0; {
		if time.Now().After(deadline) {
			return errors.New("the producer never registered with the broker")
		}
		time.Sleep(20 * time.Millisecond)
	}
	env.Broker.Advance(7 * time.Second) // the broker's first check-back
	if err := env.Wait(ctx, 10*time.Second, func() bool { return visible("o-3") }); err != nil {
		return err
	}
	fmt.Fprintf(out, "after the check-back, answered from the table: o-1 %v, o-2 %v, o-3 %v\n",
		visible("o-1"), visible("o-2"), visible("o-3"))
	return nil
}
