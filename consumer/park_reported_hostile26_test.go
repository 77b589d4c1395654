package consumer_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/deadletter"
	"github.com/seed157d4c4d/reliablemq/observe"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// failFirstPark is the dead-letter table with its first park failing
// before it records anything (the database briefly unreachable).
type failFirstPark struct {
	*deadletter.Table
	failed atomic.Bool
}

func (p *failFirstPark) Park(ctx context.Context, d *consumer.DeadLetter) (bool, error) {
	if p.failed.CompareAndSwap(false, true) {
		return false, errors.New("connection refused")
	}
	return p.Table.Park(ctx, d)
}

// TestAFailedParkOfAReportedMessageIsNotReportedAgain pins a fix found by
// hostile testing. A message parked and reported by an earlier delivery
// is delivered again; its park fails once, and the next park finds it
// recorded and reported. The consumer took any park after a failed one
// for the first to know of the record (unsureParks), and alerted it a
// second time. A [consumer.ReportedParker] says itself whether a record
// was reported: the record a failed park may have made is not.
func TestAFailedParkOfAReportedMessageIsNotReportedAgain(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	ctx := context.Background()
	r := f.send(producer.Message{Body: []byte("told"), Keys: []string{"k-told"}})
	// The earlier delivery's park, reported.
	earlier := &consumer.DeadLetter{Group: f.group, Topic: f.topic, MsgID: r.MsgID, Body: []byte("told"),
		Attempts: 1, LastError: "unknown coupon type", Cause: consumer.CausePermanent}
	if inserted, err := f.dead.Park(ctx, earlier); err != nil || !inserted {
		t.Fatalf("earlier park: inserted %v, %v", inserted, err)
	}
	if err := f.dead.Reported(ctx, earlier); err != nil {
		t.Fatal(err)
	}
	var runs, alerts atomic.Int32
	h := func(context.Context, *consumer.Message) error {
		runs.Add(1)
		return consumer.Permanent(errors.New("unknown coupon type"))
	}
	p := &failFirstPark{Table: f.dead}
	c := f.start(consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithParker(p),
		consumer.WithRetryDelay(50*time.Millisecond), hostile6Quiet,
		consumer.WithAlert(func(context.Context, *consumer.DeadLetter) { alerts.Add(1) })))
	f.eventually("the delivery whose park failed delivered again", func() bool { return runs.Load() >= 2 })
	f.settle()
	c.Close() // waits for the second delivery's park
	if n := alerts.Load(); n != 0 {
		t.Fatalf("%d alerts; want none: the record was reported by the earlier delivery", n)
	}
	if st := c.Stats(); st.Parked != 0 {
		t.Fatalf("Stats().Parked %d; want 0", st.Parked)
	}
}

// TestARecordReportedLateIsReportedAsRecorded pins a fix found by hostile
// testing. An orderly consumer under ParkKey recorded a message (cause
// permanent) and stopped before reporting it. Its next delivery finds
// its own record holding the key, so it is parked again with cause
// key-parked, and Park reports the record as not reported: the alert, log
// line and event said "key-parked, an earlier message of this sharding
// key is parked" about the key's first parked message, which is parked
// for its own error. A record reported late is reported as recorded (the
// alert's dead letter, and the event's reason and error).
func TestARecordReportedLateIsReportedAsRecorded(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	ctx := context.Background()
	r := f.send(producer.Message{Body: []byte("step 0"), Keys: []string{"order-0"}, ShardingKey: "order"})
	earlier := &consumer.DeadLetter{Group: f.group, Topic: f.topic, MsgID: r.MsgID, Keys: []string{"order-0"},
		ShardingKey: "order", Body: []byte("step 0"), Attempts: 2, LastError: "unknown coupon type",
		Cause: consumer.CausePermanent}
	if inserted, err := f.dead.Park(ctx, earlier); err != nil || !inserted {
		t.Fatalf("earlier park: inserted %v, %v", inserted, err)
	}
	var mu sync.Mutex
	var alerted []consumer.DeadLetter
	var reasons []string
	h := func(context.Context, *consumer.Message) error { return nil }
	c := f.start(consumer.NewOrderly(f.env.NameServers(), f.group, f.topic, h, consumer.ParkKey,
		consumer.WithParker(f.dead), consumer.WithGuard(f.guard()), hostile6Quiet,
		consumer.WithHooks(observe.Hooks{Event: func(_ context.Context, e observe.Event) {
			if e.Kind == observe.Parked {
				mu.Lock()
				defer mu.Unlock()
				reasons = append(reasons, e.Reason+": "+e.Err.Error())
			}
		}}),
		consumer.WithAlert(func(_ context.Context, d *consumer.DeadLetter) {
			mu.Lock()
			defer mu.Unlock()
			alerted = append(alerted, *d)
		})))
	f.eventually("the record reported", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(alerted) > 0
	})
	f.settle()
	c.Close()
	mu.Lock()
	defer mu.Unlock()
	if len(alerted) != 1 {
		t.Fatalf("%d alerts; want one", len(alerted))
	}
	got := alerted[0]
	if got.ID != earlier.ID || got.Cause != consumer.CausePermanent || got.LastError != "unknown coupon type" || got.Attempts != 2 {
		t.Fatalf("alerted id %d, cause %s, error %q, attempts %d; want the record: id %d, permanent, %q, 2",
			got.ID, got.Cause, got.LastError, got.Attempts, earlier.ID, earlier.LastError)
	}
	if len(reasons) != 1 || reasons[0] != "permanent: unknown coupon type" {
		t.Fatalf("parked events %q; want one, the record's cause and error", reasons)
	}
}
