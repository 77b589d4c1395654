package outbox

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// TestSlowTransactKeepsItsEarlySendsClaimedHostile19: Transact's rows are
// written claimed for the lease and sent after the commit; its unordered
// rows were marked only after all of its sends (the shared mark), with no
// early mark from half the lease on as a claimed batch has. A Transact
// whose later send the broker slows down left its first row, sent at
// once, Pending past its lease: reconcile claimed it and sent it again,
// though operations.md allows a second send only when a send outlives its
// lease or its ack is lost. Here row b's send runs another instance until
// row a is marked Sent or claimed.
func TestSlowTransactKeepsItsEarlySendsClaimedHostile19(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := &harness{db: testenv.MySQL(t)}
	p := &pub{}
	slow := h.relay(t, p, WithLease(time.Second), WithConcurrency(1))
	other := h.relay(t, p, WithLease(time.Second))
	var waitErr error
	var slowed atomic.Bool
	p.onSend = func(m producer.Message) {
		if m.Keys[0] != "b" || slowed.Swap(true) {
			return
		}
		waitErr = untilMarkedOrClaimed(h, "SELECT status = 0 FROM mq_log WHERE biz_key = 'a'", func() (BatchReport, error) {
			return other.DispatchDue(ctx, 10)
		})
	}
	err := slow.Transact(ctx, func(ctx context.Context, tx *Tx) error {
		for _, k := range []string{"a", "b"} {
			if _, err := tx.Enqueue(ctx, Message{Topic: "orders", Key: k, Body: []byte(k)}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil || waitErr != nil {
		t.Fatalf("Transact: %v; wait: %v", err, waitErr)
	}
	if n := p.count("a"); n != 1 {
		t.Fatalf("row a sent %d times, want once: Transact left it unmarked past its lease while its other send was slow", n)
	}
}

// TestUnorderedRowIsNotGroupedWithAKeyNamedLikeItHostile19: a batch groups
// its rows by sharding key, and each unordered row in a group of its own
// named "\x00" and its id. A sharding key is any UTF-8 without the
// property separators, so "\x00<id>" is a valid one: its rows shared a
// group with the unordered row of that id, and when the key failed or was
// blocked the unordered row was released with it, every time: a row with
// no sharding key held back for as long as an unrelated key is (here a
// Dead row holds it until replayed), though a failing row blocks its own
// key only.
func TestUnorderedRowIsNotGroupedWithAKeyNamedLikeItHostile19(t *testing.T) {
	t.Parallel()
	onStores(t, func(t *testing.T, h *harness) {
		p := &pub{fail: func(m producer.Message) error {
			if m.Keys[0] == "poison" {
				return sendErr(producer.Permanent, "no permission")
			}
			return nil
		}}
		r := h.relay(t, p)
		n := enqueue(t, h, r, Message{Key: "first"})
		key := fmt.Sprint("\x00", n+3) // the group name of the unordered row enqueued third
		enqueue(t, h, r, Message{Key: "poison", ShardingKey: key})
		enqueue(t, h, r, Message{Key: "behind", ShardingKey: key})
		if id := enqueue(t, h, r, Message{Key: "free"}); id != n+3 {
			t.Skipf("ids not consecutive (%d after %d)", id, n)
		}
		var reps []BatchReport
		for range 3 {
			reps = append(reps, dispatch(t, r))
			h.wait(1100 * time.Millisecond)
		}
		if p.count("free") != 1 {
			t.Fatalf("unordered row sent %d times, want once (reports %+v): it was held back with the key %q",
				p.count("free"), reps, key)
		}
		if p.count("behind") != 0 {
			t.Fatalf("row behind a Dead row of its key sent")
		}
	})
}

// TestFinalFailedResendIsCountedHostile19: attempts count the sends of a
// row, each once; after maxAttempts sends in all an unconfirmed row is
// given up on. When the last of them fails, the give-up did not count
// it: the row said it had been sent one time fewer than it was (the
// alert and the event said maxAttempts).
func TestFinalFailedResendIsCountedHostile19(t *testing.T) {
	t.Parallel()
	onStores(t, func(t *testing.T, h *harness) {
		ctx := context.Background()
		r, p, alerted := sentThenRefused(t, h, 2, sendErr(producer.Transient, "broker busy"))
		sends := 1
		p.onSend = func(producer.Message) { sends++ }
		for range 3 {
			if _, err := r.ResendUnconfirmed(ctx, 10*time.Millisecond, 10); err != nil {
				t.Fatal(err)
			}
			h.wait(20 * time.Millisecond)
		}
		rows := rowsOfStatus(t, r, Sent)
		if len(rows) != 1 || alerted.Load() != 1 {
			t.Fatalf("rows %+v, alerts %d: want the row given up, once", rows, alerted.Load())
		}
		if rows[0].Attempts != sends {
			t.Fatalf("row given up after %d sends says %d attempts (last error %q)", sends, rows[0].Attempts, rows[0].LastError)
		}
	})
}

// TestFailedSendOnALostClaimIsALostClaimHostile19: a relay whose send
// outlived its lease, while another relay claimed the row and sent it,
// must not report the row as its own. Its send then failing was counted
// Failed (with a RowRetry event for an attempt the table never counted,
// the row being Sent by the other relay), or, on a permanent error, not
// counted at all (Claimed 1, every other count 0); the table holds the
// other relay's outcome, so it is a lost claim.
func TestFailedSendOnALostClaimIsALostClaimHostile19(t *testing.T) {
	t.Parallel()
	for _, outcome := range []producer.Outcome{producer.Transient, producer.Permanent} {
		t.Run(outcome.String(), func(t *testing.T) {
			onStores(t, func(t *testing.T, h *harness) {
				p := &pub{}
				slow := h.relay(t, p, WithLease(time.Second))
				other := h.relay(t, p, WithLease(time.Second))
				enqueue(t, h, slow, Message{Key: "a"})
				var first atomic.Bool
				var otherRep BatchReport
				var otherErr error
				p.fail = func(producer.Message) error {
					if !first.CompareAndSwap(false, true) {
						return nil
					}
					// The slow send outlives its lease, the other relay
					// sends the row, then the slow send fails.
					h.wait(1100 * time.Millisecond)
					otherRep, otherErr = other.DispatchDue(context.Background(), 10)
					return sendErr(outcome, "refused")
				}
				rep := dispatch(t, slow)
				if otherErr != nil {
					t.Fatal(otherErr)
				}
				sent := rowsOfStatus(t, slow, Sent)
				if otherRep.Sent != 1 || len(sent) != 1 || sent[0].Attempts != 1 {
					t.Fatalf("other relay %+v, Sent rows %+v: want the row sent by the other relay", otherRep, sent)
				}
				if rep != (BatchReport{Claimed: 1, LostClaims: 1}) {
					t.Fatalf("slow relay reports %+v; want its claim counted lost, the table holds the other relay's send", rep)
				}
			})
		})
	}
}

// TestResendRefusedForGoodIsGivenUpAtOnce: a resend the broker refuses
// with a permanent error is given up on at once, with the alert, as a
// first send so refused goes Dead; it was retried with backoff until the
// attempt cap, delaying the alert by every backoff between.
func TestResendRefusedForGoodIsGivenUpAtOnce(t *testing.T) {
	t.Parallel()
	onStores(t, func(t *testing.T, h *harness) {
		ctx := context.Background()
		r, _, alerted := sentThenRefused(t, h, 10, sendErr(producer.Permanent, "topic not allowed"))
		rep, err := r.ResendUnconfirmed(ctx, 10*time.Millisecond, 10)
		if err != nil || rep.Dead != 1 || rep.Failed != 0 {
			t.Fatalf("resend: %+v, %v; want the row given up", rep, err)
		}
		rows := rowsOfStatus(t, r, Sent)
		if len(rows) != 1 || alerted.Load() != 1 || rows[0].Attempts != 2 || !strings.Contains(rows[0].LastError, "topic not allowed") {
			t.Fatalf("rows %+v, alerts %d: want the row given up after 2 sends, alerted once", rows, alerted.Load())
		}
		h.wait(20 * time.Millisecond)
		if rep, err := r.ResendUnconfirmed(ctx, 10*time.Millisecond, 10); err != nil || rep.Claimed != 0 {
			t.Fatalf("a row given up on was claimed again: %+v, %v", rep, err)
		}
	})
}

// sentThenRefused sends row "o" through a relay of maxAttempts (alerts
// counted) whose publisher then fails every send with refusal, and waits
// past the confirm timeouts the tests use.
func sentThenRefused(t *testing.T, h *harness, maxAttempts int, refusal error) (*Relay, *pub, *atomic.Int32) {
	t.Helper()
	p := &pub{}
	alerted := new(atomic.Int32)
	r := h.relay(t, p, WithMaxAttempts(maxAttempts), WithBackoff(time.Millisecond, time.Millisecond),
		WithAlert(func(context.Context, *Row) { alerted.Add(1) }))
	enqueue(t, h, r, Message{Key: "o"})
	if rep := dispatch(t, r); rep.Sent != 1 {
		t.Fatalf("first send: %+v", rep)
	}
	p.mu.Lock()
	p.fail = func(producer.Message) error { return refusal }
	p.mu.Unlock()
	h.wait(20 * time.Millisecond)
	return r, p, alerted
}
