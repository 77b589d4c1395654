package outbox

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

// unorderedRows enqueues n unordered rows claimed by owner and returns their ids.
func unorderedRows(t *testing.T, s *mysqlStore, db *sqlx.DB, owner string, keys ...string) []int64 {
	t.Helper()
	var ids []int64
	for _, k := range keys {
		id, _, err := s.enqueue(context.Background(), db, Message{Topic: "orders", Key: k, Body: []byte(k)}, owner)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// lockRow opens a transaction holding id FOR UPDATE.
func lockRow(t *testing.T, db *sqlx.DB, id int64) *sqlx.Tx {
	t.Helper()
	tx := db.MustBegin()
	var got int64
	if err := tx.Get(&got, "SELECT id FROM mq_log WHERE id = ? FOR UPDATE", id); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback() })
	return tx
}

// TestAMarkLeavesNoLockWaitBehindItsCtx: a mark that waited for locked
// rows with FOR UPDATE waited on the server for innodb_lock_wait_timeout
// (50 s), not for the caller's ctx: when ctx ended the driver closed the
// connection, but the server kept waiting and kept the rows it had locked.
// Row a, held for a moment and free 100 ms later, was neither marked nor
// free long after the mark returned. Locked rows are now polled with SKIP
// LOCKED: a row is marked once free, and nothing waits on the server.
func TestAMarkLeavesNoLockWaitBehindItsCtx(t *testing.T) {
	db := testenv.MySQL(t)
	s := newMySQLStore(db, "mq_log", time.Minute)
	ids := unorderedRows(t, s, db, "o", "a", "b")
	a, b := ids[0], ids[1]
	ta := lockRow(t, db, a) // a claim reading past a, for a moment
	lockRow(t, db, b)       // a consumer's open Confirm on b
	time.AfterFunc(200*time.Millisecond, func() { _ = ta.Rollback() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	n, err := s.markSentBatch(ctx, []string{"o"}, []sentRow{{a, "ma"}, {b, "mb"}}, false)
	t.Logf("mark: %d, %v after %v", n, err, time.Since(start))
	time.Sleep(500 * time.Millisecond)
	probe := db.MustBegin()
	defer probe.Rollback()
	var got int64
	lockErr := probe.Get(&got, "SELECT id FROM mq_log WHERE id = ? FOR UPDATE NOWAIT", a)
	var st int
	_ = db.Get(&st, "SELECT status FROM mq_log WHERE id = ?", a)
	if lockErr != nil {
		t.Fatalf("row a (free since 200 ms in) is %v and still locked 500 ms after the mark's ctx ended (mark: %d, %v): %v",
			Status(st), n, err, lockErr)
	}
}

// TestAReadUncommittedSessionStillWaitsForALockedRow: the read telling a
// locked row from one no longer matching ran in the session's isolation
// level. Under READ-UNCOMMITTED (a server or DSN default the store does
// not refuse) it saw a consumer's uncommitted Confirm, took the row as
// gone and returned no error; the consumer rolled back, and the row stayed
// Pending, to be sent again once its lease ended. It reads in READ
// COMMITTED now.
func TestAReadUncommittedSessionStillWaitsForALockedRow(t *testing.T) {
	base := testenv.MySQL(t)
	dsn := testenv.MySQLDSN(t, base) + "&tx_isolation=%27READ-UNCOMMITTED%27"
	db, err := sqlx.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	s := newMySQLStore(db, "mq_log", time.Minute)
	x := unorderedRows(t, s, db, "o", "x")[0]
	consumer := base.MustBegin()
	if ok, err := s.confirm(context.Background(), consumer, "orders", "x"); err != nil || !ok {
		t.Fatal(ok, err)
	}
	time.AfterFunc(300*time.Millisecond, func() { _ = consumer.Rollback() }) // the business transaction fails
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := s.markSentBatch(ctx, []string{"o"}, []sentRow{{x, "mx"}}, false)
	time.Sleep(400 * time.Millisecond)
	var st int
	if err := base.Get(&st, "SELECT status FROM mq_log WHERE id = ?", x); err != nil {
		t.Fatal(err)
	}
	if Status(st) != Sent {
		t.Fatalf("mark returned %d, %v; x is %v after the consumer rolled back (sent again once the lease ends)", n, err, Status(st))
	}
}

// TestOneHeldRowDoesNotSpendTheNextChunksBound: markBatch gives its whole
// mark one 10 s bound. One row of the first 500 held by a consumer's open
// Confirm made the wait for it spend the whole bound, and the next chunk,
// none of whose rows anyone holds, then failed at once: its rows, already
// accepted by the broker, were sent again once their lease ended. Every
// chunk's free rows are now marked before any wait.
func TestOneHeldRowDoesNotSpendTheNextChunksBound(t *testing.T) {
	base := testenv.MySQL(t)
	c, err := newConfig([]Option{WithLogger(slog.New(slog.DiscardHandler))})
	if err != nil {
		t.Fatal(err)
	}
	store := newMySQLStore(base, c.table, c.lease)
	keys := make([]string, lockChunk+1)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%04d", i)
	}
	ids := unorderedRows(t, store, base, "o", keys...)
	consumer := base.MustBegin()
	t.Cleanup(func() { _ = consumer.Rollback() })
	if ok, err := store.confirm(context.Background(), consumer, "orders", keys[0]); err != nil || !ok {
		t.Fatal(ok, err)
	}
	r := newRelay(store, &pub{}, c)
	rows := make([]sentRow, len(ids))
	for i, id := range ids {
		rows[i] = sentRow{id, "m-" + keys[i]}
	}
	marked, lost, err := r.markBatch(context.Background(), "o", rows, false)
	var st int
	if err := base.Get(&st, "SELECT status FROM mq_log WHERE id = ?", ids[lockChunk]); err != nil {
		t.Fatal(err)
	}
	if Status(st) != Sent {
		t.Fatalf("markBatch: %d marked, %d lost, %v; row %d of the second chunk (nobody holds it) is %v",
			marked, lost, err, ids[lockChunk], Status(st))
	}
}
