// Command dead-letters shows the manual-handling workflow: a consumer
// parks the messages it cannot handle (after its retry cap, or at once for
// a permanent error) with their error and attempt count, alerts once per
// message, and acknowledges them; an operator lists them, replays one after
// the fix, and discards another with a reason. The same operations are
// `reliablemq dead list|show|replay|discard`.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"sync/atomic"
	"time"

	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/deadletter"
	"github.com/seed157d4c4d/reliablemq/examples/internal/exampleenv"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/producer"
)

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, out io.Writer) error {
	env, err := exampleenv.Setup(ctx, "example_dead_letters")
	if err != nil {
		return err
	}
	defer env.Close()
	if err := env.CreateTopic(ctx, "invoices", 1, "invoicing"); err != nil {
		return err
	}
	dead, err := deadletter.NewTable(env.DB)
	if err != nil {
		return err
	}
	store, err := idempotency.NewMySQLStore(env.DB)
	if err != nil {
		return err
	}
	guard, err := idempotency.NewGuard("invoicing", store)
	if err != nil {
		return err
	}
	var taxTableLoaded atomic.Bool
	var issued, alerts atomic.Int32
	handle := func(ctx context.Context, m *consumer.Message) error {
		switch {
		case string(m.Body) == "test":
			return consumer.Permanent(errors.New("test invoice in production"))
		case !taxTableLoaded.Load():
			return fmt.Errorf("attempt %d: no tax rate for region XK", m.Attempt)
		}
		issued.Add(1)
		return nil
	}
	c, err := consumer.New(env.NameServers, "invoicing", "invoices", handle,
		consumer.WithGuard(guard), consumer.WithParker(dead), consumer.WithMaxAttempts(3),
		consumer.WithRetryDelay(time.Second),
		consumer.WithAlert(func(ctx context.Context, d *consumer.DeadLetter) { alerts.Add(1) }))
	if err != nil {
		return err
	}
	env.Go(ctx, c.Run)
	p, err := producer.New(env.NameServers)
	if err != nil {
		return err
	}
	defer p.Close()
	for _, m := range []producer.Message{
		{Topic: "invoices", Keys: []string{"inv-1"}, Body: []byte("region XK")},
		{Topic: "invoices", Keys: []string{"inv-2"}, Body: []byte("test")},
	} {
		if _, err := p.Send(ctx, m); err != nil {
			return err
		}
	}
	list := func() []*deadletter.Entry {
		dls, err := dead.List(ctx, deadletter.Filter{Group: "invoicing", Status: deadletter.Parked})
		if err != nil {
			return nil
		}
		return dls
	}
	// A message is recorded before its alert fires: wait for both.
	if err := env.Wait(ctx, time.Minute, func() bool { return len(list()) == 2 && alerts.Load() == 2 }); err != nil {
		return err
	}
	fmt.Fprintf(out, "parked (%d alerts):\n", alerts.Load())
	for _, d := range list() {
		fmt.Fprintf(out, "  #%d %s keys=%v cause=%s attempts=%d error=%q\n", d.ID, d.Topic, d.Keys, d.Cause, d.Attempts, d.LastError)
	}
	byKey := map[string]int64{}
	for _, d := range list() {
		byKey[d.Keys[0]] = d.ID
	}
	taxTableLoaded.Store(true) // the fix is deployed
	if err := dead.Replay(ctx, byKey["inv-1"], p, "tax table for XK loaded"); err != nil {
		return err
	}
	if err := dead.Discard(ctx, byKey["inv-2"], "test data"); err != nil {
		return err
	}
	if err := env.Wait(ctx, time.Minute, func() bool { return issued.Load() == 1 }); err != nil {
		return err
	}
	fmt.Fprintf(out, "replayed #%d and discarded #%d; invoices issued: %d; still parked: %d\n",
		byKey["inv-1"], byKey["inv-2"], issued.Load(), len(list()))
	return nil
}
