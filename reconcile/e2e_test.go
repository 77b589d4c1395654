package reconcile_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/deadletter"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/outbox"
	"github.com/seed157d4c4d/reliablemq/producer"
	"github.com/seed157d4c4d/reliablemq/reconcile"
	"github.com/seed157d4c4d/reliablemq/rmqtest"
)

// TestOutageAndLostAckEndToEnd: orders are placed while the broker is down
// and while acks are lost; everything committed reaches the guarded
// consumer, each order's coupon exactly once.
func TestOutageAndLostAckEndToEnd(t *testing.T) {
	t.Parallel()
	testenv.SkipUnderRace(t)
	env := testenv.NewRocketMQ(t)
	b := env.RequireEmbedded(t)
	topic, group := testenv.Name(t, "T"), testenv.Name(t, "G")
	env.CreateTopic(t, topic, 4)
	env.CreateTopic(t, "%RETRY%"+group, 1)
	db := testenv.MySQL(t)
	db.MustExec("CREATE TABLE orders (id VARCHAR(64) PRIMARY KEY)")
	db.MustExec("CREATE TABLE coupons (order_id VARCHAR(64) NOT NULL)")

	p, err := producer.New(env.NameServers(), producer.WithSendTimeout(500*time.Millisecond),
		producer.WithRetryBackoff(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	relay, err := outbox.NewRelay(db, p, outbox.WithBackoff(10*time.Millisecond, 50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	txGuard, err := idempotency.NewTxGuard(db, group)
	if err != nil {
		t.Fatal(err)
	}
	dead, _ := deadletter.NewTable(db)
	c, err := consumer.New(env.NameServers(), group, topic, func(ctx context.Context, m *consumer.Message) error {
		_, err := txGuard.Do(ctx, consumer.Key(m), func(ctx context.Context, tx *sqlx.Tx) error {
			_, err := tx.ExecContext(ctx, "INSERT INTO coupons (order_id) VALUES (?)", consumer.Key(m))
			return err
		})
		return err
	}, consumer.WithParker(dead), consumer.WithRetryDelay(time.Second))
	if err != nil {
		t.Fatal(err)
	}

	ctx := context.Background()
	place := func(id string) {
		t.Helper()
		err := relay.Transact(ctx, func(ctx context.Context, tx *outbox.Tx) error {
			if _, err := tx.ExecContext(ctx, "INSERT INTO orders (id) VALUES (?)", id); err != nil {
				return err
			}
			_, err := tx.Enqueue(ctx, outbox.Message{Topic: topic, Key: id, Body: []byte(id)})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	place("before")
	if err := relay.Flush(ctx); err != nil { // its Sent mark, written in the background
		t.Fatal(err)
	}
	if err := b.Down(); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"down-1", "down-2", "down-3"} {
		place(id)
	}
	var pending int
	if err := db.Get(&pending, "SELECT COUNT(*) FROM mq_log WHERE status = 0"); err != nil || pending != 3 {
		t.Fatalf("%d pending rows during the outage (%v), want 3", pending, err)
	}
	if err := b.Up(); err != nil {
		t.Fatal(err)
	}
	// The consumer starts after the outage: a push consumer whose broker
	// went away resumes only when its held pull times out (30 s, the
	// client's), which would only slow this test down.
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b.Inject(rmqtest.SendMessage, rmqtest.Fault{DropReply: true, Times: 2})
	place("lost-ack")
	job, err := reconcile.New(relay, reconcile.WithInterval(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	jctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = job.Run(jctx) })
	defer func() { stop(); wg.Wait() }()

	orders := []string{"before", "down-1", "down-2", "down-3", "lost-ack"}
	deadline := time.Now().Add(waitFor)
	for {
		var n, pending int
		if err := db.Get(&n, "SELECT COUNT(DISTINCT order_id) FROM coupons"); err != nil {
			t.Fatal(err)
		}
		if err := db.Get(&pending, "SELECT COUNT(*) FROM mq_log WHERE status = 0"); err != nil {
			t.Fatal(err)
		}
		if n == len(orders) && pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d orders got coupons", n, len(orders))
		}
		b.Advance(time.Second)
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	for _, id := range orders {
		var n int
		if err := db.Get(&n, "SELECT COUNT(*) FROM coupons WHERE order_id = ?", id); err != nil || n != 1 {
			t.Errorf("order %s: %d coupons (%v), want 1", id, n, err)
		}
	}
	// Each of the two lost acks left a stored copy that was sent again.
	if stored := len(b.Messages(topic)); stored < len(orders)+2 {
		t.Errorf("%d messages stored for %d orders; the lost acks should have caused duplicates on the wire", stored, len(orders))
	}
}

const waitFor = 60 * time.Second
