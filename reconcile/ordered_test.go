package reconcile_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/outbox"
	"github.com/seed157d4c4d/reliablemq/producer"
	"github.com/seed157d4c4d/reliablemq/reconcile"
)

// orderRecorder records the keys sent, in order, per sharding key.
type orderRecorder struct {
	mu    sync.Mutex
	byKey map[string][]string
}

func (o *orderRecorder) Send(_ context.Context, m producer.Message) (producer.Result, error) {
	time.Sleep(time.Millisecond) // a broker's round trip: the two claim loops overlap
	o.mu.Lock()
	defer o.mu.Unlock()
	o.byKey[m.ShardingKey] = append(o.byKey[m.ShardingKey], m.Keys[0])
	return producer.Result{MsgID: m.Keys[0]}, nil
}

// TestRunSendsAnOrderedBacklogInOneRun: the run's two claim loops both
// took rows of one sharding key; the later batch found the earlier one's
// rows not Sent yet, handed its rows back for a second later (after the
// run's start, so not this run's), and so did every batch after it: a
// backlog of 40 rows of one key, batch 4, took 16 runs to send. One run
// sends every row due at its start, each key's in order.
func TestRunSendsAnOrderedBacklogInOneRun(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		keys, rows int
		batch      int
		instances  int
	}{
		{"one key, 40 rows, batch 4", 1, 40, 4, 1},
		{"three keys interleaved, 60 rows, batch 7", 3, 60, 7, 1},
		{"one key and unordered rows, batch 5", 1, 30, 5, 1},
		{"two instances, one key, 40 rows, batch 4", 1, 40, 4, 2},
		{"three instances, three keys, 90 rows, batch 5", 3, 90, 5, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := testenv.MySQL(t)
			pub := &orderRecorder{byKey: map[string][]string{}}
			r, err := outbox.NewRelay(db, pub)
			if err != nil {
				t.Fatal(err)
			}
			want := map[string][]string{}
			tx := db.MustBegin()
			for i := range tc.rows {
				m := outbox.Message{Topic: "orders", Key: fmt.Sprint("o-", i), Body: []byte("x"),
					ShardingKey: fmt.Sprint("k", i%tc.keys)}
				if tc.name == "one key and unordered rows, batch 5" && i%2 == 1 {
					m.ShardingKey = ""
				}
				want[m.ShardingKey] = append(want[m.ShardingKey], m.Key)
				if _, _, err := r.Enqueue(context.Background(), tx, m); err != nil {
					t.Fatal(err)
				}
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
			// Each instance its own relay, as in its own process; the runs
			// start together.
			var (
				mu    sync.Mutex
				total outbox.BatchReport
				wg    sync.WaitGroup
			)
			for range tc.instances {
				r, err := outbox.NewRelay(db, pub)
				if err != nil {
					t.Fatal(err)
				}
				j, err := reconcile.New(r, reconcile.WithBatch(tc.batch))
				if err != nil {
					t.Fatal(err)
				}
				wg.Go(func() {
					rep, err := j.RunOnce(context.Background())
					if err != nil {
						t.Error(err)
					}
					mu.Lock()
					defer mu.Unlock()
					total.Add(rep.BatchReport)
				})
			}
			wg.Wait()
			var pending int
			if err := db.Get(&pending, "SELECT COUNT(*) FROM mq_log WHERE status = 0"); err != nil {
				t.Fatal(err)
			}
			if total.Sent != tc.rows || pending != 0 {
				t.Fatalf("one run sent %d of %d rows (%d blocked), %d left pending", total.Sent, tc.rows, total.Blocked, pending)
			}
			pub.mu.Lock()
			defer pub.mu.Unlock()
			for k, keys := range want {
				if k == "" {
					continue
				}
				if fmt.Sprint(pub.byKey[k]) != fmt.Sprint(keys) {
					t.Errorf("key %s sent as %v, want %v", k, pub.byKey[k], keys)
				}
			}
		})
	}
}
