package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/outbox"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// TestKeyOrderWhileSendsFailAndTwoReconcilersResend: transactions keep
// enqueueing events of a few keys while a quarter of all sends fail (the
// broker refused them, or the ack was lost after it stored them) and two
// relays resend what Transact could not. For every key, the first copy of
// each event reaches the broker in enqueue order: no event is stored
// before an earlier one of its key.
func TestKeyOrderWhileSendsFailAndTwoReconcilersResend(t *testing.T) {
	t.Parallel()
	pub := newFake()
	var rmu sync.Mutex
	rnd := rand.New(rand.NewPCG(1, 2))
	pub.fail = func(m producer.Message) error {
		rmu.Lock()
		defer rmu.Unlock()
		switch n := rnd.IntN(8); {
		case n == 0:
			return &producer.SendError{Outcome: producer.Transient, Err: errors.New("broker busy")}
		case n == 1:
			// Stored, but the ack was lost: recorded as sent, reported unknown.
			pub.mu.Lock()
			pub.sent = append(pub.sent, m)
			pub.mu.Unlock()
			return &producer.SendError{Outcome: producer.OutcomeUnknown, Err: errors.New("ack lost")}
		}
		return nil
	}
	fast, quiet := outbox.WithBackoff(time.Millisecond, 5*time.Millisecond), outbox.WithLogger(slog.New(slog.DiscardHandler))
	db, r := setup(t, pub, fast, quiet)
	reconcilers := []*outbox.Relay{relayOn(t, db, pub, fast, quiet), relayOn(t, db, pub, fast, quiet)}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, rl := range reconcilers {
		wg.Go(func() {
			for ctx.Err() == nil {
				if _, err := rl.DispatchDue(ctx, 10); err != nil && ctx.Err() == nil {
					t.Error(err)
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
	const keys, events = 3, 8
	var writers sync.WaitGroup
	for k := range keys {
		writers.Go(func() {
			for e := range events {
				err := r.Transact(context.Background(), func(ctx context.Context, tx *outbox.Tx) error {
					_, err := tx.Enqueue(ctx, outbox.Message{Topic: "t", Key: fmt.Sprint("k", k, "-", e), Body: []byte("x"),
						ShardingKey: fmt.Sprint("k", k)})
					return err
				})
				if err != nil {
					t.Error(err)
				}
			}
		})
	}
	writers.Wait()
	deadline := time.Now().Add(30 * time.Second)
	for count(t, db, "SELECT COUNT(*) FROM mq_log WHERE status = 0") > 0 && time.Now().Before(deadline) {
		// Rows held behind a key's earlier row wait a second: bring them due.
		db.MustExec("UPDATE mq_log SET next_attempt_at = UTC_TIMESTAMP(6) WHERE status = 0 AND lease_owner = ''")
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	if n := count(t, db, "SELECT COUNT(*) FROM mq_log WHERE status <> 1"); n != 0 {
		t.Fatalf("%d rows not sent", n)
	}
	pub.mu.Lock()
	defer pub.mu.Unlock()
	next := map[string]int{}
	seen := map[string]bool{}
	for _, m := range pub.sent {
		if seen[m.Keys[0]] {
			continue // a resend of a stored event: the consumer's guard absorbs it
		}
		seen[m.Keys[0]] = true
		var k, e int
		fmt.Sscanf(m.Keys[0], "k%d-%d", &k, &e)
		if key := m.ShardingKey; e != next[key] {
			t.Fatalf("key %s: event %d stored first when %d was next", key, e, next[key])
		}
		next[m.ShardingKey]++
	}
	if len(seen) != keys*events {
		t.Fatalf("%d events stored, want %d", len(seen), keys*events)
	}
}
