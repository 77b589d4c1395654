package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/seed157d4c4d/reliablemq/reconcile"
)

// metrics keeps the last report and running totals of the reconcile
// command, served in the Prometheus text exposition format (0.0.4).
type metrics struct {
	mu                     sync.Mutex
	last                   reconcile.Report
	sent, failed, dead, rs int64
	runs, runErrors        int64
	sendFailures           map[string]int64
	lastSuccess            time.Time
}

func newMetrics() *metrics {
	m := &metrics{sendFailures: map[string]int64{}}
	for _, r := range allReasons {
		m.sendFailures[r] = 0 // every series exists from the start
	}
	return m
}

// observe records a finished run: its report (the gauges keep the last
// run's that did not fail: a failed run's may be partial), its failed
// sends by reason, and whether it failed. A run succeeded when it did not
// fail and no send failed.
func (m *metrics) observe(r reconcile.Report, failures map[string]int, runErr error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.runs++
	if runErr != nil {
		m.runErrors++
	} else {
		m.last = r
		if len(failures) == 0 && r.Failed == 0 && r.Dead == 0 {
			m.lastSuccess = time.Now()
		}
	}
	m.sent += int64(r.Sent)
	m.failed += int64(r.Failed)
	m.dead += int64(r.Dead)
	m.rs += int64(r.Resent)
	for reason, n := range failures {
		m.sendFailures[reason] += int64(n)
	}
}

// runFailed counts a run that could not start.
func (m *metrics) runFailed() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.runs++
	m.runErrors++
}

// writeTo writes the exposition.
func (m *metrics) writeTo(w io.Writer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	metric := func(name, typ, help string, v any) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n%s %v\n", name, help, name, typ, name, v)
	}
	metric("reliablemq_outbox_pending", "gauge", "Outbox rows pending at the end of the last run that measured them.", m.last.Pending)
	metric("reliablemq_outbox_oldest_pending_seconds", "gauge", "Age of the oldest pending outbox row.", m.last.OldestPending.Seconds())
	metric("reliablemq_outbox_dead_rows", "gauge", "Outbox rows dead (a human must act).", m.last.DeadRows)
	metric("reliablemq_reconcile_sent_total", "counter", "Outbox rows sent.", m.sent)
	metric("reliablemq_reconcile_failed_total", "counter", "Outbox rows whose send failed and that will be retried.", m.failed)
	metric("reliablemq_reconcile_dead_total", "counter", "Outbox rows made dead (or unconfirmed rows given up on).", m.dead)
	metric("reliablemq_reconcile_resent_total", "counter", "Unconfirmed sent rows sent again.", m.rs)
	metric("reliablemq_reconcile_runs_total", "counter", "Reconcile runs, failed or not.", m.runs)
	metric("reliablemq_reconcile_run_errors_total", "counter",
		"Reconcile runs that failed (database error, missing table, name server unreachable).", m.runErrors)
	var last float64
	if !m.lastSuccess.IsZero() {
		last = float64(m.lastSuccess.UnixMilli()) / 1e3
	}
	metric("reliablemq_reconcile_last_success_timestamp_seconds", "gauge",
		"Unix time of the last run that finished with no error and no failed send (0: none yet).", last)
	const sf = "reliablemq_reconcile_send_failures_total"
	fmt.Fprintf(w, "# HELP %s Failed sends by reason: the producer's outcome, or namesrv_unreachable.\n# TYPE %s counter\n", sf, sf)
	for _, r := range allReasons {
		fmt.Fprintf(w, "%s{reason=%q} %d\n", sf, r, m.sendFailures[r])
	}
}

func (m *metrics) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	m.writeTo(w)
}

// serve starts the metrics server on addr and returns the address it
// listens on (addr may have port 0); stop shuts it down and waits for it.
func (m *metrics) serve(addr string, stderr io.Writer) (bound string, stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, err
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
	return ln.Addr().String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx) // best effort on exit
		<-done
	}, nil
}
