package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/seed157d4c4d/reliablemq/outbox"
)

// Relay is what a [Job] drives: *outbox.Relay implements it. The methods
// are those of [outbox.Relay], with the same contracts: DispatchDue and
// ResendUnconfirmed claim up to limit rows and report on them, Purge
// deletes final rows older than retention, Backlog counts what is left.
// All may be called from two goroutines at once.
type Relay interface {
	DispatchDue(ctx context.Context, limit int) (outbox.BatchReport, error)
	ResendUnconfirmed(ctx context.Context, timeout time.Duration, limit int) (outbox.BatchReport, error)
	Purge(ctx context.Context, retention time.Duration, includeSent bool, batch int) (int64, error)
	Backlog(ctx context.Context) (outbox.Backlog, error)
}

var _ Relay = (*outbox.Relay)(nil)

// asOfRelay is a [Relay] that can claim only the rows due by a given time,
// as *outbox.Relay does: a run claims the rows due at its start, so a row
// that fails (due again after its backoff) or is sent or resent in the run
// (due again after the confirm timeout) is not claimed again by the same
// run. Other relays are called without it.
type asOfRelay interface {
	DispatchDueAsOf(ctx context.Context, asOf time.Time, limit int) (outbox.BatchReport, error)
	ResendUnconfirmedAsOf(ctx context.Context, asOf time.Time, timeout time.Duration, limit int) (outbox.BatchReport, error)
}

var _ asOfRelay = (*outbox.Relay)(nil)

// Schedule says when the next run starts; a parsed cron expression (for
// example github.com/robfig/cron/v3's) satisfies it. Next should return a
// time after its argument: a time not after it starts the next run at
// once (a schedule that always does so runs the job back to back), and
// the zero time ends [Job.Run].
type Schedule interface {
	Next(time.Time) time.Time
}

type every time.Duration

func (e every) Next(t time.Time) time.Time { return t.Add(time.Duration(e)) }

type config struct {
	schedule       Schedule
	batch          int
	confirmTimeout time.Duration
	retention      time.Duration
	onReport       func(context.Context, Report, error)
	onBatch        func(context.Context, outbox.BatchReport)
	logger         *slog.Logger
}

// Option configures a [Job].
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// WithInterval runs the job every d (from the end of one run to the start
// of the next). Default 10 s.
func WithInterval(d time.Duration) Option {
	return optionFunc(func(c *config) { c.schedule = every(d) })
}

// WithSchedule runs the job on a schedule, such as a parsed cron
// expression. It replaces [WithInterval].
func WithSchedule(s Schedule) Option { return optionFunc(func(c *config) { c.schedule = s }) }

// WithBatch sets how many rows one claim takes. Default 500.
func WithBatch(n int) Option { return optionFunc(func(c *config) { c.batch = n }) }

// WithConfirmTimeout turns on resending of Sent rows that no consumer
// confirmed (outbox.Relay.Confirm) within d: the broker acknowledged them
// but they may have been lost after the ack. Default off.
func WithConfirmTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) { c.confirmTimeout = d })
}

// WithRetention purges rows in a final state (Confirmed; Sent too when
// confirmation is off) not updated for d, on every run. Default off.
func WithRetention(d time.Duration) Option { return optionFunc(func(c *config) { c.retention = d }) }

// WithReportHook sets a function [Job.Run] calls after each run with its
// report and its error (nil when the run succeeded; with an error the
// report holds what the run did before it failed), for metrics and
// alerts. Default none.
func WithReportHook(fn func(context.Context, Report, error)) Option {
	return optionFunc(func(c *config) { c.onReport = fn })
}

// WithBatchHook sets a function called after each claimed batch, for
// progress on long runs; calls may come from two goroutines at once.
// Default none.
func WithBatchHook(fn func(context.Context, outbox.BatchReport)) Option {
	return optionFunc(func(c *config) { c.onBatch = fn })
}

// WithLogger sets the logger. Default: [slog.Default] at construction, so
// retries, parked messages, dead rows and failed runs are visible without
// wiring; slog.New(slog.DiscardHandler) silences it.
func WithLogger(l *slog.Logger) Option { return optionFunc(func(c *config) { c.logger = l }) }

// Report is what one run did and what is left.
type Report struct {
	outbox.BatchReport
	// Resent counts unconfirmed Sent rows sent again.
	Resent int
	// Purged counts rows deleted by the retention purge.
	Purged int64
	// Backlog is measured at the end of the run.
	outbox.Backlog
	Took time.Duration
}

// Job is the reconcile job: it sends what the outbox still holds Pending
// (sends that failed, processes that died between commit and send),
// backing off per row and marking rows Dead after the relay's attempt cap;
// optionally resends unconfirmed rows; purges old rows. Any number of jobs
// may run at once against one table.
type Job struct {
	relay Relay
	cfg   config
}

// New returns a job over relay, normally an *outbox.Relay.
func New(relay Relay, opts ...Option) (*Job, error) {
	c := config{schedule: every(10 * time.Second), batch: 500}
	for _, o := range opts {
		o.apply(&c)
	}
	var errs []error
	if r, ok := relay.(*outbox.Relay); relay == nil || (ok && r == nil) {
		errs = append(errs, errors.New("reconcile: nil relay"))
	}
	if e, ok := c.schedule.(every); c.schedule == nil || (ok && e <= 0) {
		errs = append(errs, errors.New("reconcile: interval must be positive"))
	} else if c.schedule.Next(time.Now()).IsZero() {
		// A cron expression that matches no date ("0 0 30 2 *").
		errs = append(errs, errors.New("reconcile: the schedule never fires"))
	}
	if c.batch < 1 {
		errs = append(errs, fmt.Errorf("reconcile: batch %d < 1", c.batch))
	}
	if c.confirmTimeout < 0 {
		errs = append(errs, fmt.Errorf("reconcile: confirm timeout %v is negative", c.confirmTimeout))
	}
	if c.retention < 0 {
		errs = append(errs, fmt.Errorf("reconcile: retention %v is negative", c.retention))
	}
	if c.logger == nil {
		c.logger = slog.Default()
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &Job{relay: relay, cfg: c}, nil
}

// pipelines is how many claim-and-send loops a run overlaps.
const pipelines = 2

// RunOnce sends every row due at its start, batch by batch, until none is
// left or ctx ends; then resends unconfirmed rows and purges, as
// configured. Rows that fail are rescheduled, not retried within the run,
// and a row is sent at most once per run (with an *outbox.Relay; a relay
// without DispatchDueAsOf and ResendUnconfirmedAsOf is asked for what is
// due at each claim).
func (j *Job) RunOnce(ctx context.Context) (Report, error) {
	start := time.Now()
	var rep Report
	dispatch := func() (outbox.BatchReport, error) { return j.relay.DispatchDue(ctx, j.cfg.batch) }
	resend := func() (outbox.BatchReport, error) {
		return j.relay.ResendUnconfirmed(ctx, j.cfg.confirmTimeout, j.cfg.batch)
	}
	if r, ok := j.relay.(asOfRelay); ok {
		// Only the rows due at the start: claiming batch after batch over
		// a backlog that outlasts a row's backoff took a failing row again
		// and again, and with the broker down one run made every row Dead.
		dispatch = func() (outbox.BatchReport, error) { return r.DispatchDueAsOf(ctx, start, j.cfg.batch) }
		resend = func() (outbox.BatchReport, error) {
			return r.ResendUnconfirmedAsOf(ctx, start, j.cfg.confirmTimeout, j.cfg.batch)
		}
	}
	// Two claim loops overlap one batch's database work with the other's
	// sends; SKIP LOCKED keeps them off each other's rows.
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	for range pipelines {
		wg.Go(func() {
			for ctx.Err() == nil {
				b, err := dispatch()
				mu.Lock()
				rep.Add(b)
				if err != nil {
					errs = append(errs, err)
				}
				mu.Unlock()
				if j.cfg.onBatch != nil && b.Claimed > 0 {
					j.cfg.onBatch(ctx, b)
				}
				if err != nil || b.Claimed < j.cfg.batch {
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return rep, fmt.Errorf("reconcile: %w", err)
	}
	if j.cfg.confirmTimeout > 0 {
		for ctx.Err() == nil {
			b, err := resend()
			rep.Resent += b.Sent
			rep.Failed += b.Failed
			rep.Dead += b.Dead
			if err != nil {
				return rep, fmt.Errorf("reconcile: %w", err)
			}
			if b.Claimed < j.cfg.batch {
				break
			}
		}
	}
	if j.cfg.retention > 0 {
		n, err := j.relay.Purge(ctx, j.cfg.retention, j.cfg.confirmTimeout == 0, j.cfg.batch)
		rep.Purged = n
		if err != nil {
			return rep, fmt.Errorf("reconcile: %w", err)
		}
	}
	backlog, err := j.relay.Backlog(ctx)
	rep.Backlog = backlog
	rep.Took = time.Since(start)
	if err != nil {
		return rep, fmt.Errorf("reconcile: %w", err)
	}
	if ctx.Err() != nil {
		return rep, ctx.Err()
	}
	return rep, nil
}

// Run runs the job on its schedule until ctx is cancelled, and returns nil
// then. A failed run is logged at Warn and the next one runs as scheduled.
// A schedule that has no next time (it returns the zero time, as a cron
// schedule does when no date matches) ends Run with an error.
func (j *Job) Run(ctx context.Context) error {
	for {
		rep, err := j.RunOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case err != nil:
			j.cfg.logger.LogAttrs(ctx, slog.LevelWarn, "reconcile run failed", slog.Any("error", err))
		default:
			// An idle run is quiet unless the logger shows Debug.
			level := slog.LevelDebug
			if rep.Claimed > 0 || rep.Resent > 0 || rep.Purged > 0 {
				level = slog.LevelInfo
			}
			j.cfg.logger.LogAttrs(ctx, level, "reconcile run", slog.Int("sent", rep.Sent),
				slog.Int("failed", rep.Failed), slog.Int("dead", rep.Dead), slog.Int64("pending", rep.Pending))
		}
		if j.cfg.onReport != nil {
			j.cfg.onReport(ctx, rep, err)
		}
		now := time.Now()
		next := j.cfg.schedule.Next(now)
		if next.IsZero() {
			return fmt.Errorf("reconcile: the schedule has no run after %s", now.Format(time.RFC3339))
		}
		t := time.NewTimer(next.Sub(now))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}
