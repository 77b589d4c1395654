package outbox_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/outbox"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// TestKeyedDelayedRowFromAnOlderVersionGoesDeadWithAnAlert: a row holding
// both a sharding key and a delay, enqueued before the producer refused
// such messages, is pending at the upgrade. Its first send is refused
// before anything reaches the broker: the row must become Dead at once
// (not be retried until the attempt cap, nor be dropped), with one alert
// whose last_error says why, and hold its key's later row, which goes
// once the operator clears the delay and replays it.
func TestKeyedDelayedRowFromAnOlderVersionGoesDeadWithAnAlert(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t)
	topic := testenv.Name(t, "T")
	env.CreateTopic(t, topic, 2)
	p, err := producer.New(env.NameServers())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	db := testenv.MySQL(t)
	var mu sync.Mutex
	var alerts []*outbox.Row
	r, err := outbox.NewRelay(db, p, outbox.WithLogger(slog.New(slog.DiscardHandler)),
		outbox.WithAlert(func(_ context.Context, row *outbox.Row) {
			mu.Lock()
			defer mu.Unlock()
			c := *row
			alerts = append(alerts, &c)
		}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	first, _, err := r.Enqueue(ctx, db, outbox.Message{Topic: topic, Key: "o-1-timeout", Body: []byte("1"), ShardingKey: "o-1"})
	if err != nil {
		t.Fatal(err)
	}
	// What an older version wrote: the same row with a delay.
	db.MustExec("UPDATE mq_log SET delay_ms = 60000 WHERE id = ?", first)
	second, _, err := r.Enqueue(ctx, db, outbox.Message{Topic: topic, Key: "o-1-paid", Body: []byte("2"), ShardingKey: "o-1"})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := r.DispatchDue(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	row, err := r.Get(ctx, first)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Dead != 1 || row.Status != outbox.Dead || row.Attempts != 1 || !strings.Contains(row.LastError, "sharding key") {
		t.Fatalf("report %+v; row %s after %d attempts (%q): want Dead after its first send, saying why",
			rep, row.Status, row.Attempts, row.LastError)
	}
	if len(alerts) != 1 || alerts[0].ID != first || alerts[0].Status != outbox.Dead {
		t.Fatalf("alerts %+v, want one for the dead row", alerts)
	}
	if later, _ := r.Get(ctx, second); later.Status != outbox.Pending || later.Attempts != 0 {
		t.Fatalf("the key's later row is %s after %d attempts: it must wait behind the dead row", later.Status, later.Attempts)
	}
	if b := env.Embedded; b != nil && len(b.Messages(topic)) != 0 {
		t.Fatalf("%d messages reached the broker", len(b.Messages(topic)))
	}
	// The operator's way out (docs/operations.md): clear the delay, replay.
	db.MustExec("UPDATE mq_log SET delay_ms = 0 WHERE id = ? AND status = 3", first)
	if err := r.Replay(ctx, first); err != nil {
		t.Fatal(err)
	}
	// The held row was put back for a second: dispatch until both are
	// sent, or give up.
	for giveUp := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := r.DispatchDue(ctx, 10); err != nil {
			t.Fatal(err)
		}
		a, errA := r.Get(ctx, first)
		b, errB := r.Get(ctx, second)
		if errA != nil || errB != nil {
			t.Fatal(errA, errB)
		}
		if a.Status == outbox.Sent && b.Status == outbox.Sent {
			break
		}
		if time.Now().After(giveUp) {
			t.Fatalf("rows %d and %d are %s and %s after the replay, want Sent", first, second, a.Status, b.Status)
		}
	}
}
