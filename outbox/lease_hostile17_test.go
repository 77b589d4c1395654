package outbox_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/outbox"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// TestSlowBatchKeepsEarlySendsClaimed: operations.md says instances never
// send the same claimed row at once, a row being sent twice only when a
// send outlives its lease or its ack is lost. A batch's unordered rows
// were marked Sent only after the whole batch's sends: a row sent at the
// start of a batch slowed by the broker stayed Pending, its lease ran out
// while the others were sent, and another instance claimed it and sent it
// again although its own send took no time. Here the second row's send
// runs another instance until the first row is marked Sent or claimed.
func TestSlowBatchKeepsEarlySendsClaimed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pub := newFake()
	db, r := setup(t, pub, outbox.WithLease(time.Second), outbox.WithConcurrency(1))
	other, err := outbox.NewRelay(db, pub)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a", "b"} {
		if _, _, err := r.Enqueue(ctx, db, outbox.Message{Topic: "T", Key: k, Body: []byte(k)}); err != nil {
			t.Fatal(err)
		}
	}
	var waitErr error
	var slowed atomic.Bool
	pub.fail = func(m producer.Message) error {
		if m.Keys[0] != "b" || slowed.Swap(true) {
			return nil
		}
		// A slow send: another instance runs meanwhile.
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			var st int
			if err := db.Get(&st, "SELECT status FROM mq_log WHERE biz_key = 'a'"); err != nil {
				waitErr = err
				return nil
			}
			if st != int(outbox.Pending) {
				return nil
			}
			rep, err := other.DispatchDue(ctx, 10)
			if err != nil {
				waitErr = err
				return nil
			}
			if rep.Claimed > 0 {
				return nil
			}
			time.Sleep(20 * time.Millisecond)
		}
		waitErr = errors.New("row a neither marked nor claimed in 20 s")
		return nil
	}
	rep, err := r.DispatchDue(ctx, 10)
	if err != nil || waitErr != nil {
		t.Fatalf("dispatch: %+v %v; wait: %v", rep, err, waitErr)
	}
	if n := pub.count("a"); n != 1 {
		t.Fatalf("row a sent %d times (report %+v): its claim ran out while the batch's other sends ran", n, rep)
	}
}
