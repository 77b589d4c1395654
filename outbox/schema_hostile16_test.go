package outbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/migrations"
	"github.com/seed157d4c4d/reliablemq/outbox"
)

// TestOldSchemaWithCaseInsensitiveTopicsIsRefused runs the relay on a
// schema from before migration 00004, where topics compare without case:
// the enqueue of key k on topic orderevents, after k on OrderEvents, was
// taken for a duplicate (created false, no error) and never sent. Each
// call must fail instead, and the message be enqueued once the schema is
// current.
func TestOldSchemaWithCaseInsensitiveTopicsIsRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, r := setup(t, newFake())
	testenv.MigrateDownTo(t, db, 3)
	for _, topic := range []string{"OrderEvents", "orderevents"} {
		if id, created, err := r.Enqueue(ctx, db, outbox.Message{Topic: topic, Key: "k", Body: []byte(topic)}); err == nil {
			t.Errorf("enqueue on %s at schema version 3: id %d created %v, no error", topic, id, created)
		}
	}
	if _, err := r.Confirm(ctx, db, "orderevents", "k"); err == nil {
		t.Error("confirm at schema version 3: no error")
	}
	if err := migrations.Up(ctx, db.DB); err != nil {
		t.Fatal(err)
	}
	for _, topic := range []string{"OrderEvents", "orderevents"} {
		if _, created, err := r.Enqueue(ctx, db, outbox.Message{Topic: topic, Key: "k", Body: []byte(topic)}); err != nil || !created {
			t.Fatalf("enqueue on %s after the upgrade: created %v, %v", topic, created, err)
		}
	}
}

// TestFirstCallsInACallersTransactionOnAPoolOfOne: the relay's first
// Enqueue, Transact and Confirm check the table's schema. On a handle of
// one connection, held by the caller's transaction, a check on another
// connection would wait for it for ever (until ctx): each must finish on
// the transaction's own.
func TestFirstCallsInACallersTransactionOnAPoolOfOne(t *testing.T) {
	t.Parallel()
	db, _ := setup(t, newFake())
	db.SetMaxOpenConns(1)
	for _, call := range []string{"Enqueue", "Transact", "Confirm"} {
		t.Run(call, func(t *testing.T) {
			r, err := outbox.NewRelay(db, newFake()) // a relay whose table is not checked yet
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			switch call {
			case "Enqueue":
				tx, err := db.BeginTxx(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				defer tx.Rollback()
				_, _, err = r.Enqueue(ctx, tx, outbox.Message{Topic: "orders", Key: "pool-of-one", Body: []byte("x")})
				if err != nil {
					t.Fatal(err)
				}
			case "Transact":
				if err := r.Transact(ctx, placeOrder("pool-of-one-tx")); err != nil {
					t.Fatal(err)
				}
			case "Confirm":
				tx, err := db.BeginTxx(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				defer tx.Rollback()
				if _, err := r.Confirm(ctx, tx, "orders", "pool-of-one-tx"); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
