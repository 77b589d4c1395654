package reconcile_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/outbox"
	"github.com/seed157d4c4d/reliablemq/producer"
	"github.com/seed157d4c4d/reliablemq/reconcile"
)

// picky fails every send of a key starting with "bad", accepts the
// others, and records sends of one key overlapping across instances.
type picky struct {
	mu       sync.Mutex
	inflight map[string]bool
	sends    map[string]int
	overlaps int
}

func (p *picky) Send(_ context.Context, m producer.Message) (producer.Result, error) {
	k := m.Keys[0]
	p.mu.Lock()
	if p.inflight[k] {
		p.overlaps++
	}
	p.inflight[k] = true
	p.mu.Unlock()
	time.Sleep(200 * time.Microsecond)
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.inflight, k)
	p.sends[k]++
	if strings.HasPrefix(k, "bad") {
		return producer.Result{}, &producer.SendError{Outcome: producer.Transient, Err: errors.New("queue full")}
	}
	return producer.Result{MsgID: k}, nil
}

// TestThreeInstancesAlertEachGivenUpRowOnce: three jobs over one table,
// a publisher that fails some rows only and a consumer that never
// confirms. Every failing row becomes Dead after exactly the attempt cap
// with one alert in all, every other row is resent until the cap and then
// given up on with one alert, and no row is ever sent by two instances at
// once.
func TestThreeInstancesAlertEachGivenUpRowOnce(t *testing.T) {
	t.Parallel()
	const rows, bad, maxAttempts = 300, 40, 3
	db := testenv.MySQL(t)
	db.SetMaxOpenConns(30)
	pub := &picky{inflight: map[string]bool{}, sends: map[string]int{}}
	var mu sync.Mutex
	alerts := map[string][]outbox.Status{}
	var jobs []*reconcile.Job
	var relay *outbox.Relay
	for range 3 {
		r, err := outbox.NewRelay(db, pub, outbox.WithMaxAttempts(maxAttempts), outbox.WithBackoff(time.Millisecond, 2*time.Millisecond),
			outbox.WithConcurrency(4), outbox.WithLogger(slog.New(slog.DiscardHandler)),
			outbox.WithAlert(func(_ context.Context, row *outbox.Row) {
				mu.Lock()
				alerts[row.Key] = append(alerts[row.Key], row.Status)
				mu.Unlock()
			}))
		if err != nil {
			t.Fatal(err)
		}
		relay = r
		// Batches smaller than the backlog, so instances interleave.
		jobs = append(jobs, newJob(t, r, reconcile.WithBatch(25), reconcile.WithConfirmTimeout(time.Microsecond)))
	}
	tx := db.MustBegin()
	for i := range rows {
		key := fmt.Sprint("ok-", i)
		if i < bad {
			key = fmt.Sprint("bad-", i)
		}
		if _, _, err := relay.Enqueue(context.Background(), tx, outbox.Message{Topic: "orders", Key: key, Body: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	given := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, a := range alerts {
			n += len(a)
		}
		return n
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Go(func() {
			for ctx.Err() == nil && given() < rows {
				if _, err := j.RunOnce(ctx); err != nil {
					t.Error(err)
					return
				}
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		t.Fatalf("only %d of %d rows given up on within a minute", given(), rows)
	}
	pub.mu.Lock()
	defer pub.mu.Unlock()
	if pub.overlaps != 0 {
		t.Errorf("%d sends overlapped a send of the same row by another instance", pub.overlaps)
	}
	for i := range rows {
		key, want := fmt.Sprint("ok-", i), outbox.Sent
		if i < bad {
			key, want = fmt.Sprint("bad-", i), outbox.Dead
		}
		if a := alerts[key]; len(a) != 1 || a[0] != want {
			t.Errorf("row %s: alerts %v, want exactly one, of a %v row", key, a, want)
		}
		if pub.sends[key] != maxAttempts {
			t.Errorf("row %s sent %d times, want the cap, %d", key, pub.sends[key], maxAttempts)
		}
	}
	var wrong int
	if err := db.Get(&wrong, "SELECT COUNT(*) FROM mq_log WHERE attempts <> ? OR lease_owner <> '' OR status NOT IN (?, ?)",
		maxAttempts, int(outbox.Sent), int(outbox.Dead)); err != nil || wrong != 0 {
		t.Fatalf("%d rows not Sent or Dead at the cap (%v)", wrong, err)
	}
}
