package outbox_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/outbox"
)

// TestMarksAndClaimsLockOnlyTheirOwnRows: marking sent rows Sent, and
// claiming due rows, must not wait for a business transaction that holds
// an outbox row of its own (enqueued, not yet committed). On a small
// table the optimizer may read a long IN list by scanning an index or the
// whole table; under REPEATABLE READ an UPDATE locks every row it reads,
// so it would wait for that transaction (its business code may run for
// seconds), and the rows it marks would stay leased and be sent again.
func TestMarksAndClaimsLockOnlyTheirOwnRows(t *testing.T) {
	t.Parallel()
	for _, size := range []struct{ sent, due int }{{0, 5}, {0, 60}, {20, 200}, {300, 400}, {2000, 500}} {
		t.Run(fmt.Sprint(size.sent, "_sent_", size.due, "_due"), func(t *testing.T) {
			t.Parallel()
			marksAndClaimsLockOnlyTheirOwnRows(t, size.sent, size.due)
		})
	}
}

func marksAndClaimsLockOnlyTheirOwnRows(t *testing.T, sent, due int) {
	db, r := setup(t, newFake())
	ctx := context.Background()
	enqueue := func(prefix string, n int) {
		tx := db.MustBegin()
		for i := range n {
			if _, _, err := r.Enqueue(ctx, tx, outbox.Message{Topic: "t", Key: fmt.Sprint(prefix, i), Body: []byte("x")}); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	if sent > 0 {
		enqueue("old-", sent)
		if rep, err := r.DispatchDue(ctx, sent); err != nil || rep.Sent != sent {
			t.Fatalf("sent %d of %d: %v", rep.Sent, sent, err)
		}
	}
	enqueue("due-", due)
	if _, err := db.Exec("ANALYZE TABLE mq_log"); err != nil {
		t.Fatal(err)
	}
	// A business transaction with an outbox row, open until the dispatch
	// returned.
	release := openTransact(t, r, "t", "open")
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	rep, err := r.DispatchDue(dctx, due)
	cancel()
	if txErr := release(); txErr != nil {
		t.Fatal(txErr)
	}
	if err != nil || rep.Sent != due {
		t.Fatalf("claimed %d, sent and marked %d of %d while another transaction held its own outbox row: %v", rep.Claimed, rep.Sent, due, err)
	}
}

// openTransact runs a Transact that enqueues key to topic and returns once
// its business transaction is open, holding the uncommitted row; release
// lets it commit and returns Transact's error.
func openTransact(t *testing.T, r *outbox.Relay, topic, key string) (release func() error) {
	t.Helper()
	inTx, end, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		done <- r.Transact(context.Background(), func(ctx context.Context, tx *outbox.Tx) error {
			if _, err := tx.Enqueue(ctx, outbox.Message{Topic: topic, Key: key, Body: []byte("x")}); err != nil {
				return err
			}
			close(inTx)
			<-end
			return nil
		})
	}()
	select {
	case <-inTx:
	case err := <-done:
		t.Fatalf("Transact returned before its transaction was open: %v", err)
	}
	return func() error {
		close(end)
		return <-done
	}
}
