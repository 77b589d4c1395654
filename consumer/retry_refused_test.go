package consumer_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/deadletter"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// TestAMessageWhoseRetryTheBrokerRefusesIsParked: a message sent by
// another client with properties just under the broker's limit (32,767
// bytes with its own) fails once. Its retry copy carries the retry's own
// properties too, and the broker refuses it for good (MESSAGE_ILLEGAL):
// the consumer parks the message (cause retry-refused) and goes on,
// where it tried to store the copy for ever and its queue stalled behind
// it. A message sent after it on the same queue is handled.
func TestAMessageWhoseRetryTheBrokerRefusesIsParked(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	sendNearLimit(t, f, "big")
	var handled, bigAttempts atomic.Int32
	h := func(_ context.Context, m *consumer.Message) error {
		if consumer.Key(m) == "big" {
			bigAttempts.Add(1)
			return errors.New("fails once, then its retry copy is refused")
		}
		handled.Add(1)
		return nil
	}
	f.start(consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithParker(f.dead)))
	f.eventually("the big message parked", func() bool { return len(f.parked()) == 1 })
	f.send(producer.Message{Keys: []string{"after"}, Body: []byte("small")})
	f.eventually("the message after it handled", func() bool { return handled.Load() == 1 })
	dl := f.parked()[0]
	if dl.Cause != consumer.CauseRetryRefused || !strings.Contains(dl.LastError, "code 13") ||
		len(dl.Properties["pad"]) < 32767-600 {
		t.Fatalf("dead letter cause %q, error %q, pad of %d bytes; want retry-refused, the broker's refusal and the whole pad",
			dl.Cause, dl.LastError, len(dl.Properties["pad"]))
	}
	// Replayed as it is, it would be refused too: Replay says so, and the
	// dead letter stays parked for a discard.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.dead.Replay(ctx, dl.ID, f.prod, "retry"); !errors.Is(err, producer.ErrInvalidMessage) {
		t.Errorf("replay: %v, want ErrInvalidMessage", err)
	}
	if dls := f.parked(); len(dls) != 1 || dls[0].Status != deadletter.Parked {
		t.Errorf("after the replay the dead letters are %+v, want the one parked", dls)
	}
	f.settle()
	if n := bigAttempts.Load(); n != 1 {
		t.Errorf("the big message ran %d times, want once", n)
	}
}
