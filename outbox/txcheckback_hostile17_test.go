package outbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
)

// TestTxCheckBackDuringTheLocalTransaction: a check-back arrives while the
// local transaction holds its uncommitted row. The check waits for it and,
// once it commits, answers commit: the message is delivered, no key is
// aborted.
func TestTxCheckBackDuringTheLocalTransaction(t *testing.T) {
	t.Parallel()
	e := newTxEnv(t)
	b := e.env.RequireEmbedded(t) // clock control
	if err := e.m.Send(bg, e.msg("first"), noop); err != nil {
		t.Fatal(err)
	}
	e.env.Eventually(t, "the producer's heartbeat", 10*time.Second, func() bool { return b.Producers(e.group) > 0 })
	waiting := func() bool {
		return e.rows(t, "SELECT COUNT(*) FROM information_schema.processlist WHERE db = DATABASE()"+
			" AND info LIKE '%rolled back by a transaction check-back%'") > 0
	}
	err := e.m.Send(bg, e.msg("slow"), func(ctx context.Context, tx *sqlx.Tx) error {
		b.Advance(7 * time.Second) // the broker checks back now
		e.env.Eventually(t, "the check-back to wait for the row", 10*time.Second, waiting)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	e.env.Eventually(t, "the message", 10*time.Second, func() bool { return len(b.Messages(e.topic)) > 1 })
	if n := e.rows(t, "SELECT COUNT(*) FROM mq_log WHERE status = 4"); n != 0 {
		t.Fatalf("%d keys aborted", n)
	}
}

// TestTxBrokerDownBetweenHalfMessageAndCommit: the broker goes down while
// the local transaction runs, so its commit is lost; once it is back, a
// check-back commits the message from the row.
func TestTxBrokerDownBetweenHalfMessageAndCommit(t *testing.T) {
	t.Parallel()
	e := newTxEnv(t)
	b := e.env.RequireEmbedded(t) // Down and Up
	err := e.m.Send(bg, e.msg("k"), func(context.Context, *sqlx.Tx) error { return b.Down() })
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Up(); err != nil {
		t.Fatal(err)
	}
	e.env.Eventually(t, "the check-back's commit", 60*time.Second, func() bool { return len(b.Messages(e.topic)) == 1 })
	if n := e.rows(t, "SELECT COUNT(*) FROM mq_log WHERE status = 4"); n != 0 {
		t.Fatalf("%d keys aborted", n)
	}
}
