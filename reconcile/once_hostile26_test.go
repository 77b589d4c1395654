package reconcile_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/outbox"
	"github.com/seed157d4c4d/reliablemq/producer"
	"github.com/seed157d4c4d/reliablemq/reconcile"
)

// sendCounter counts sends per key, failing every one when fail is set.
type sendCounter struct {
	mu    sync.Mutex
	fail  bool
	sends map[string]int
}

func (c *sendCounter) Send(_ context.Context, m producer.Message) (producer.Result, error) {
	// A send takes a while, as a broker's does: a row is marked well after
	// the claim that took it, so what the test tells apart is a row sent
	// in this run from one sent before it, not the few microseconds
	// between a claim's cutoff and its query.
	time.Sleep(10 * time.Millisecond)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sends[m.Keys[0]]++
	if c.fail {
		return producer.Result{}, &producer.SendError{Outcome: producer.Transient, Err: errors.New("broker down")}
	}
	return producer.Result{MsgID: m.Keys[0]}, nil
}

func (c *sendCounter) most() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, s := range c.sends {
		n = max(n, s)
	}
	return n
}

// TestRunSendsARowAtMostOnce: RunOnce's doc says rows that fail are
// rescheduled, not retried within the run. A failed row is due again after
// its backoff, and the claim loops go on while batches come back full: a
// run over a backlog that outlasted the backoff claimed the failed rows
// again and again, so with the broker down one run took every row through
// all its attempts to Dead (1000 rows, batch 100, sends timing out after
// 100 ms, 4 attempts: all dead in one 18 s run). Likewise, a sent row is
// due for a resend once the confirm timeout has passed: with a timeout
// shorter than a run, one run resent each row up to the cap and gave it
// up. Here the backoff and the timeout are a millisecond, so the run
// always outlasts them.
func TestRunSendsARowAtMostOnce(t *testing.T) {
	t.Parallel()
	db := testenv.MySQL(t)
	pub := &sendCounter{fail: true, sends: map[string]int{}}
	r, err := outbox.NewRelay(db, pub, outbox.WithBackoff(time.Millisecond, time.Millisecond), outbox.WithMaxAttempts(4))
	if err != nil {
		t.Fatal(err)
	}
	enqueue(t, db, r, 12)
	j := newJob(t, r, reconcile.WithBatch(2), reconcile.WithConfirmTimeout(time.Microsecond))
	rep, err := j.RunOnce(context.Background())
	if err != nil || rep.Failed != 12 || rep.Dead != 0 || pub.most() != 1 {
		t.Fatalf("broker down: RunOnce %+v, %v; a row sent %d times; want each of the 12 rows tried once and failed, none dead",
			rep, err, pub.most())
	}
	// The broker is back: the rows are sent once, and not resent by the
	// same run although the confirm timeout has passed.
	pub.mu.Lock()
	pub.fail, pub.sends = false, map[string]int{}
	pub.mu.Unlock()
	if _, err := db.Exec("UPDATE mq_log SET next_attempt_at = UTC_TIMESTAMP(6) - INTERVAL 1 SECOND"); err != nil {
		t.Fatal(err)
	}
	rep, err = j.RunOnce(context.Background())
	if err != nil || rep.Sent != 12 || rep.Resent != 0 || rep.Dead != 0 || pub.most() != 1 {
		t.Fatalf("broker back: RunOnce %+v, %v; a row sent %d times; want 12 sent once each, none resent or given up",
			rep, err, pub.most())
	}
	// The next run resends each unconfirmed row once.
	time.Sleep(10 * time.Millisecond)
	rep, err = j.RunOnce(context.Background())
	if err != nil || rep.Resent != 12 || rep.Dead != 0 || pub.most() != 2 {
		t.Fatalf("next run: RunOnce %+v, %v; a row sent %d times; want 12 resent once each", rep, err, pub.most())
	}
	var statuses []int
	if err := db.Select(&statuses, "SELECT DISTINCT status FROM mq_log"); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(statuses) != fmt.Sprint([]int{int(outbox.Sent)}) {
		t.Fatalf("statuses %v, want all Sent", statuses)
	}
}

// TestCancelledRunHandsBackItsClaims: the job's ctx ends (a SIGTERM to
// `reliablemq reconcile`) in the middle of a batch. The rows it had not
// sent stayed claimed by the stopped run until the lease ended (a minute
// by default; the run's error listed one "reschedule N: context canceled"
// per row): on every restart or rolling deploy they waited that long
// although no one was sending them. They are handed back, due within a
// second, with no attempt counted.
func TestCancelledRunHandsBackItsClaims(t *testing.T) {
	t.Parallel()
	db := testenv.MySQL(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pub := &stopAfter{n: 3, accepted: map[string]bool{}, cancel: cancel}
	r, err := outbox.NewRelay(db, pub, outbox.WithConcurrency(1), outbox.WithLease(10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	enqueue(t, db, r, 10)
	_, runErr := newJob(t, r).RunOnce(ctx)
	if !errors.Is(runErr, context.Canceled) {
		t.Fatalf("RunOnce: %v, want ctx's error", runErr)
	}
	var rows []struct {
		Key      string `db:"biz_key"`
		Status   int    `db:"status"`
		Attempts int    `db:"attempts"`
		Owner    string `db:"lease_owner"`
		DueSoon  bool   `db:"due_soon"`
	}
	if err := db.Select(&rows, "SELECT biz_key, status, attempts, lease_owner,"+
		" next_attempt_at <= UTC_TIMESTAMP(6) + INTERVAL 2 SECOND AS due_soon FROM mq_log ORDER BY id"); err != nil {
		t.Fatal(err)
	}
	unsent := 0
	for _, row := range rows {
		if row.Status != int(outbox.Pending) {
			continue
		}
		unsent++
		if row.Owner != "" || !row.DueSoon || row.Attempts != 0 {
			t.Errorf("unsent row %s: owner %q, due within 2 s %v, %d attempts; want handed back, due, no attempt (RunOnce: %v)",
				row.Key, row.Owner, row.DueSoon, row.Attempts, runErr)
		}
	}
	if unsent != 7 {
		t.Fatalf("%d rows unsent, want 7 (3 of 10 accepted)", unsent)
	}
}
