package reconcile_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/outbox"
	"github.com/seed157d4c4d/reliablemq/reconcile"
)

// The job's own policy, against a fake relay: no database.

type purgeCall struct {
	retention   time.Duration
	includeSent bool
	batch       int
}

// fakeRelay holds counts of due and unconfirmed rows and records calls.
type fakeRelay struct {
	mu          sync.Mutex
	due         int
	unconfirmed int
	failDue     []error // errors DispatchDue returns, first one first
	purgeErr    error
	backlogErr  error

	dispatches, maxInflight, inflight int
	limits                            []int
	resendTimeouts                    []time.Duration
	purges                            []purgeCall
}

var _ reconcile.Relay = (*fakeRelay)(nil)

func (f *fakeRelay) DispatchDue(_ context.Context, limit int) (outbox.BatchReport, error) {
	f.mu.Lock()
	f.dispatches++
	f.limits = append(f.limits, limit)
	f.inflight++
	f.maxInflight = max(f.maxInflight, f.inflight)
	var err error
	if len(f.failDue) > 0 {
		err, f.failDue = f.failDue[0], f.failDue[1:]
	}
	n := 0
	if err == nil {
		n = min(f.due, limit)
		f.due -= n
	}
	f.mu.Unlock()
	// Let the other pipeline overlap this one, if it will.
	time.Sleep(time.Millisecond)
	f.mu.Lock()
	f.inflight--
	f.mu.Unlock()
	return outbox.BatchReport{Claimed: n, Sent: n}, err
}

func (f *fakeRelay) ResendUnconfirmed(_ context.Context, timeout time.Duration, limit int) (outbox.BatchReport, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resendTimeouts = append(f.resendTimeouts, timeout)
	n := min(f.unconfirmed, limit)
	f.unconfirmed -= n
	// One row of each batch fails and one is given up on.
	return outbox.BatchReport{Claimed: n, Sent: max(n-2, 0), Failed: min(n, 1), Dead: min(max(n-1, 0), 1)}, nil
}

func (f *fakeRelay) Purge(_ context.Context, retention time.Duration, includeSent bool, batch int) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.purges = append(f.purges, purgeCall{retention, includeSent, batch})
	return 7, f.purgeErr
}

func (f *fakeRelay) Backlog(context.Context) (outbox.Backlog, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return outbox.Backlog{Pending: int64(f.due), DeadRows: 3}, f.backlogErr
}

var quiet = reconcile.WithLogger(slog.New(slog.DiscardHandler))

func newJob(t *testing.T, r reconcile.Relay, opts ...reconcile.Option) *reconcile.Job {
	t.Helper()
	j, err := reconcile.New(r, append([]reconcile.Option{quiet}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func TestRunOnceDrainsDueRowsBatchByBatchOnTwoPipelines(t *testing.T) {
	t.Parallel()
	f := &fakeRelay{due: 1050}
	var mu sync.Mutex
	var batches []outbox.BatchReport
	j := newJob(t, f, reconcile.WithBatch(100), reconcile.WithBatchHook(func(_ context.Context, b outbox.BatchReport) {
		mu.Lock()
		batches = append(batches, b)
		mu.Unlock()
	}))
	rep, err := j.RunOnce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Sent != 1050 || rep.Claimed != 1050 || f.due != 0 || rep.Pending != 0 || rep.DeadRows != 3 {
		t.Fatalf("report %+v, left %d", rep, f.due)
	}
	for _, l := range f.limits {
		if l != 100 {
			t.Fatalf("claim limits %v, want the batch size", f.limits)
		}
	}
	if f.maxInflight > 2 {
		t.Fatalf("%d claims at once, want at most 2 pipelines", f.maxInflight)
	}
	if len(batches) != 11 {
		t.Fatalf("%d batch hooks, want one per claimed batch (11)", len(batches))
	}
	if len(f.resendTimeouts) != 0 || len(f.purges) != 0 {
		t.Fatalf("resend %v, purge %v without their options", f.resendTimeouts, f.purges)
	}
}

func TestRunOnceResendsUnconfirmedAndPurgesWhenConfigured(t *testing.T) {
	t.Parallel()
	f := &fakeRelay{due: 3, unconfirmed: 25}
	j := newJob(t, f, reconcile.WithBatch(10), reconcile.WithConfirmTimeout(5*time.Minute), reconcile.WithRetention(time.Hour))
	rep, err := j.RunOnce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Batches of 10, 10 and 5: each sends all but two, fails one, gives up one.
	if rep.Sent != 3 || rep.Resent != 8+8+3 || rep.Failed != 3 || rep.Dead != 3 || rep.Purged != 7 {
		t.Fatalf("report %+v", rep)
	}
	if len(f.resendTimeouts) != 3 || f.resendTimeouts[0] != 5*time.Minute {
		t.Fatalf("resend calls %v", f.resendTimeouts)
	}
	// With confirmation on, Sent rows wait for it: only final rows go.
	if len(f.purges) != 1 || f.purges[0] != (purgeCall{time.Hour, false, 10}) {
		t.Fatalf("purges %+v", f.purges)
	}
	f2 := &fakeRelay{}
	if _, err := newJob(t, f2, reconcile.WithRetention(time.Hour)).RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(f2.purges) != 1 || !f2.purges[0].includeSent {
		t.Fatalf("without confirmation Sent rows are final: purges %+v", f2.purges)
	}
}

func TestRunOnceReportsErrors(t *testing.T) {
	t.Parallel()
	boom := errors.New("db down")
	for name, f := range map[string]*fakeRelay{
		"dispatch": {due: 5, failDue: []error{boom, boom}},
		"purge":    {purgeErr: boom},
		"backlog":  {backlogErr: boom},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := newJob(t, f, reconcile.WithRetention(time.Hour)).RunOnce(context.Background())
			if !errors.Is(err, boom) {
				t.Fatalf("err %v, want the relay's", err)
			}
			if name == "dispatch" && len(f.purges) != 0 {
				t.Fatal("purged after a failed dispatch")
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := newJob(t, &fakeRelay{due: 5}).RunOnce(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled run: %v", err)
	}
}

// now is a schedule that is always due.
type now struct{}

func (now) Next(t time.Time) time.Time { return t }

// later is a schedule that is never due within a test.
type later struct{}

func (later) Next(t time.Time) time.Time { return t.Add(time.Hour) }

type records struct {
	mu   sync.Mutex
	msgs []string
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, rec.Level.String()+" "+rec.Message)
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }

func TestRunLogsAFailedRunAndGoesOnUntilCancelled(t *testing.T) {
	t.Parallel()
	f := &fakeRelay{failDue: []error{errors.New("db down")}}
	logs := &records{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var reports []reconcile.Report
	var errs []error
	j := newJob(t, f, reconcile.WithSchedule(now{}), reconcile.WithLogger(slog.New(logs)),
		reconcile.WithReportHook(func(_ context.Context, r reconcile.Report, err error) {
			reports = append(reports, r)
			errs = append(errs, err)
			if len(reports) == 3 {
				cancel()
			}
		}))
	if err := j.Run(ctx); err != nil {
		t.Fatalf("Run returned %v after cancel, want nil", err)
	}
	if len(reports) != 3 || f.dispatches < 3 {
		t.Fatalf("%d reports, %d dispatches; want a run after the failed one, until cancel", len(reports), f.dispatches)
	}
	if errs[0] == nil || errs[1] != nil || errs[2] != nil {
		t.Fatalf("hook errors %v; want the first run's failure, then nil", errs)
	}
	if len(logs.msgs) < 1 || logs.msgs[0] != "WARN reconcile run failed" || slices.Contains(logs.msgs[1:], "WARN reconcile run failed") {
		t.Fatalf("logs %q", logs.msgs)
	}
}

func TestRunReturnsWhenCancelledWhileWaiting(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	runs := 0
	j := newJob(t, &fakeRelay{}, reconcile.WithSchedule(later{}), reconcile.WithReportHook(func(context.Context, reconcile.Report, error) {
		runs++
		cancel()
	}))
	if err := j.Run(ctx); err != nil || runs != 1 {
		t.Fatalf("Run: %v after %d runs", err, runs)
	}
}

func TestNewRefusesBadConfiguration(t *testing.T) {
	t.Parallel()
	var typedNil *outbox.Relay
	for name, c := range map[string]struct {
		r    reconcile.Relay
		opts []reconcile.Option
	}{
		"nil relay":       {nil, nil},
		"typed nil relay": {typedNil, nil},
		"batch":           {&fakeRelay{}, []reconcile.Option{reconcile.WithBatch(0)}},
		"interval":        {&fakeRelay{}, []reconcile.Option{reconcile.WithInterval(0)}},
		"schedule":        {&fakeRelay{}, []reconcile.Option{reconcile.WithSchedule(nil)}},
		"retention":       {&fakeRelay{}, []reconcile.Option{reconcile.WithRetention(-time.Second)}},
	} {
		if _, err := reconcile.New(c.r, c.opts...); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
