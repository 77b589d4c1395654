package idempotency_test

import (
	"context"
	"fmt"
	"log"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/seed157d4c4d/reliablemq/idempotency"
)

func ExampleGuard_Do() {
	srv, err := miniredis.Run() // a real deployment: its Redis address
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()

	store, err := idempotency.NewRedisStore(rdb)
	if err != nil {
		log.Fatal(err)
	}
	guard, err := idempotency.NewGuard("coupon-service", store)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	for range 3 { // the same message delivered three times
		outcome, err := guard.Do(ctx, "order-42", func(context.Context) error {
			fmt.Println("coupon issued for order-42")
			return nil
		})
		fmt.Println(outcome, err)
	}
	// Output:
	// coupon issued for order-42
	// acquired <nil>
	// done <nil>
	// done <nil>
}
