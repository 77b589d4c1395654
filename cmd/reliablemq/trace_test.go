package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/deadletter"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/outbox"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// TestTraceCommand builds the CLI and traces a key through every place:
// an outbox row sent, its copy on the broker, one group that handled it
// (done in the consume log) and one whose handler always fails (parked,
// with the retry copies in its %RETRY% topic).
func TestTraceCommand(t *testing.T) {
	t.Parallel()
	testenv.SkipUnderRace(t)
	bin := cliBinary(t)
	env := testenv.NewRocketMQ(t)
	db := testenv.MySQL(t)
	topic, good, bad := testenv.Name(t, "T"), testenv.Name(t, "Good"), testenv.Name(t, "Bad")
	env.CreateTopic(t, topic, 1)
	for _, g := range []string{good, bad} {
		env.CreateTopic(t, "%RETRY%"+g, 1)
	}
	ctx := context.Background()
	p, err := producer.New(env.NameServers())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	relay, err := outbox.NewRelay(db, p)
	if err != nil {
		t.Fatal(err)
	}
	key := "order-" + testenv.Name(t, "k")
	if err := relay.Transact(ctx, func(ctx context.Context, tx *outbox.Tx) error {
		_, err := tx.Enqueue(ctx, outbox.Message{Topic: topic, Key: key, Body: []byte("paid")})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := relay.Flush(ctx); err != nil { // the row's Sent mark, written in the background
		t.Fatal(err)
	}
	store, err := idempotency.NewMySQLStore(db)
	if err != nil {
		t.Fatal(err)
	}
	dead, err := deadletter.NewTable(db)
	if err != nil {
		t.Fatal(err)
	}
	for g, h := range map[string]consumer.Handler{
		good: func(context.Context, *consumer.Message) error { return nil },
		bad:  func(context.Context, *consumer.Message) error { return errors.New("coupon service down") },
	} {
		guard, err := idempotency.NewGuard(g, store)
		if err != nil {
			t.Fatal(err)
		}
		c, err := consumer.New(env.NameServers(), g, topic, h, consumer.WithGuard(guard), consumer.WithParker(dead),
			consumer.WithMaxAttempts(2), consumer.WithRetryDelay(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	env.Eventually(t, "handled by one group and parked by the other", time.Minute, func() bool {
		states, _ := store.Lookup(ctx, key, good)
		parked, _ := dead.List(ctx, deadletter.Filter{Key: key})
		return len(states) == 1 && states[0].Done && len(parked) == 1
	})
	dsn := testenv.MySQLDSN(t, db)
	out, errOut, code := runBinary(t, bin, "trace", "-dsn", dsn, "-namesrv", env.Namesrv, "-group", good+","+bad, key)
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q\n%s", code, errOut, out)
	}
	if testing.Verbose() {
		t.Logf("reliablemq trace %s\n%s", key, out)
	}
	for _, want := range []string{
		"outbox:", topic + "  sent", // the row, Sent
		"broker:", "%RETRY%" + bad, // the original and the bad group's retry copy
		"consume log (2 groups asked):", good + "  done",
		"dead letters:", bad + "  " + topic + "  parked  retries",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	broker := out[strings.Index(out, "broker:"):strings.Index(out, "consume log")]
	if !strings.Contains(broker, "\n  "+topic+" ") {
		t.Errorf("the original was not found on the broker by its key")
	}

	_, errOut, code = runBinary(t, bin, "trace", "-dsn", dsn, "-namesrv", env.Namesrv)
	if code != 2 || strings.Count(errOut, "\n") != 1 {
		t.Errorf("no key: exit %d, stderr %q", code, errOut)
	}
}
