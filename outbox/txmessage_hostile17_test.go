package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/migrations"
	"github.com/seed157d4c4d/reliablemq/outbox"
	"github.com/seed157d4c4d/reliablemq/rmqtest"
)

// txEnv is a messenger on its own group and topic, with the broker's
// check-backs due 6 s after a half message, once a minute, as on a
// default 4.9.4 broker.
type txEnv struct {
	env   *testenv.RocketMQ
	db    *sqlx.DB
	m     *outbox.TxMessenger
	topic string
	group string
}

func newTxEnv(t *testing.T) *txEnv {
	t.Helper()
	env := testenv.NewRocketMQ(t, rmqtest.WithTransactionCheck(6*time.Second, 60*time.Second, 15))
	e := &txEnv{env: env, db: testenv.MySQL(t), topic: testenv.Name(t, "T"), group: testenv.Name(t, "PG")}
	env.CreateTopic(t, e.topic, 2)
	m, err := outbox.NewTxMessenger(e.db, env.NameServers(), e.group, outbox.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	e.m = m
	return e
}

func (e *txEnv) msg(key string) outbox.Message {
	return outbox.Message{Topic: e.topic, Key: key, Body: []byte(key)}
}

func (e *txEnv) rows(t *testing.T, q string, args ...any) int {
	t.Helper()
	var n int
	if err := e.db.Get(&n, q, args...); err != nil {
		t.Fatal(err)
	}
	return n
}

func noop(context.Context, *sqlx.Tx) error { return nil }

// TestTxCheckBackCommitsAKeyWithWhitespace: a key holding a tab or an
// ideographic space (valid: only the space is refused) whose commit did
// not reach the broker. The check-back must commit it from its Sent row;
// it looked up the key split at the whitespace and joined with a space,
// found no row, inserted an Aborted marker for that other key and rolled
// the message back: the business transaction committed, its message was
// lost.
func TestTxCheckBackCommitsAKeyWithWhitespace(t *testing.T) {
	t.Parallel()
	e := newTxEnv(t)
	b := e.env.RequireEmbedded(t) // the lost commit is injected
	keys := []string{"order\t1", "order\u30002"}
	b.Inject(rmqtest.EndTransaction, rmqtest.Fault{Times: len(keys), Code: rmqtest.CodeSystemError})
	for _, k := range keys {
		if err := e.m.Send(bg, e.msg(k), noop); err != nil {
			t.Fatalf("send %q: %v", k, err)
		}
	}
	visible := func(key string) bool { // by the body: rmqtest's Message.Keys splits at any whitespace
		for _, m := range b.Messages(e.topic) {
			if string(m.Body) == key {
				return true
			}
		}
		return false
	}
	e.env.Eventually(t, "the check-backs to settle both messages", 20*time.Second, func() bool {
		return b.HalfMessages() == 0 || e.rows(t, "SELECT COUNT(*) FROM mq_log WHERE status = 4") > 0
	})
	for _, k := range keys {
		if !visible(k) {
			t.Errorf("committed send of %q: message not delivered after the check-back", k)
		}
	}
	if n := e.rows(t, "SELECT COUNT(*) FROM mq_log WHERE status = 4"); n != 0 {
		t.Errorf("%d Aborted markers written by check-backs of committed messages", n)
	}
}

// TestTxMessengerRefusesAnOldSchemaWithCaseInsensitiveTopics: on a schema
// from before migration 00004 topics compare without case. A send of key
// k to orderevents after k to OrderEvents (another RocketMQ topic) hit
// the first one's row, rolled back and returned ErrDuplicate: a distinct
// message never sent, reported as already sent. The relay refuses such a
// table; the messenger must too, before any half message.
func TestTxMessengerRefusesAnOldSchemaWithCaseInsensitiveTopics(t *testing.T) {
	t.Parallel()
	e := newTxEnv(t)
	testenv.MigrateDownTo(t, e.db, 3)
	lower := testenv.Name(t, "t")
	e.env.CreateTopic(t, lower, 2)
	upper := "T" + lower[1:]
	e.env.CreateTopic(t, upper, 2)
	for _, topic := range []string{upper, lower} {
		if err := e.m.Send(bg, outbox.Message{Topic: topic, Key: "k", Body: []byte(topic)}, noop); err == nil ||
			errors.Is(err, outbox.ErrDuplicate) {
			t.Errorf("send to %s at schema version 3: %v, want an error naming the schema", topic, err)
		}
	}
	if err := migrations.Up(bg, e.db.DB); err != nil {
		t.Fatal(err)
	}
	for _, topic := range []string{upper, lower} {
		if err := e.m.Send(bg, outbox.Message{Topic: topic, Key: "k", Body: []byte(topic)}, noop); err != nil {
			t.Fatalf("send to %s after the upgrade: %v", topic, err)
		}
	}
}

// TestTxSendThatDidNotCommitRollsBackAtOnce: a Send whose ctx ends after
// fn returned, before the commit, and one whose fn panics. Neither
// transaction committed, and both are certain of it, so the half message
// must be rolled back at once. The first was answered "unknown" and the
// second not at all: each waited for a check-back, which inserted an
// Aborted marker, so a retry of the key got ErrDuplicate ("already used")
// although nothing had committed.
func TestTxSendThatDidNotCommitRollsBackAtOnce(t *testing.T) {
	t.Parallel()
	e := newTxEnv(t)
	ctx, cancel := context.WithCancel(bg)
	err := e.m.Send(ctx, e.msg("cancelled"), func(context.Context, *sqlx.Tx) error {
		cancel()
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("send whose ctx ended before the commit: %v, want context.Canceled", err)
	}
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Fatalf("recovered %v, want fn's panic", r)
			}
		}()
		e.m.Send(bg, e.msg("panicked"), func(context.Context, *sqlx.Tx) error { panic("boom") })
		t.Fatal("Send returned after fn panicked")
	}()
	if b := e.env.Embedded; b != nil {
		for deadline := time.Now().Add(10 * time.Second); b.HalfMessages() > 0; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d half messages left to the check-back", b.HalfMessages())
			}
		}
		// Settled by the rollback, not by a check-back (rmqtest's clock runs).
		if n := e.rows(t, "SELECT COUNT(*) FROM mq_log WHERE status = 4"); n != 0 {
			t.Errorf("%d keys aborted by a check-back", n)
		}
	}
	// A control whose outcome is unknown (its connection dies before the
	// commit) is settled by a check-back, which would have come for the two
	// above as well (a real broker checks once a minute).
	err = e.m.Send(bg, e.msg("control"), func(ctx context.Context, tx *sqlx.Tx) error {
		var id int64
		if err := tx.GetContext(ctx, &id, "SELECT CONNECTION_ID()"); err != nil {
			return err
		}
		tx.ExecContext(ctx, fmt.Sprint("KILL ", id)) //nolint:errcheck // it kills its own connection
		return nil
	})
	if err == nil {
		t.Fatal("send on a killed connection: no error")
	}
	e.env.Eventually(t, "the control's check-back", 3*time.Minute, func() bool {
		return e.rows(t, "SELECT COUNT(*) FROM mq_log WHERE status = 4 AND biz_key = 'control'") == 1
	})
	for _, k := range []string{"cancelled", "panicked"} {
		if err := e.m.Send(bg, e.msg(k), noop); err != nil {
			t.Errorf("retry of %s: %v", k, err)
		}
	}
}
