package outbox

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/producer"
)

// TestATransactionLongerThanItsLeaseLeavesItsRowsToReconcile: Transact's
// rows are written claimed for the lease. A transaction that commits after
// the lease ended makes them visible and due at once: reconcile may claim
// and send them before Transact's own send, which would then be a second
// one. Transact sends nothing then; reconcile sends each row once.
func TestATransactionLongerThanItsLeaseLeavesItsRowsToReconcile(t *testing.T) {
	t.Parallel()
	onStores(t, func(t *testing.T, h *harness) {
		ctx := context.Background()
		p := &pub{}
		r := h.relay(t, p, WithLease(time.Second))
		other := h.relay(t, p, WithLease(time.Second))
		var raced atomic.Bool
		var otherErr error
		p.onSend = func(producer.Message) {
			if raced.CompareAndSwap(false, true) {
				// Reconcile runs between the commit and the first send.
				_, otherErr = other.DispatchDue(ctx, 10)
			}
		}
		err := r.Transact(ctx, func(ctx context.Context, tx *Tx) error {
			if _, err := tx.Enqueue(ctx, Message{Topic: "orders", Key: "long", Body: []byte("long")}); err != nil {
				return err
			}
			h.wait(1100 * time.Millisecond) // the business transaction outlasts the lease
			return nil
		})
		if err != nil || otherErr != nil {
			t.Fatalf("Transact: %v; reconcile: %v", err, otherErr)
		}
		if _, err := other.DispatchDue(ctx, 10); err != nil {
			t.Fatal(err)
		}
		if n := p.count("long"); n != 1 {
			t.Fatalf("row sent %d times, want once", n)
		}
		if rows := rowsOfStatus(t, r, Sent); len(rows) != 1 {
			t.Fatalf("Sent rows %+v, want the one", rows)
		}
	})
}
