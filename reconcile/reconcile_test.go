package reconcile_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/outbox"
	"github.com/seed157d4c4d/reliablemq/producer"
	"github.com/seed157d4c4d/reliablemq/reconcile"
)

// claimChecker is a publisher that fails a share of sends and records
// any key sent by two relays at once.
type claimChecker struct {
	mu       sync.Mutex
	inflight map[string]bool
	sends    map[string]int
	overlaps int
	failRate float64
}

func (c *claimChecker) Send(ctx context.Context, m producer.Message) (producer.Result, error) {
	k := m.Keys[0]
	c.mu.Lock()
	if c.inflight[k] {
		c.overlaps++
	}
	c.inflight[k] = true
	fail := rand.Float64() < c.failRate
	c.mu.Unlock()
	time.Sleep(50 * time.Microsecond)
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.inflight, k)
	if fail {
		return producer.Result{}, &producer.SendError{Outcome: producer.Transient, Err: errors.New("broker flapping")}
	}
	c.sends[k]++
	return producer.Result{MsgID: k}, nil
}

func enqueue(t *testing.T, db *sqlx.DB, r *outbox.Relay, n int) {
	t.Helper()
	tx := db.MustBegin()
	for i := range n {
		if _, _, err := r.Enqueue(context.Background(), tx, outbox.Message{Topic: "orders", Key: fmt.Sprint("o-", i), Body: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

func TestInstancesNeverShareARowAndNoRowIsStuck(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		instances int
		rows      int
		failRate  float64
	}{
		{"three instances, 5000 rows", 3, 5000, 0},
		{"two instances, flapping broker", 2, 1000, 0.3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := testenv.MySQL(t)
			db.SetMaxOpenConns(40)
			pub := &claimChecker{inflight: map[string]bool{}, sends: map[string]int{}, failRate: tc.failRate}
			var jobs []*reconcile.Job
			var relay *outbox.Relay
			for range tc.instances {
				r, err := outbox.NewRelay(db, pub, outbox.WithBackoff(time.Millisecond, 5*time.Millisecond),
					outbox.WithMaxAttempts(1000), outbox.WithConcurrency(8))
				if err != nil {
					t.Fatal(err)
				}
				relay = r
				j, err := reconcile.New(r, reconcile.WithBatch(200), reconcile.WithInterval(10*time.Millisecond))
				if err != nil {
					t.Fatal(err)
				}
				jobs = append(jobs, j)
			}
			enqueue(t, db, relay, tc.rows)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			var wg sync.WaitGroup
			var reports atomic.Int64
			for _, j := range jobs {
				wg.Go(func() {
					for ctx.Err() == nil {
						rep, err := j.RunOnce(ctx)
						if err != nil {
							t.Error(err)
							return
						}
						reports.Add(int64(rep.Sent))
						if rep.Pending == 0 {
							return
						}
						time.Sleep(5 * time.Millisecond)
					}
				})
			}
			wg.Wait()
			pub.mu.Lock()
			defer pub.mu.Unlock()
			if pub.overlaps != 0 {
				t.Errorf("%d sends of a row overlapped a send of the same row by another instance", pub.overlaps)
			}
			for i := range tc.rows {
				if n := pub.sends[fmt.Sprint("o-", i)]; n != 1 {
					t.Fatalf("row o-%d sent %d times, want exactly 1 (no lease expired)", i, n)
				}
			}
			var left int
			if err := db.Get(&left, "SELECT COUNT(*) FROM mq_log WHERE status <> 1"); err != nil || left != 0 {
				t.Fatalf("%d rows not sent (%v)", left, err)
			}
			if reports.Load() != int64(tc.rows) {
				t.Errorf("reports count %d sent, want %d", reports.Load(), tc.rows)
			}
		})
	}
}

func TestRunStopsOnCancelAndReports(t *testing.T) {
	t.Parallel()
	db := testenv.MySQL(t)
	pub := &claimChecker{inflight: map[string]bool{}, sends: map[string]int{}}
	r, err := outbox.NewRelay(db, pub)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan reconcile.Report, 100)
	j, err := reconcile.New(r, reconcile.WithInterval(10*time.Millisecond), reconcile.WithRetention(time.Hour),
		reconcile.WithReportHook(func(_ context.Context, rep reconcile.Report, _ error) { got <- rep }))
	if err != nil {
		t.Fatal(err)
	}
	enqueue(t, db, r, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- j.Run(ctx) }()
	first := <-got
	if first.Sent != 10 || first.Pending != 0 {
		t.Fatalf("first report %+v", first)
	}
	<-got // it keeps running on its interval
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	for _, bad := range [][]reconcile.Option{{reconcile.WithInterval(0)}, {reconcile.WithBatch(0)}} {
		if _, err := reconcile.New(r, bad...); err == nil {
			t.Error("bad option accepted")
		}
	}
}
