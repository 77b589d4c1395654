package bench

import (
	"context"
	"fmt"

	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// sendPair: producer.Send against the raw client's SendSync, on w goroutines.
func (e *env) sendPair(w int) pair {
	return pair{name: fmt.Sprintf("producer send, %d goroutine(s)", w), baseline: "raw client SendSync",
		subject: "producer.Send", target: 0.95, workers: w,
		run: func(ctx context.Context) (sample, sample, error) { return e.runSend(ctx, w) }}
}

func (e *env) runSend(ctx context.Context, w int) (sample, sample, error) {
	topic, err := e.topic(ctx, "BenchSend")
	if err != nil {
		return sample{}, sample{}, err
	}
	raw := func() error {
		_, err := e.raw.SendSync(ctx, primitive.NewMessage(topic, e.body).WithKeys([]string{"k"}))
		return err
	}
	wrapped := func() error {
		_, err := e.prod.Send(ctx, producer.Message{Topic: topic, Body: e.body, Keys: []string{"k"}})
		return err
	}
	for _, warm := range []func() error{raw, wrapped} { // routes and connections
		if err := warm(); err != nil {
			return sample{}, sample{}, err
		}
	}
	return e.both(w, raw, wrapped)
}
