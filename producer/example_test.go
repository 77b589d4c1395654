package producer_test

import (
	"context"
	"fmt"
	"log"

	"github.com/seed157d4c4d/reliablemq/producer"
	"github.com/seed157d4c4d/reliablemq/rmqtest"
)

func Example() {
	broker, err := rmqtest.Start() // a real cluster: its name server address
	if err != nil {
		log.Fatal(err)
	}
	defer broker.Close()

	p, err := producer.New([]string{broker.NamesrvAddr()})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()

	res, err := p.Send(context.Background(), producer.Message{
		Topic:       "orders",
		Body:        []byte(`{"order":"o-1","step":"paid"}`),
		Keys:        []string{"o-1"},
		ShardingKey: "o-1", // every step of o-1 goes to the same queue
	})
	switch {
	case producer.IsOutcomeUnknown(err):
		fmt.Println("maybe stored: resend and let the consumer dedup")
	case err != nil:
		fmt.Println("not stored:", err)
	default:
		fmt.Println("stored on attempt", res.Attempts)
	}
	// Output: stored on attempt 1
}
