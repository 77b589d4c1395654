package outbox_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/outbox"
	"github.com/seed157d4c4d/reliablemq/producer"
	"github.com/seed157d4c4d/reliablemq/rmqtest"
)

func TestTxMessengerCommitRollbackAndCheckBack(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t, rmqtest.WithTransactionCheck(6*time.Second, 60*time.Second, 15))
	b := env.RequireEmbedded(t)
	topic := testenv.Name(t, "T")
	env.CreateTopic(t, topic, 2)
	db := testenv.MySQL(t)
	db.MustExec("CREATE TABLE orders (id VARCHAR(64) PRIMARY KEY)")
	group := testenv.Name(t, "PG")
	// Credentials are passed to the transactional producer (rmqtest does
	// not check them; producer's tests check the requests are signed).
	m, err := outbox.NewTxMessenger(db, env.NameServers(), group, outbox.WithLogger(slog.New(slog.DiscardHandler)),
		outbox.WithCredentials(producer.Credentials{AccessKey: "ak", SecretKey: "sk"}))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	order := func(id string, fail error) func(context.Context, *sqlx.Tx) error {
		return func(ctx context.Context, tx *sqlx.Tx) error {
			if _, err := tx.ExecContext(ctx, "INSERT INTO orders (id) VALUES (?)", id); err != nil {
				return err
			}
			return fail
		}
	}
	visible := func(key string) int {
		n := 0
		for _, msg := range b.Messages(topic) {
			if len(msg.Keys) == 1 && msg.Keys[0] == key {
				n++
			}
		}
		return n
	}
	rows := func(q string, args ...any) int {
		var n int
		if err := db.Get(&n, q, args...); err != nil {
			t.Fatal(err)
		}
		return n
	}
	msg := func(key string) outbox.Message { return outbox.Message{Topic: topic, Key: key, Body: []byte(key)} }

	if err := m.Send(bg, msg("commit"), order("commit", nil)); err != nil {
		t.Fatalf("commit: %v", err)
	}
	boom := errors.New("payment declined")
	if err := m.Send(bg, msg("rollback"), order("rollback", boom)); !errors.Is(err, boom) {
		t.Fatalf("rollback: %v, want the business error", err)
	}
	// END_TRANSACTION is one-way: wait until the broker has settled the
	// two above before making the next ones fail.
	deadline := time.Now().Add(10 * time.Second)
	for b.HalfMessages() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	// The outcome never reaches the broker (a crash right after the local
	// transaction; END_TRANSACTION is one-way and unacknowledged).
	b.Inject(rmqtest.EndTransaction, rmqtest.Fault{Times: 3, Code: rmqtest.CodeSystemError})
	// A second send of a used key rolls back on the duplicate; its half
	// message must not commit at the check-back on the first one's row.
	if err := m.Send(bg, msg("commit"), order("commit-again", nil)); !errors.Is(err, outbox.ErrDuplicate) {
		t.Fatalf("same key again: %v, want ErrDuplicate", err)
	}
	if err := m.Send(bg, msg("lost-commit"), order("lost-commit", nil)); err != nil {
		t.Fatalf("lost commit: %v", err)
	}
	if err := m.Send(bg, msg("lost-rollback"), order("lost-rollback", boom)); !errors.Is(err, boom) {
		t.Fatalf("lost rollback: %v", err)
	}
	if visible("commit") != 1 || visible("rollback") != 0 || visible("lost-commit") != 0 || visible("lost-rollback") != 0 {
		t.Fatalf("before check-back: commit %d rollback %d lost-commit %d lost-rollback %d",
			visible("commit"), visible("rollback"), visible("lost-commit"), visible("lost-rollback"))
	}
	// Check-backs go to a producer of the group that has sent a heartbeat
	// (the client's first comes a second after start).
	deadline = time.Now().Add(10 * time.Second)
	for b.Producers(group) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	b.Advance(7 * time.Second) // the broker checks back
	deadline = time.Now().Add(10 * time.Second)
	for visible("lost-commit") == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	for rows("SELECT COUNT(*) FROM mq_log WHERE status = 4") == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if time.Now().After(deadline) {
		t.Fatalf("the first check-back round did not settle both messages: lost-commit visible %d, aborted markers %d, producers %d",
			visible("lost-commit"), rows("SELECT COUNT(*) FROM mq_log WHERE status = 4"), b.Producers(group))
	}
	b.Advance(61 * time.Second) // a second check round must not change anything
	time.Sleep(200 * time.Millisecond)
	if visible("lost-commit") != 1 || visible("lost-rollback") != 0 || visible("commit") != 1 {
		t.Fatalf("after check-back: lost-commit visible %d (want 1), lost-rollback %d (want 0), commit %d (want 1)",
			visible("lost-commit"), visible("lost-rollback"), visible("commit"))
	}
	if rows("SELECT COUNT(*) FROM orders") != 2 || rows("SELECT COUNT(*) FROM mq_log WHERE status = 1") != 2 ||
		rows("SELECT COUNT(*) FROM mq_log WHERE status = 4 AND biz_key = 'lost-rollback'") != 1 {
		t.Fatal("database state does not match the messages")
	}
	// The aborted marker keeps the key from committing later.
	// A send of it says so: not ErrDuplicate, which would read as done.
	if err := m.Send(bg, msg("lost-rollback"), order("lost-rollback", nil)); !errors.Is(err, outbox.ErrAborted) || errors.Is(err, outbox.ErrDuplicate) {
		t.Fatalf("late send of an aborted key: %v, want ErrAborted", err)
	}
	// Refused exactly as the producer refuses a plain send, before any
	// transaction runs.
	for _, bad := range []outbox.Message{
		{Topic: topic, Key: "sep", Body: []byte("x"), Properties: map[string]string{"a": "b\x01c"}},
		{Topic: topic, Key: "utf8-\xff", Body: []byte("x")},
		{Topic: topic, Key: "tag", Body: []byte("x"), Tag: "t\x02"},
		{Topic: topic, Key: "big", Body: make([]byte, 5<<20)},
		{Topic: "bad topic", Key: "k", Body: []byte("x")},
	} {
		if err := m.Send(bg, bad, order(bad.Key, nil)); !errors.Is(err, outbox.ErrInvalidMessage) {
			t.Errorf("send of %q: %v, want ErrInvalidMessage", bad.Key, err)
		}
	}
	if n := rows("SELECT COUNT(*) FROM orders WHERE id IN ('sep', 'tag', 'big', 'k')"); n != 0 {
		t.Errorf("%d business rows written for refused messages", n)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Send(bg, msg("after"), order("after", nil)); !errors.Is(err, outbox.ErrClosed) {
		t.Fatalf("send after close: %v", err)
	}
}

// TestTxMessengerInANamespace: the messenger's messages go to the
// namespaced topic, its table keeps the bare one, and a check-back finds
// the row by it.
func TestTxMessengerInANamespace(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t, rmqtest.WithTransactionCheck(6*time.Second, 60*time.Second, 15))
	b := env.RequireEmbedded(t)
	topic, group := testenv.Name(t, "T"), testenv.Name(t, "PG")
	n := testenv.Name(t, "ns")
	ns := "ns" + n[len(n)-8:]
	env.CreateTopic(t, ns+"%"+topic, 2)
	db := testenv.MySQL(t)
	m, err := outbox.NewTxMessenger(db, env.NameServers(), group, outbox.WithLogger(slog.New(slog.DiscardHandler)),
		outbox.WithNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	noop := func(context.Context, *sqlx.Tx) error { return nil }
	if err := m.Send(bg, outbox.Message{Topic: topic, Key: "commit", Body: []byte("x")}, noop); err != nil {
		t.Fatal(err)
	}
	// The commit of the second never reaches the broker: the check-back
	// must find its row by the bare topic and commit it.
	b.Inject(rmqtest.EndTransaction, rmqtest.Fault{Times: 1, Code: rmqtest.CodeSystemError})
	if err := m.Send(bg, outbox.Message{Topic: topic, Key: "checked", Body: []byte("y")}, noop); err != nil {
		t.Fatal(err)
	}
	var stored string
	if err := db.Get(&stored, "SELECT topic FROM mq_log WHERE biz_key = 'checked'"); err != nil || stored != topic {
		t.Fatalf("row topic %q (%v), want the bare %q", stored, err, topic)
	}
	deadline := time.Now().Add(20 * time.Second)
	for (b.Producers(ns+"%"+group) == 0 || len(b.Messages(ns+"%"+topic)) < 2) && time.Now().Before(deadline) {
		b.Advance(time.Second)
		time.Sleep(20 * time.Millisecond)
	}
	if got := len(b.Messages(ns + "%" + topic)); got != 2 {
		t.Fatalf("%d messages in the namespaced topic, want both (the second by the check-back)", got)
	}
}
