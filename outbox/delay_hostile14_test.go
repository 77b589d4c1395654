package outbox_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/outbox"
)

// TestKeyedRowWithADelayIsRefused: rows of a sharding key are sent one
// after another, but a delayed one would reach the broker's queue only
// when its delay ends, behind the key's later rows sent meanwhile. The
// outbox refuses it when it is enqueued, not at the send (where it would
// go Dead and hold its key), and writes nothing.
func TestKeyedRowWithADelayIsRefused(t *testing.T) {
	t.Parallel()
	pub := newFake()
	db, r := setup(t, pub)
	ctx := context.Background()
	m := outbox.Message{Topic: "t", Key: "o-1-timeout", Body: []byte("x"), ShardingKey: "o-1", Delay: time.Minute}
	if _, _, err := r.Enqueue(ctx, db, m); !errors.Is(err, outbox.ErrInvalidMessage) {
		t.Fatalf("Enqueue: %v, want ErrInvalidMessage", err)
	}
	err := r.Transact(ctx, func(ctx context.Context, tx *outbox.Tx) error {
		_, err := tx.Enqueue(ctx, m)
		return err
	})
	if !errors.Is(err, outbox.ErrInvalidMessage) {
		t.Fatalf("Tx.Enqueue: %v, want ErrInvalidMessage", err)
	}
	if n := count(t, db, "SELECT COUNT(*) FROM mq_log"); n != 0 {
		t.Fatalf("%d rows written", n)
	}
	m.ShardingKey = ""
	if _, created, err := r.Enqueue(ctx, db, m); err != nil || !created {
		t.Fatalf("delayed row without a sharding key: created %v, %v", created, err)
	}
}
