package deadletter_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/deadletter"
)

// outage is a parker whose first fail calls fail, as a database that is
// away for a while (a failover) does.
type outage struct {
	*deadletter.Table
	fail  int64
	calls atomic.Int64
}

func (o *outage) Park(ctx context.Context, dl *consumer.DeadLetter) (bool, error) {
	if o.calls.Add(1) <= o.fail {
		return false, errors.New("database away")
	}
	return o.Table.Park(ctx, dl)
}

// TestDrainOutlivesADatabaseOutage: the drain is a consumer, and a park
// that failed was a handler failure like any other, retried with a retry
// copy in %RETRY%<group>-dlq-drain. That copy never reached the drain
// again: it carries the original topic (RETRY_TOPIC, set when the broker
// moved the message to the DLQ), which the client takes for the copy's
// topic and, finding no handler subscribed to it, sends back, until the
// broker moves it to %DLQ%<group>-dlq-drain, a topic nothing drains. One
// failed park (a failover, a lost connection) lost the dead letter. The
// drain now tries again until the message is parked.
func TestDrainOutlivesADatabaseOutage(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	deadLetterViaClient(f, "stuck")
	p := &outage{Table: f.dead, fail: 3}
	d, err := deadletter.NewDrain(f.env.NameServers(), f.group, p, deadletter.WithInterval(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	runDrain(t, d)
	f.eventually("drained after the outage", func() bool { return len(f.parked()) == 1 })
	if dl := f.parked()[0]; dl.Cause != consumer.CauseDLQ || string(dl.Body) != "stuck" || dl.Group != f.group {
		t.Fatalf("dead letter %+v", dl)
	}
	// Drained counts a message once its park has returned: a moment after
	// the row is visible.
	f.eventually("counted as drained", func() bool { return d.Drained() == 1 })
}
