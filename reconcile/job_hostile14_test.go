package reconcile_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/outbox"
	"github.com/seed157d4c4d/reliablemq/producer"
	"github.com/seed157d4c4d/reliablemq/reconcile"
)

// never is a schedule with no next time, as a parsed cron expression that
// matches no date ("0 0 30 2 *") reports it: the zero time.
type never struct{}

func (never) Next(time.Time) time.Time { return time.Time{} }

// runsOut is a schedule that is due twice, then has no next time.
type runsOut struct{ calls atomic.Int32 }

func (r *runsOut) Next(t time.Time) time.Time {
	if r.calls.Add(1) > 2 {
		return time.Time{}
	}
	return t.Add(time.Millisecond)
}

// TestScheduleWithoutANextTimeIsNotABusyLoop: a timer for the zero time
// fires at once, so a schedule that never fires ran the job back to back,
// hammering the database and the broker, until ctx ended.
func TestScheduleWithoutANextTimeIsNotABusyLoop(t *testing.T) {
	t.Parallel()
	if _, err := reconcile.New(&fakeRelay{}, quiet, reconcile.WithSchedule(never{})); err == nil {
		t.Error("New accepted a schedule that never fires")
	}
	f := &fakeRelay{}
	j := newJob(t, f, reconcile.WithSchedule(&runsOut{}))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := j.Run(ctx)
	f.mu.Lock()
	runs := f.dispatches / 2 // each run's two pipelines claim once
	f.mu.Unlock()
	if err == nil || ctx.Err() != nil || runs > 3 {
		t.Fatalf("Run returned %v after %d runs (ctx: %v); want an error as soon as the schedule has no next time",
			err, runs, ctx.Err())
	}
}

// stopAfter is a publisher that accepts sends until it has accepted n,
// then cancels the job's ctx and refuses every later send with ctx's
// error, as the producer does for a cancelled ctx.
type stopAfter struct {
	mu       sync.Mutex
	n        int
	accepted map[string]bool
	cancel   context.CancelFunc
}

func (s *stopAfter) Send(ctx context.Context, m producer.Message) (producer.Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return producer.Result{}, &producer.SendError{Outcome: producer.Transient, Err: err}
	}
	s.accepted[m.Keys[0]] = true
	if len(s.accepted) == s.n {
		s.cancel()
	}
	return producer.Result{MsgID: "id-" + m.Keys[0]}, nil
}

// TestCancelMidBatchRecordsWhatTheBrokerAccepted: the job's ctx ends (a
// SIGTERM) in the middle of a batch. Rows the broker acknowledged before
// that must be recorded Sent: left Pending under the run's claim, they
// would all be sent a second time once the lease ends. Rows not sent stay
// Pending without an attempt counted.
func TestCancelMidBatchRecordsWhatTheBrokerAccepted(t *testing.T) {
	t.Parallel()
	db := testenv.MySQL(t)
	pub := &stopAfter{n: 4}
	r, err := outbox.NewRelay(db, pub, outbox.WithConcurrency(1), outbox.WithMaxAttempts(1))
	if err != nil {
		t.Fatal(err)
	}
	for _, sharding := range []string{"", "order-1"} { // unordered rows, then one key's rows
		t.Run(fmt.Sprintf("sharding key %q", sharding), func(t *testing.T) {
			if _, err := db.Exec("DELETE FROM mq_log"); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			pub.mu.Lock()
			pub.accepted, pub.cancel = map[string]bool{}, cancel
			pub.mu.Unlock()
			tx := db.MustBegin()
			for i := range 10 {
				m := outbox.Message{Topic: "orders", Key: fmt.Sprint("o-", i), ShardingKey: sharding, Body: []byte("x")}
				if _, _, err := r.Enqueue(context.Background(), tx, m); err != nil {
					t.Fatal(err)
				}
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
			// A run may end before the fourth send: its two claim loops can
			// split one key's rows, and the loop holding the later ones
			// leaves them for a later run. Runs follow until ctx ends.
			j := newJob(t, r)
			for giveUp := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				_, err := j.RunOnce(ctx)
				if ctx.Err() != nil {
					if !errors.Is(err, context.Canceled) {
						t.Fatalf("RunOnce: %v, want ctx's error", err)
					}
					break
				}
				if err != nil || time.Now().After(giveUp) {
					t.Fatalf("RunOnce: %v; ctx not ended after 30 s of runs", err)
				}
			}
			rows := map[string]struct{ status, attempts int }{}
			var got []struct {
				Key      string `db:"biz_key"`
				Status   int    `db:"status"`
				Attempts int    `db:"attempts"`
			}
			if err := db.Select(&got, "SELECT biz_key, status, attempts FROM mq_log"); err != nil {
				t.Fatal(err)
			}
			for _, g := range got {
				rows[g.Key] = struct{ status, attempts int }{g.Status, g.Attempts}
			}
			pub.mu.Lock()
			defer pub.mu.Unlock()
			if len(pub.accepted) != 4 {
				t.Fatalf("%d sends accepted, want 4", len(pub.accepted))
			}
			for k, row := range rows {
				switch {
				case pub.accepted[k] && row.status != int(outbox.Sent):
					t.Errorf("row %s was acknowledged by the broker but is left in status %d: it will be sent again", k, row.status)
				case !pub.accepted[k] && (row.status != int(outbox.Pending) || row.attempts != 0):
					t.Errorf("row %s never sent is in status %d with %d attempts; want Pending, 0", k, row.status, row.attempts)
				}
			}
		})
	}
}
