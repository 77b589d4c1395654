package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/robfig/cron/v3"
	"github.com/seed157d4c4d/reliablemq/outbox"
	"github.com/seed157d4c4d/reliablemq/producer"
	"github.com/seed157d4c4d/reliablemq/reconcile"
)

const reconcileUsage = `usage: reliablemq reconcile [flags] -once | -every DURATION | -cron EXPR

Sends what the outbox table still holds pending, marks rows dead after the
attempt cap, optionally resends unconfirmed rows and purges old ones. Any
number of instances may run at once.

`

func reconcileCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("reconcile", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(stderr, reconcileUsage); fs.PrintDefaults() }
	dsn, ns := dsnFlag(fs), namesrvFlag(fs)
	once := fs.Bool("once", false, "run once and exit")
	every := fs.Duration("every", 0, "run every DURATION until interrupted")
	cronExpr := fs.String("cron", "", `run on a cron schedule, e.g. "*/5 * * * *"`)
	batch := fs.Int("batch", 500, "rows claimed per batch")
	attempts := fs.Int("max-attempts", 10, "failed sends before a row is dead")
	confirm := fs.Duration("confirm-timeout", 0, "resend sent rows not confirmed within this (0: off)")
	retention := fs.Duration("retention", 0, "purge final rows older than this (0: off)")
	table := fs.String("table", "mq_log", "outbox table")
	metricsAddr := fs.String("metrics", "", "serve Prometheus metrics on this address, e.g. :9464")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	modes := 0
	for _, set := range []bool{*once, *every > 0, *cronExpr != ""} {
		if set {
			modes++
		}
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "reliablemq: reconcile: unexpected argument %q\n", fs.Arg(0))
		return errUsage
	}
	if *every < 0 {
		fmt.Fprintf(stderr, "reliablemq: reconcile: -every %v is negative\n", *every)
		return errUsage
	}
	if modes != 1 {
		fmt.Fprintln(stderr, "reliablemq: reconcile: give exactly one of -once, -every, -cron")
		fs.Usage()
		return errUsage
	}
	var opts []reconcile.Option
	switch {
	case *every > 0:
		opts = append(opts, reconcile.WithInterval(*every))
	case *cronExpr != "":
		sched, err := cron.ParseStandard(*cronExpr)
		if err != nil {
			return fmt.Errorf("reconcile: -cron: %w", err)
		}
		opts = append(opts, reconcile.WithSchedule(sched))
	}
	names, err := nameServers(*ns)
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	db, err := openDB(*dsn)
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	defer db.Close()
	p, err := producer.New(names, brokerCredentials()...)
	if err != nil {
		return err
	}
	defer p.Close()
	relay, err := outbox.NewRelay(db, p, outbox.WithTable(*table), outbox.WithMaxAttempts(*attempts),
		outbox.WithLogger(slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))),
		outbox.WithAlert(func(_ context.Context, r *outbox.Row) {
			fmt.Fprintf(stdout, "ALERT dead row %d topic %s key %s after %d attempts: %s\n", r.ID, r.Topic, r.Key, r.Attempts, r.LastError)
		}))
	if err != nil {
		return err
	}
	m := &metrics{}
	var progressMu sync.Mutex // batch hooks come from two claim loops
	var lastProgress time.Time
	var progressed int
	// Failed runs and sends go to stderr: a broken daemon must not look
	// healthy.
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	opts = append(opts, reconcile.WithLogger(logger), reconcile.WithBatch(*batch), reconcile.WithConfirmTimeout(*confirm), reconcile.WithRetention(*retention),
		reconcile.WithBatchHook(func(_ context.Context, b outbox.BatchReport) {
			progressMu.Lock()
			defer progressMu.Unlock()
			progressed += b.Sent
			if time.Since(lastProgress) > 2*time.Second {
				lastProgress = time.Now()
				fmt.Fprintf(stdout, "... %d sent so far\n", progressed)
			}
		}),
		reconcile.WithReportHook(func(_ context.Context, r reconcile.Report) {
			progressMu.Lock()
			progressed = 0
			progressMu.Unlock()
			m.observe(r)
			printReport(stdout, r)
		}))
	job, err := reconcile.New(relay, opts...)
	if err != nil {
		return err
	}
	if *metricsAddr != "" {
		stopMetrics, err := m.serve(*metricsAddr, stderr)
		if err != nil {
			return fmt.Errorf("reconcile: metrics: %w", err)
		}
		defer stopMetrics()
	}
	if *once {
		r, err := job.RunOnce(ctx)
		printReport(stdout, r)
		if err != nil {
			return err
		}
		if r.Failed > 0 || r.Dead > 0 {
			return fmt.Errorf("reconcile: %d sends failed, %d rows dead (their last_error says why)", r.Failed, r.Dead)
		}
		return nil
	}
	return job.Run(ctx)
}

func printReport(w io.Writer, r reconcile.Report) {
	fmt.Fprintf(w, "%s sent %d, failed %d, dead %d, blocked %d, resent %d, purged %d | pending %d (oldest %s), dead rows %d | took %s\n",
		time.Now().Format(time.DateTime), r.Sent, r.Failed, r.Dead, r.Blocked, r.Resent, r.Purged,
		r.Pending, r.OldestPending.Round(time.Second), r.DeadRows, r.Took.Round(time.Millisecond))
}

// metrics keeps the last report and running totals, in the Prometheus
// text format.
type metrics struct {
	mu                     sync.Mutex
	last                   reconcile.Report
	sent, failed, dead, rs int64
}

func (m *metrics) observe(r reconcile.Report) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.last = r
	m.sent += int64(r.Sent)
	m.failed += int64(r.Failed)
	m.dead += int64(r.Dead)
	m.rs += int64(r.Resent)
}

func (m *metrics) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	fmt.Fprintf(w, "# TYPE reliablemq_outbox_pending gauge\nreliablemq_outbox_pending %d\n", m.last.Pending)
	fmt.Fprintf(w, "# TYPE reliablemq_outbox_oldest_pending_seconds gauge\nreliablemq_outbox_oldest_pending_seconds %g\n", m.last.OldestPending.Seconds())
	fmt.Fprintf(w, "# TYPE reliablemq_outbox_dead_rows gauge\nreliablemq_outbox_dead_rows %d\n", m.last.DeadRows)
	fmt.Fprintf(w, "# TYPE reliablemq_reconcile_sent_total counter\nreliablemq_reconcile_sent_total %d\n", m.sent)
	fmt.Fprintf(w, "# TYPE reliablemq_reconcile_failed_total counter\nreliablemq_reconcile_failed_total %d\n", m.failed)
	fmt.Fprintf(w, "# TYPE reliablemq_reconcile_dead_total counter\nreliablemq_reconcile_dead_total %d\n", m.dead)
	fmt.Fprintf(w, "# TYPE reliablemq_reconcile_resent_total counter\nreliablemq_reconcile_resent_total %d\n", m.rs)
}

// serve starts the metrics server; stop shuts it down and waits for it.
func (m *metrics) serve(addr string, stderr io.Writer) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", m)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintln(stderr, "reliablemq: reconcile: metrics server:", err)
		}
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx) // best effort on exit
		<-done
	}, nil
}
