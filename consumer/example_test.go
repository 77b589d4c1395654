// The official client v2.1.2 races with itself inside the push consumer
// (see internal/testenv.SkipUnderRace), so this example runs in the
// non-race pass only.

//go:build !race

package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/producer"
	"github.com/seed157d4c4d/reliablemq/rmqtest"
)

func Example() {
	broker, err := rmqtest.Start()
	if err != nil {
		log.Fatal(err)
	}
	defer broker.Close()
	redisSrv, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	defer redisSrv.Close()
	rdb := redis.NewClient(&redis.Options{Addr: redisSrv.Addr()})
	defer rdb.Close()
	store, _ := idempotency.NewRedisStore(rdb)
	guard, err := idempotency.NewGuard("coupon-service", store)
	if err != nil {
		log.Fatal(err)
	}

	issued := make(chan string, 10)
	parked := make(chan string, 10)
	handler := func(ctx context.Context, m *consumer.Message) error {
		if string(m.Body) == "unknown-coupon" {
			return consumer.Permanent(errors.New("no such coupon type"))
		}
		issued <- consumer.Key(m)
		return nil
	}
	c, err := consumer.New([]string{broker.NamesrvAddr()}, "coupon-service", "orders", handler,
		consumer.WithGuard(guard), consumer.WithParker(&memoryParker{}),
		consumer.WithAlert(func(ctx context.Context, d *consumer.DeadLetter) { parked <- d.Keys[0] }))
	if err != nil {
		log.Fatal(err)
	}
	if err := broker.CreateTopic("orders", 1); err != nil {
		log.Fatal(err)
	}
	if err := c.Start(); err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	p, _ := producer.New([]string{broker.NamesrvAddr()})
	defer p.Close()
	send := func(body, key string) {
		m := producer.Message{Topic: "orders", Body: []byte(body), Keys: []string{key}}
		if _, err := p.Send(context.Background(), m); err != nil {
			log.Fatal(err)
		}
	}
	send("welcome-coupon", "order-1")
	fmt.Println("issued for", <-issued)
	for c.Stats().Handled == 0 { // recorded done in the guard
		time.Sleep(10 * time.Millisecond)
	}
	send("welcome-coupon", "order-1") // a resend: acknowledged, not issued again
	send("unknown-coupon", "order-2")
	fmt.Println("parked", <-parked)
	for c.Stats().Duplicates == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Printf("%+v\n", c.Stats())
	// Output:
	// issued for order-1
	// parked order-2
	// {Handled:1 Duplicates:1 Retries:0 Busy:0 Parked:1 StoreErrors:0}
}
