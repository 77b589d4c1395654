package deadletter_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/deadletter"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

// TestDrainAlertsEachMessageItParks: a message the broker moved to its
// DLQ is one no consumer took; the drain parked it silently (no log line,
// no alert), so it waited in the table until someone listed it. Each one
// it parks is now logged at Error and handed to the alert, once, and
// marked reported.
func TestDrainAlertsEachMessageItParks(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	deadLetterViaClient(f, "first")
	var (
		mu     sync.Mutex
		alerts []*consumer.DeadLetter
	)
	var logs testenv.Logs
	d, err := deadletter.NewDrain(f.env.NameServers(), f.group, f.dead, deadletter.WithInterval(100*time.Millisecond),
		deadletter.WithLogger(logs.Logger()),
		deadletter.WithAlert(func(_ context.Context, dl *consumer.DeadLetter) {
			mu.Lock()
			defer mu.Unlock()
			alerts = append(alerts, dl)
		}))
	if err != nil {
		t.Fatal(err)
	}
	runDrain(t, d)
	f.eventually("the message parked and alerted", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(f.parked()) == 1 && len(alerts) == 1
	})
	entry := f.parked()[0]
	mu.Lock()
	a := alerts[0]
	mu.Unlock()
	if a.MsgID != entry.MsgID || string(a.Body) != "first" || a.Cause != consumer.CauseDLQ || a.Group != f.group {
		t.Fatalf("alerted %+v; want the parked entry %+v", a, entry)
	}
	if l := logs.String(); !strings.Contains(l, "level=ERROR") || !strings.Contains(l, entry.MsgID) {
		t.Fatalf("no Error line names the parked message %s:\n%s", entry.MsgID, l)
	}
	// Marked reported: a later park of it (another drain's) reports nothing.
	if inserted, err := f.dead.Park(context.Background(), a); err != nil || inserted {
		t.Fatalf("parked again: inserted %v, %v; want it marked reported", inserted, err)
	}
}
