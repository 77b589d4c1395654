package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/robfig/cron/v3"
	"github.com/seed157d4c4d/reliablemq/outbox"
	"github.com/seed157d4c4d/reliablemq/producer"
	"github.com/seed157d4c4d/reliablemq/reconcile"
)

const reconcileUsage = `usage: reliablemq reconcile [flags] -once | -every DURATION | -cron EXPR

Sends what the outbox table still holds pending, marks rows dead after the
attempt cap, optionally resends unconfirmed rows and purges old ones. Any
number of instances may run at once.

A run that did something prints one summary line on stdout (-once always
prints it); idle runs print nothing. A row made dead, or a sent row given
up unconfirmed after its resends, prints an ALERT line on stdout. A failed run (database error, missing table, name server
unreachable: then no row is claimed) or a run with failed sends prints one
line on stderr. -once exits 1 in either case; -every and -cron keep going.
The table is checked at start: a missing one exits 1 in every mode. ACL
credentials come from RMQ_ACCESS_KEY and RMQ_SECRET_KEY (and
RMQ_SECURITY_TOKEN), never flags.

`

// schedule is reconcile.Schedule: when the next run starts.
type schedule interface{ Next(time.Time) time.Time }

type interval time.Duration

func (d interval) Next(t time.Time) time.Time { return t.Add(time.Duration(d)) }

func reconcileCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("reconcile", flag.ContinueOnError)
	setUsage(fs, reconcileUsage)
	dsn, ns, nsp := dsnFlag(fs), namesrvFlag(fs), namespaceFlag(fs)
	once := fs.Bool("once", false, "run once and exit")
	every := fs.Duration("every", 0, "run every DURATION until interrupted")
	cronExpr := fs.String("cron", "", `run on a cron schedule, e.g. "*/5 * * * *"`)
	batch := fs.Int("batch", 500, "rows claimed per batch")
	attempts := fs.Int("max-attempts", 10, "failed sends before a row is dead")
	confirm := fs.Duration("confirm-timeout", 0, "resend sent rows not confirmed within this (0: off)")
	retention := fs.Duration("retention", 0, "purge final rows older than this (0: off)")
	table := fs.String("table", "mq_log", "outbox table")
	metricsAddr := fs.String("metrics", "", "serve Prometheus metrics on this address at /metrics, e.g. :9464")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("reconcile: unexpected argument %q", fs.Arg(0))
	}
	if *every < 0 {
		return usagef("reconcile: -every %v is negative", *every)
	}
	modes := 0
	for _, set := range []bool{*once, *every > 0, *cronExpr != ""} {
		if set {
			modes++
		}
	}
	if modes != 1 {
		return usagef("reconcile: give exactly one of -once, -every, -cron")
	}
	if *metricsAddr != "" {
		// A malformed address is a bad flag, found before any connection;
		// one in use is found when it is listened on.
		if err := checkListenAddr(*metricsAddr); err != nil {
			return usagef("reconcile: -metrics %q: %v", *metricsAddr, err)
		}
	}
	var sched schedule = interval(*every)
	if *cronExpr != "" {
		s, err := cron.ParseStandard(*cronExpr)
		if err != nil {
			return usagef("reconcile: -cron: %v", err)
		}
		if s.Next(time.Now()).IsZero() {
			// It parses but matches no date ("0 0 30 2 *"): its timer would
			// fire at once, for ever.
			return usagef("reconcile: -cron %q matches no date: it would never run", *cronExpr)
		}
		sched = s
	}
	space, err := brokerNamespace(*nsp)
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	// The relay and the job are made, and the name servers looked for,
	// before any connection (a bad flag is a usage error even with the
	// database down, and no name server is said before it is dialled); the
	// producer they send through comes after.
	var names []string
	pub := &observedPublisher{}
	// The library's own log lines (one per failed row) are summed up into
	// one line per run by reconciler.
	quiet := slog.New(slog.DiscardHandler)
	var progressMu sync.Mutex // batch hooks come from two claim loops
	var lastProgress time.Time
	var progressed int
	// A run's progress line comes only once it has run 2 s: a short run
	// prints its summary line alone.
	startRun := func() {
		progressMu.Lock()
		defer progressMu.Unlock()
		progressed, lastProgress = 0, time.Now()
	}
	var (
		relay *outbox.Relay
		job   *reconcile.Job
	)
	db, err := openDB(ctx, *dsn, func(db *sqlx.DB) (err error) {
		// The options are the flags.
		relay, err = outbox.NewRelay(db, pub, outbox.WithTable(*table), outbox.WithMaxAttempts(*attempts),
			outbox.WithLogger(quiet),
			outbox.WithAlert(func(_ context.Context, r *outbox.Row) {
				what := "dead row"
				if r.Status != outbox.Dead {
					what = "row given up (sent, never confirmed)"
				}
				fmt.Fprintf(stdout, "ALERT %s %d topic %s key %s after %d attempts: %s\n", what, r.ID, r.Topic, r.Key, r.Attempts, firstLine(r.LastError, 300))
			}))
		if err != nil {
			return usagef("%v", err)
		}
		job, err = reconcile.New(relay, reconcile.WithLogger(quiet), reconcile.WithBatch(*batch),
			reconcile.WithConfirmTimeout(*confirm), reconcile.WithRetention(*retention),
			reconcile.WithBatchHook(func(_ context.Context, b outbox.BatchReport) {
				progressMu.Lock()
				defer progressMu.Unlock()
				progressed += b.Sent
				if time.Since(lastProgress) > 2*time.Second {
					lastProgress = time.Now()
					fmt.Fprintf(stdout, "... %d sent so far\n", progressed)
				}
			}))
		if err != nil {
			// Its errors start "reconcile: ", as the command's own do.
			return usagef("%s", strings.ReplaceAll(strings.TrimPrefix(err.Error(), "reconcile: "), "\nreconcile: ", "\n"))
		}
		names, err = nameServers(*ns)
		return err
	})
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	defer db.Close()
	p, err := newProducer(names, space)
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	defer p.Close()
	pub.pub = p
	// A missing table (a typo in -table, migrations not applied) fails
	// the command now, not every run.
	if _, err := relay.Backlog(ctx); err != nil {
		return fmt.Errorf("reconcile: table %s: %w", *table, err)
	}
	m := newMetrics()
	if *metricsAddr != "" {
		addr, stopMetrics, err := m.serve(*metricsAddr, stderr)
		if err != nil {
			return fmt.Errorf("reconcile: metrics: %w", err)
		}
		defer stopMetrics()
		fmt.Fprintf(stdout, "metrics on http://%s/metrics\n", addr)
	}
	rc := &reconciler{job: job, names: names, pub: pub, m: m, stdout: stdout}
	if *once {
		startRun()
		return rc.run(ctx, true)
	}
	for {
		startRun()
		if err := rc.run(ctx, false); err != nil && ctx.Err() == nil {
			fmt.Fprintln(stderr, "reliablemq:", &oneLine{err})
		}
		now := time.Now()
		t := time.NewTimer(sched.Next(now).Sub(now))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// reconciler runs the job once at a time and accounts for each run.
type reconciler struct {
	job    *reconcile.Job
	names  []string
	pub    *observedPublisher
	m      *metrics
	stdout io.Writer
}

// run runs the job once. It reports a failed run, and a run in which a
// send failed or a row went dead. With always false an idle run prints
// nothing.
func (rc *reconciler) run(ctx context.Context, always bool) error {
	// Without a name server every send would fail with "route info not
	// found" and cost each row an attempt: claim nothing.
	if err := probeNameServers(ctx, rc.names); err != nil {
		rc.m.runFailed()
		return fmt.Errorf("reconcile: %w", err)
	}
	rc.pub.take() // nothing from before this run
	r, err := rc.job.RunOnce(ctx)
	failures, first := rc.pub.take()
	if len(failures) > 0 && probeNameServers(ctx, rc.names) != nil {
		// The name server went away during the run: that is why.
		n := 0
		for _, c := range failures {
			n += c
		}
		failures = map[string]int{reasonNamesrv: n}
	}
	rc.m.observe(r, failures, err)
	if always || !idle(r) {
		printReport(rc.stdout, r)
	}
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("reconcile: interrupted: %w", ctx.Err())
		}
		return err // "reconcile: ..." already
	}
	if r.Failed > 0 || r.Dead > 0 || len(failures) > 0 {
		var what []string
		switch n := sum(failures); {
		case n > 0:
			what = append(what, fmt.Sprintf("%d sends failed (%s)", n, reasons(failures)))
		case r.Failed > 0:
			what = append(what, fmt.Sprintf("%d sends failed", r.Failed))
		}
		if r.Dead > 0 {
			what = append(what, fmt.Sprintf("%d rows given up (made dead, or sent and never confirmed)", r.Dead))
		}
		err := fmt.Errorf("reconcile: %s; each row's last_error says why", strings.Join(what, ", "))
		if first != nil {
			err = fmt.Errorf("%w; the first: %w", err, first)
		}
		return err
	}
	return nil
}

// idle reports whether a run changed nothing.
func idle(r reconcile.Report) bool {
	return r.Sent == 0 && r.Failed == 0 && r.Dead == 0 && r.Resent == 0 && r.Purged == 0
}

func sum(m map[string]int) int {
	n := 0
	for _, c := range m {
		n += c
	}
	return n
}

// reasons formats failure counts as "transient 2, permanent 1".
func reasons(m map[string]int) string {
	var parts []string
	for r, c := range m {
		parts = append(parts, fmt.Sprintf("%s %d", r, c))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

func printReport(w io.Writer, r reconcile.Report) {
	fmt.Fprintf(w, "%s sent %d, failed %d, dead %d, blocked %d, resent %d, purged %d | pending %d (oldest %s), dead rows %d | took %s\n",
		time.Now().Format(time.DateTime), r.Sent, r.Failed, r.Dead, r.Blocked, r.Resent, r.Purged,
		r.Pending, r.OldestPending.Round(time.Second), r.DeadRows, r.Took.Round(time.Millisecond))
}

// Send failure reasons, the reason label of
// reliablemq_reconcile_send_failures_total: the producer's outcome of the
// failed send, or that the name server was unreachable.
const (
	reasonTransient  = "transient"
	reasonPermanent  = "permanent"
	reasonUnknown    = "outcome_unknown"
	reasonNotDurable = "not_durable"
	reasonNamesrv    = "namesrv_unreachable"
	reasonOther      = "other"
)

var allReasons = []string{reasonNamesrv, reasonNotDurable, reasonOther, reasonUnknown, reasonPermanent, reasonTransient}

func failureReason(err error) string {
	var se *producer.SendError
	if !errors.As(err, &se) {
		return reasonOther
	}
	switch se.Outcome {
	case producer.Transient:
		return reasonTransient
	case producer.Permanent:
		return reasonPermanent
	case producer.OutcomeUnknown:
		return reasonUnknown
	case producer.NotDurable:
		return reasonNotDurable
	}
	return reasonOther
}

// observedPublisher counts the failed sends of the producer it wraps by
// reason, and keeps the first error, for the run's summary and metrics.
type observedPublisher struct {
	pub      outbox.Publisher
	mu       sync.Mutex
	failures map[string]int
	first    error
}

var _ outbox.Publisher = (*observedPublisher)(nil)

func (o *observedPublisher) Send(ctx context.Context, m producer.Message) (producer.Result, error) {
	res, err := o.pub.Send(ctx, m)
	if err != nil {
		o.mu.Lock()
		if o.failures == nil {
			o.failures = map[string]int{}
		}
		o.failures[failureReason(err)]++
		if o.first == nil {
			o.first = err
		}
		o.mu.Unlock()
	}
	return res, err
}

// take returns the failures counted since the last take and resets them.
func (o *observedPublisher) take() (map[string]int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	f, first := o.failures, o.first
	o.failures, o.first = nil, nil
	return f, first
}
