package consumer_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// TestAParkNobodyReportedIsReportedByTheNextDelivery: a consumer that
// crashed (or lost its park's reply) between recording a message and
// alerting it left an entry nobody was told of; the message's next
// delivery, in another process, parked it again, found it recorded and
// said nothing. It now finds the entry not reported and reports it (the
// alert, once); a message whose earlier park was reported is not alerted
// again.
func TestAParkNobodyReportedIsReportedByTheNextDelivery(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	ctx := context.Background()
	silent := f.send(producer.Message{Body: []byte("silent"), Keys: []string{"k-silent"}})
	told := f.send(producer.Message{Body: []byte("told"), Keys: []string{"k-told"}})
	// The earlier process's parks: both recorded, one reported.
	for _, r := range []producer.Result{silent, told} {
		dl := &consumer.DeadLetter{Group: f.group, Topic: f.topic, MsgID: r.MsgID, Body: []byte("earlier"),
			Attempts: 1, LastError: "unknown coupon type", Cause: consumer.CausePermanent}
		if inserted, err := f.dead.Park(ctx, dl); err != nil || !inserted {
			t.Fatalf("earlier park: inserted %v, %v", inserted, err)
		}
		if r == told {
			if err := f.dead.Reported(ctx, dl); err != nil {
				t.Fatal(err)
			}
		}
	}
	var mu sync.Mutex
	alerted := map[string]int{}
	ran := map[string]bool{}
	h := func(_ context.Context, m *consumer.Message) error {
		mu.Lock()
		defer mu.Unlock()
		ran[m.MsgID] = true
		return consumer.Permanent(errors.New("unknown coupon type"))
	}
	c := f.start(consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithParker(f.dead),
		consumer.WithAlert(func(_ context.Context, d *consumer.DeadLetter) {
			mu.Lock()
			defer mu.Unlock()
			alerted[d.MsgID]++
		})))
	f.eventually("both delivered, the unreported one alerted", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return ran[silent.MsgID] && ran[told.MsgID] && alerted[silent.MsgID] == 1
	})
	f.settle()
	c.Close() // waits for the deliveries' parks
	mu.Lock()
	defer mu.Unlock()
	if alerted[silent.MsgID] != 1 || alerted[told.MsgID] != 0 || len(f.parked()) != 2 {
		t.Fatalf("alerts %v, %d entries; want one alert for %s only, two entries", alerted, len(f.parked()), silent.MsgID)
	}
	// Marked reported: parked once more, neither is reported again.
	for _, id := range []string{silent.MsgID, told.MsgID} {
		dl := &consumer.DeadLetter{Group: f.group, Topic: f.topic, MsgID: id, Cause: consumer.CausePermanent}
		if inserted, err := f.dead.Park(ctx, dl); err != nil || inserted {
			t.Fatalf("%s parked again: inserted %v, %v; want it reported", id, inserted, err)
		}
	}
}
