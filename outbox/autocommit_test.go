package outbox_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/internal/sqldb"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/outbox"
)

// TestRelayRefusesAutocommitOff: on a handle whose sessions run with
// autocommit=0 a row enqueued outside a transaction, and every mark after
// a send, would stay uncommitted, and the rows would be sent again at
// every lease's end. Every call refuses the handle before it sends
// anything, and the business function of Transact does not run.
func TestRelayRefusesAutocommitOff(t *testing.T) {
	t.Parallel()
	db := testenv.MySQL(t)
	off := testenv.MySQLAutocommitOff(t, db)
	pub := newFake()
	r := relayOn(t, off, pub)
	ctx := context.Background()
	refused := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, sqldb.ErrAutocommitOff) {
			t.Fatalf("%s: %v, want the handle refused", what, err)
		}
	}
	topic := testenv.Name(t, "T")
	_, _, err := r.Enqueue(ctx, off, outbox.Message{Topic: topic, Key: "k", Body: []byte("x")})
	refused("Enqueue", err)
	ran := false
	refused("Transact", r.Transact(ctx, func(context.Context, *outbox.Tx) error { ran = true; return nil }))
	if ran {
		t.Fatal("Transact ran the business function on a refused handle")
	}
	// A row committed through a good handle is not sent through a refused one.
	if _, _, err := relayOn(t, db, pub).Enqueue(ctx, db, outbox.Message{Topic: topic, Key: "due", Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	_, err = r.DispatchDue(ctx, 10)
	refused("DispatchDue", err)
	_, err = r.Backlog(ctx)
	refused("Backlog", err)
	if sent := pub.order(); len(sent) != 0 {
		t.Fatalf("sent %v through a refused handle", sent)
	}
	var n int
	if err := db.Get(&n, "SELECT COUNT(*) FROM mq_log WHERE topic = ?", []byte(topic)); err != nil || n != 1 {
		t.Fatalf("%d rows of the topic, want only the one written through the good handle (%v)", n, err)
	}
}

// TestTxMessengerRefusesAutocommitOff: Send refuses the handle before the
// half message, so the broker never holds a message whose record could
// not commit.
func TestTxMessengerRefusesAutocommitOff(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t)
	b := env.RequireEmbedded(t)
	topic := testenv.Name(t, "T")
	env.CreateTopic(t, topic, 2)
	db := testenv.MySQL(t)
	m, err := outbox.NewTxMessenger(testenv.MySQLAutocommitOff(t, db), env.NameServers(), testenv.Name(t, "PG"),
		outbox.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ran := false
	err = m.Send(context.Background(), outbox.Message{Topic: topic, Key: "k", Body: []byte("x")},
		func(context.Context, *sqlx.Tx) error { ran = true; return nil })
	if !errors.Is(err, sqldb.ErrAutocommitOff) || ran {
		t.Fatalf("Send: %v, business function ran %v; want the handle refused first", err, ran)
	}
	if n, half := len(b.Messages(topic)), b.HalfMessages(); n != 0 || half != 0 {
		t.Fatalf("%d messages and %d half messages reached the broker", n, half)
	}
}
