package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// TestOptionsShapeWhatIsHandled: the tag expression filters, the key func
// is what the guard dedups on, the logger receives the retries, and a
// custom delay table bounds the retry delay.
func TestOptionsShapeWhatIsHandled(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	var logs testenv.Logs
	var mu sync.Mutex
	handled := map[string]int{}
	var failed atomic.Bool
	h := func(ctx context.Context, m *consumer.Message) error {
		if string(m.Body) == "flaky" && failed.CompareAndSwap(false, true) {
			return errors.New("first try fails")
		}
		mu.Lock()
		defer mu.Unlock()
		handled[string(m.Body)]++
		return nil
	}
	levels := []time.Duration{time.Second, 2 * time.Second}
	if _, err := consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithParker(f.dead),
		consumer.WithDelayLevels(levels), consumer.WithRetryDelay(3*time.Second)); err == nil {
		t.Fatal("a retry delay beyond the custom delay table was accepted")
	}
	byOrder := func(m *consumer.Message) string { return m.Properties["order"] }
	f.start(consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithParker(f.dead),
		consumer.WithGuard(f.guard()), consumer.WithKeyFunc(byOrder), consumer.WithTagExpression("paid"),
		consumer.WithInstanceName(testenv.Name(t, "inst")), consumer.WithDelayLevels(levels),
		consumer.WithRetryDelay(2*time.Second), consumer.WithLogger(logs.Logger())))
	f.send(producer.Message{Body: []byte("paid-1"), Keys: []string{"k1"}, Tag: "paid", Properties: map[string]string{"order": "o-1"}})
	f.send(producer.Message{Body: []byte("paid-2"), Keys: []string{"k2"}, Tag: "paid", Properties: map[string]string{"order": "o-1"}})
	f.send(producer.Message{Body: []byte("refund"), Keys: []string{"k3"}, Tag: "refunded", Properties: map[string]string{"order": "o-2"}})
	f.send(producer.Message{Body: []byte("flaky"), Keys: []string{"k4"}, Tag: "paid", Properties: map[string]string{"order": "o-3"}})
	f.eventually("the flaky message handled after its retry", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return handled["flaky"] == 1
	})
	f.settle()
	mu.Lock()
	defer mu.Unlock()
	if handled["paid-1"]+handled["paid-2"] != 1 {
		t.Errorf("order o-1 handled %d times under two message keys; the key func must dedup it", handled["paid-1"]+handled["paid-2"])
	}
	if handled["refund"] != 0 {
		t.Error("a message outside the tag expression was handled")
	}
	if out := logs.String(); !strings.Contains(out, "handler failed, retrying") || !strings.Contains(out, "first try fails") {
		t.Errorf("the retry did not reach the configured logger:\n%s", out)
	}
}

// TestRunStartsConsumesAndStopsWithItsCtx: Run is Start, consume, Close.
func TestRunStartsConsumesAndStopsWithItsCtx(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	var handled atomic.Int32
	c, err := consumer.New(f.env.NameServers(), f.group, f.topic, func(ctx context.Context, m *consumer.Message) error {
		handled.Add(1)
		return nil
	}, consumer.WithParker(f.dead))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	f.send(producer.Message{Body: []byte("x"), Keys: []string{"k"}})
	f.eventually("handled", func() bool { return handled.Load() == 1 })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Run did not return after its ctx ended")
	}
	if err := c.Run(context.Background()); !errors.Is(err, consumer.ErrClosed) {
		t.Fatalf("Run after Run returned: %v, want ErrClosed", err)
	}
}

func TestPermanentIsSeenThroughWrapping(t *testing.T) {
	t.Parallel()
	base := errors.New("unknown coupon type")
	if !consumer.IsPermanent(fmt.Errorf("handler: %w", consumer.Permanent(base))) {
		t.Error("a wrapped permanent error is not permanent")
	}
	if consumer.IsPermanent(base) || consumer.Permanent(nil) != nil {
		t.Error("a plain error is permanent, or Permanent(nil) is not nil")
	}
	if !errors.Is(consumer.Permanent(base), base) {
		t.Error("Permanent hides the error it wraps")
	}
}

// TestStartWithCredentialsRefusesWhatItCannotVerify: with an ACL account
// configured and no name server answering, Start says so instead of
// starting a consumer that may consume nothing without a word.
func TestStartWithCredentialsRefusesWhatItCannotVerify(t *testing.T) {
	t.Parallel()
	// Port 1: a port just closed may be given to another test's listener
	// meanwhile; port 1 is never handed to one asking for a free port.
	down := "127.0.0.1:1"
	h := func(context.Context, *consumer.Message) error { return nil }
	c, err := consumer.New([]string{down}, "g", "t", h, consumer.WithParker(&memoryParker{}),
		consumer.WithCredentials(producer.Credentials{AccessKey: "ak", SecretKey: "sk"}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Start(); !errors.Is(err, consumer.ErrAccessUnverified) {
		t.Fatalf("Start = %v, want ErrAccessUnverified", err)
	}
}
