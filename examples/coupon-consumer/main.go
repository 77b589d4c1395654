// Command coupon-consumer issues one coupon per paid order although the
// "order paid" message arrives three times (a payment callback retried
// upstream, a lost ack, a rebalance). It runs the same consumer twice: with
// the MySQL guard, whose dedup row commits in the coupon's own transaction,
// and with the Redis guard around an effect outside the database.
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

	"github.com/jmoiron/sqlx"
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
	env, err := exampleenv.Setup(ctx, "example_coupon_consumer")
	if err != nil {
		return err
	}
	defer env.Close()
	env.DB.MustExec("CREATE TABLE coupons (order_id VARCHAR(64) NOT NULL, amount INT NOT NULL)")
	if err := env.CreateTopic(ctx, "order-paid", 4, "coupon-mysql", "coupon-redis"); err != nil {
		return err
	}
	dead, err := deadletter.NewTable(env.DB)
	if err != nil {
		return err
	}

	// MySQL: the coupon and the dedup row in one transaction.
	txGuard, err := idempotency.NewTxGuard(env.DB, "coupon-mysql")
	if err != nil {
		return err
	}
	var skipped atomic.Int32
	viaMySQL, err := consumer.New(env.NameServers, "coupon-mysql", "order-paid", func(ctx context.Context, m *consumer.Message) error {
		outcome, err := txGuard.Do(ctx, consumer.Key(m), func(ctx context.Context, tx *sqlx.Tx) error {
			_, err := tx.ExecContext(ctx, "INSERT INTO coupons (order_id, amount) VALUES (?, 5)", consumer.Key(m))
			return err
		})
		switch {
		case err != nil:
			return err
		case outcome == idempotency.Busy:
			// A claim-mode guard of the group holds the key: retry, never ack.
			return errors.New("order-paid: key busy")
		case outcome == idempotency.Done:
			skipped.Add(1)
		}
		return nil
	}, consumer.WithParker(dead))
	if err != nil {
		return err
	}

	// Redis: claim, run, mark done; a crash mid-handler frees the key after the lease.
	// (A fresh prefix per run: done markers live 7 days, across runs.)
	store, err := idempotency.NewRedisStore(env.Redis, idempotency.WithPrefix(fmt.Sprintf("example:coupons:%d:", time.Now().UnixNano())))
	if err != nil {
		return err
	}
	guard, err := idempotency.NewGuard("coupon-redis", store, idempotency.WithLease(30*time.Second))
	if err != nil {
		return err
	}
	var pushes atomic.Int32
	viaRedis, err := consumer.New(env.NameServers, "coupon-redis", "order-paid", func(ctx context.Context, m *consumer.Message) error {
		pushes.Add(1) // "send the coupon push notification"
		return nil
	}, consumer.WithGuard(guard), consumer.WithParker(dead))
	if err != nil {
		return err
	}
	for _, c := range []*consumer.Consumer{viaMySQL, viaRedis} {
		env.Go(ctx, c.Run)
	}

	p, err := producer.New(env.NameServers)
	if err != nil {
		return err
	}
	defer p.Close()
	for range 3 {
		if _, err := p.Send(ctx, producer.Message{Topic: "order-paid", Keys: []string{"order-42"}, Body: []byte(`{"order":"order-42"}`)}); err != nil {
			return err
		}
	}
	fmt.Fprintln(out, `"order-42 paid" delivered 3 times`)
	err = env.Wait(ctx, time.Minute, func() bool {
		return viaMySQL.Stats().Handled == 3 &&
			viaRedis.Stats().Handled+viaRedis.Stats().Duplicates == 3
	})
	if err != nil {
		return err
	}
	var coupons int
	if err := env.DB.Get(&coupons, "SELECT COUNT(*) FROM coupons WHERE order_id = 'order-42'"); err != nil {
		return err
	}
	fmt.Fprintf(out, "MySQL guard: %d coupon row, %d duplicates acknowledged\n", coupons, skipped.Load())
	fmt.Fprintf(out, "Redis guard: %d push, %d duplicates acknowledged\n", pushes.Load(), viaRedis.Stats().Duplicates)
	return nil
}
