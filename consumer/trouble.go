package consumer

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/seed157d4c4d/reliablemq/internal/safely"
)

// Operations a [Trouble] names.
const (
	// OpClaim: the guard's claim of a business key.
	OpClaim = "claim"
	// OpComplete: recording a handled key as done in the guard's store.
	OpComplete = "complete"
	// OpPark: recording a message in the [Parker].
	OpPark = "park"
	// OpCheckParked: asking the [KeyParker] whether a sharding key has a
	// parked message (orderly, [ParkKey]).
	OpCheckParked = "check parked key"
	// OpReplayReceived: telling the [ReplayTracker] a replay arrived.
	OpReplayReceived = "replay received"
	// OpRetryStore: storing a retry copy in the group's %RETRY% topic.
	OpRetryStore = "retry store"
	// OpBusy: a key another consumer keeps holding.
	OpBusy = "busy"
)

// troubleAfter is how many failures of one operation in a row make a
// [Trouble]. Each failure is a retry of its message, never an ack.
const troubleAfter = 5

// busyReportAttempt is the delivery at which a message whose key is still
// held by another consumer is reported: each Busy delivery waits about a
// lease, so by then the key has been held for several leases.
const busyReportAttempt = 4

// Trouble is what a consumer reports when something keeps failing without
// any single message being parked: a store that fails [troubleAfter] times
// in a row, or a key held by another consumer past several leases. The
// messages involved are retried, never acknowledged; this says why they
// do not move.
type Trouble struct {
	Group string
	// Op is one of the Op constants.
	Op string
	// Failures is the count in a row when reported (for OpBusy, the
	// delivery attempt).
	Failures int
	// Key and MsgID are those of the message whose failure crossed the
	// threshold.
	Key   string
	MsgID string
	Err   error
}

// trouble counts failures in a row per operation and reports the run once
// it reaches troubleAfter; a success ends the run.
type trouble struct {
	group  string
	logger *slog.Logger
	alert  func(context.Context, Trouble)

	mu    sync.Mutex
	inRow map[string]int
	// runs is how many operations have a run of failures: while none
	// has, a success (the usual case) takes no lock.
	runs atomic.Int32
}

func (t *trouble) observe(ctx context.Context, op string, err error, key, msgID string) {
	if err == nil && t.runs.Load() == 0 {
		return
	}
	t.mu.Lock()
	if t.inRow == nil {
		t.inRow = make(map[string]int)
	}
	if err == nil {
		if _, ok := t.inRow[op]; ok {
			delete(t.inRow, op)
			t.runs.Add(-1)
		}
		t.mu.Unlock()
		return
	}
	t.inRow[op]++
	n := t.inRow[op]
	if n == 1 {
		t.runs.Add(1)
	}
	t.mu.Unlock()
	if n == troubleAfter {
		t.report(ctx, Trouble{Group: t.group, Op: op, Failures: n, Key: key, MsgID: msgID, Err: err})
	}
}

// report logs tr at Error and calls the alert hook.
func (t *trouble) report(ctx context.Context, tr Trouble) {
	t.logger.LogAttrs(ctx, slog.LevelError, "messages are not moving: "+tr.Op+" keeps failing; they are retried, not acknowledged",
		slog.String("group", tr.Group), slog.String("op", tr.Op), slog.Int("failures", tr.Failures),
		slog.String("keys", tr.Key), slog.String("msg_id", tr.MsgID), slog.Any("error", tr.Err))
	if t.alert != nil {
		safely.Report(ctx, t.logger, "trouble alert", func() { t.alert(ctx, tr) })
	}
}
