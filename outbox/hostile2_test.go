package outbox

import (
	"context"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/observe"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// TestHostile2InjectHookPoisonsCommittedRow: Enqueue validates the
// message (reserved property names refused) and only then runs the Inject
// hook, whose additions are stored unchecked. A hook that writes a
// reserved name (a propagator using "KEYS", "DELAY", "UNIQ_KEY", or any
// name the broker owns) produces a row that commits with the business
// transaction and that no send can deliver: producer.Send refuses it as
// Permanent and the row goes Dead; a replay sends the same properties and
// dies again. The same message with that property passed by the caller is
// refused at Enqueue, before the transaction commits.
func TestHostile2InjectHookPoisonsCommittedRow(t *testing.T) {
	t.Parallel()
	onStores(t, func(t *testing.T, h *harness) {
		hooks := observe.Hooks{Inject: func(ctx context.Context, props map[string]string) {
			props["DELAY"] = "3" // a propagator's field that happens to be reserved
		}}
		// The publisher refuses what the real producer refuses.
		p := &pub{fail: func(m producer.Message) error {
			if err := producer.Validate(m); err != nil {
				return sendErr(producer.Permanent, err.Error())
			}
			return nil
		}}
		r := h.relay(t, p, WithHooks(hooks), WithMaxAttempts(3), WithBackoff(time.Millisecond, time.Millisecond))
		direct := Message{Topic: "orders", Key: "k-direct", Body: []byte("b"), Properties: map[string]string{"DELAY": "3"}}
		if _, _, err := r.Enqueue(context.Background(), h.ex(), direct); err == nil {
			t.Fatal("control: a reserved property passed by the caller was accepted at Enqueue")
		}
		if _, _, err := r.Enqueue(context.Background(), h.ex(), Message{Topic: "orders", Key: "k-hook", Body: []byte("b")}); err != nil {
			t.Logf("Enqueue refused the hook's reserved property up front: %v (acceptable)", err)
			return
		}
		for range 4 {
			dispatch(t, r)
			h.wait(5 * time.Millisecond)
		}
		rows, err := r.Find(context.Background(), "k-hook")
		if err != nil || len(rows) != 1 {
			t.Fatalf("rows %+v, %v", rows, err)
		}
		if rows[0].Status != Sent {
			t.Fatalf("row committed by Enqueue is %v after dispatch (last error %q): the Inject hook's reserved "+
				"property was stored unvalidated and the row can never be sent", rows[0].Status, rows[0].LastError)
		}
	})
}
