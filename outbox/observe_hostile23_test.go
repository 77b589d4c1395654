package outbox_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"sync"
	"testing"

	"github.com/seed157d4c4d/reliablemq/observe"
	"github.com/seed157d4c4d/reliablemq/outbox"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// The relay reports row_retry, row_dead and claim_lost from the
// goroutines it starts to send a batch's groups (and from its mark timer),
// where nothing the program does can recover a panic. A panicking Event
// hook (the program's bug, which the consumer contains: logged, nothing
// changed) then kills the whole process: every business transaction in
// flight with it, and the rows already sent in the batch but not yet
// marked are sent a second time after the restart. A report tells of
// what already happened; its panic must change nothing.
//
// The scenario runs in a child process, so that the crash it provokes
// fails this test instead of the package's test binary.
func TestRelayEventHookPanicDoesNotKillTheProcess(t *testing.T) {
	if os.Getenv("OUTBOX_HOSTILE23_CHILD") == "1" {
		relayWithPanickingEventHook(t)
		return
	}
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^TestRelayEventHookPanicDoesNotKillTheProcess$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "OUTBOX_HOSTILE23_CHILD=1")
	out, err := cmd.CombinedOutput()
	switch {
	case err != nil:
		t.Fatalf("the relay's run with a panicking Event hook failed: %v\n%s", err, out)
	case bytes.Contains(out, []byte("--- SKIP")):
		t.Skipf("the scenario was skipped:\n%s", out)
	case !bytes.Contains(out, []byte("--- PASS: TestRelayEventHookPanicDoesNotKillTheProcess")):
		t.Fatalf("the scenario did not run:\n%s", out)
	}
}

func relayWithPanickingEventHook(t *testing.T) {
	pub := newFake()
	var mu sync.Mutex
	failed := map[string]bool{}
	pub.fail = func(m producer.Message) error {
		mu.Lock()
		defer mu.Unlock()
		if failed[m.Keys[0]] {
			return nil
		}
		failed[m.Keys[0]] = true
		return &producer.SendError{Topic: m.Topic, Keys: m.Keys, Outcome: producer.Transient, Err: os.ErrDeadlineExceeded}
	}
	var reported []observe.Kind
	hooks := observe.Hooks{Event: func(_ context.Context, e observe.Event) {
		mu.Lock()
		reported = append(reported, e.Kind)
		mu.Unlock()
		panic("metrics exporter bug")
	}}
	db, r := setup(t, pub, outbox.WithHooks(hooks))
	if err := r.Transact(bg, placeOrder("o-1")); err != nil {
		t.Fatalf("transact: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reported) != 1 || reported[0] != observe.RowRetry {
		t.Errorf("reported %v, want [row_retry]", reported)
	}
	// The failed send is recorded as the row_retry says: due again later.
	if n := count(t, db, "SELECT COUNT(*) FROM mq_log WHERE biz_key = 'o-1' AND status = 0 AND attempts = 1"); n != 1 {
		t.Errorf("row o-1 not pending after its first attempt (%d rows)", n)
	}
}
