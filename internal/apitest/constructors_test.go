// Package apitest_test holds cross-package hostile tests (constructors and
// options given nil, zero, negative and odd values): any panic is a bug;
// each must return an error or a working value.
package apitest_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/deadletter"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/observe"
	"github.com/seed157d4c4d/reliablemq/outbox"
	"github.com/seed157d4c4d/reliablemq/producer"
	"github.com/seed157d4c4d/reliablemq/reconcile"
)

func noPanic(t *testing.T, name string, fn func() error) {
	t.Helper()
	defer func() {
		if v := recover(); v != nil {
			t.Errorf("%s panicked: %v", name, v)
		}
	}()
	err := fn()
	t.Logf("%s: %v", name, err)
}

type nilParker struct{ *deadletter.Table }

func TestConstructorsNeverPanic(t *testing.T) {
	ns := []string{"127.0.0.1:1"}
	h := func(context.Context, *consumer.Message) error { return nil }
	ctx := context.Background()
	cases := map[string]func() error{
		"idempotency.NewGuard nil store": func() error { _, err := idempotency.NewGuard("g", nil); return err },
		"idempotency.NewGuard empty group": func() error {
			s, _ := idempotency.NewRedisStore(nil)
			_, err := idempotency.NewGuard("", s)
			return err
		},
		"idempotency.NewMySQLStore nil db": func() error { _, err := idempotency.NewMySQLStore(nil); return err },
		"idempotency.NewRedisStore nil":    func() error { _, err := idempotency.NewRedisStore(nil); return err },
		"idempotency.NewTxGuard nil db":    func() error { _, err := idempotency.NewTxGuard(nil, "g"); return err },
		"idempotency.WithLease(-1)": func() error {
			s, err := idempotency.NewMySQLStore(nil)
			if err != nil {
				return err
			}
			_, err = idempotency.NewGuard("g", s, idempotency.WithLease(-1))
			return err
		},
		"outbox.NewRelay nil db nil pub":  func() error { _, err := outbox.NewRelay(nil, nil); return err },
		"outbox.NewRelay WithLogger(nil)": func() error { _, err := outbox.NewRelay(nil, nil, outbox.WithLogger(nil)); return err },
		"outbox.NewTxMessenger nil db":    func() error { _, err := outbox.NewTxMessenger(nil, ns, "g"); return err },
		"deadletter.NewTable nil":         func() error { _, err := deadletter.NewTable(nil); return err },
		"deadletter.NewDrain nil parker":  func() error { _, err := deadletter.NewDrain(ns, "g", nil); return err },
		"deadletter.NewDrain interval 0": func() error {
			_, err := deadletter.NewDrain(ns, "g", &nilParker{}, deadletter.WithInterval(0))
			return err
		},
		"deadletter.NewDrain interval -1, nil logger": func() error {
			_, err := deadletter.NewDrain(ns, "g", &nilParker{}, deadletter.WithInterval(-1), deadletter.WithLogger(nil))
			return err
		},
		"deadletter.NewDrain nil logger Run": func() error {
			d, err := deadletter.NewDrain(ns, "g", &nilParker{}, deadletter.WithLogger(nil), deadletter.WithInterval(time.Millisecond))
			if err != nil {
				return err
			}
			c, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			defer cancel()
			return d.Run(c)
		},
		"reconcile.New nil relay": func() error { _, err := reconcile.New(nil); return err },
		"reconcile.New zero options": func() error {
			_, err := reconcile.New(nil, reconcile.WithInterval(0), reconcile.WithBatch(0), reconcile.WithLogger(nil),
				reconcile.WithRetention(-1), reconcile.WithConfirmTimeout(-1))
			return err
		},
		"producer.New nil names": func() error { _, err := producer.New(nil); return err },
		"producer.New zero/neg options": func() error {
			p, err := producer.New(ns, producer.WithRetry(0), producer.WithRetryBackoff(-1), producer.WithSendTimeout(0),
				producer.WithMaxBodySize(-1), producer.WithLogger(nil), producer.WithHooks(observe.Hooks{}),
				producer.WithQueueLossGrace(-1), producer.WithDelayLevels([]time.Duration{}))
			if err == nil {
				p.Close()
			}
			return err
		},
		"producer.New nil logger send": func() error {
			p, err := producer.New(ns, producer.WithLogger(nil), producer.WithRetry(2), producer.WithRetryBackoff(time.Millisecond),
				producer.WithSendTimeout(200*time.Millisecond))
			if err != nil {
				return err
			}
			defer p.Close()
			c, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			_, err = p.Send(c, producer.Message{Topic: "t", Body: []byte("x")})
			return err
		},
		"consumer.New zero/neg options": func() error {
			_, err := consumer.New(ns, "g", "t", h, consumer.WithParker(&nilParker{}), consumer.WithLogger(nil),
				consumer.WithBatchSize(0), consumer.WithConcurrency(-1), consumer.WithMaxAttempts(-1),
				consumer.WithShutdownTimeout(-1), consumer.WithHandlerTimeout(-1), consumer.WithRetryDelay(-time.Second),
				consumer.WithDelayLevels([]time.Duration{}), consumer.WithKeyFunc(nil))
			return err
		},
		"consumer.NewOrderly nil guard": func() error {
			_, err := consumer.NewOrderly(ns, "g", "t", h, consumer.ParkMessage, consumer.WithParker(&nilParker{}), consumer.WithGuard(nil))
			return err
		},
		"consumer.New WithDelayLevels(nil) + retry delay": func() error {
			_, err := consumer.New(ns, "g", "t", h, consumer.WithParker(&nilParker{}), consumer.WithDelayLevels(nil),
				consumer.WithRetryDelay(time.Hour*1000))
			return err
		},
		"idempotency.WithPrefix odd": func() error {
			var errs []error
			for _, p := range []string{"", "{", "}", "a b", "\n", "*", "\x00", "x{y}z"} {
				_, err := idempotency.NewRedisStore(nil, idempotency.WithPrefix(p))
				errs = append(errs, err)
			}
			return fmt.Errorf("%v", errs)
		},
		"idempotency.WithTable odd": func() error {
			var errs []error
			for _, n := range []string{"", "select", "order", "a-b", "a.b", "`x`", "x;drop", "t\x00"} {
				_, err := idempotency.NewTxGuard(nil, "g", idempotency.WithTable(n))
				errs = append(errs, err)
			}
			return fmt.Errorf("%v", errs)
		},
	}
	_ = slog.Default
	for name, fn := range cases {
		noPanic(t, name, fn)
	}
}
