package consumer_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	rmqproducer "github.com/apache/rocketmq-client-go/v2/producer"
	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

// TestACompressedMessageIsRetriedNotRefused: another client sends a body
// larger than the broker's maxMessageSize (4 MiB) that compresses well;
// the client compresses it and the broker stores it. The consumer gets it
// inflated, and its handler fails once: the retry copy must be stored as
// the original was, compressed, and the message handled on its second
// attempt. Sent inflated, the copy was over the limit, refused with
// MESSAGE_ILLEGAL and the message parked as retry-refused: a message
// that could be retried dropped from the normal flow.
func TestACompressedMessageIsRetriedNotRefused(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	raw, err := rocketmq.NewProducer(rmqproducer.WithNameServer(f.env.NameServers()),
		rmqproducer.WithGroupName(testenv.Name(t, "RP")), rmqproducer.WithInstanceName(testenv.Name(t, "rawp")),
		rmqproducer.WithRetry(0))
	if err != nil {
		t.Fatal(err)
	}
	if err := raw.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Shutdown() })
	body := strings.Repeat("compressible ", (5<<20)/13)
	m := primitive.NewMessage(f.topic, []byte(body))
	m.WithKeys([]string{"big"})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	r, err := raw.SendSync(ctx, m)
	cancel()
	if err != nil || r.Status != primitive.SendOK {
		t.Fatalf("send of a compressible %d-byte body: %v %v", len(body), r, err)
	}
	var attempts, handled atomic.Int32
	h := func(_ context.Context, m *consumer.Message) error {
		attempts.Add(1)
		if string(m.Body) != body {
			return consumer.Permanent(errors.New("body changed"))
		}
		if m.Attempt == 1 {
			return errors.New("fails once")
		}
		handled.Add(1)
		return nil
	}
	f.start(consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithParker(f.dead)))
	f.eventually("the message handled on its retry, or parked", func() bool { return handled.Load() == 1 || len(f.parked()) > 0 })
	if dls := f.parked(); len(dls) > 0 {
		t.Fatalf("parked as %q after %d attempts (%s), want retried and handled", dls[0].Cause, attempts.Load(), dls[0].LastError)
	}
}
