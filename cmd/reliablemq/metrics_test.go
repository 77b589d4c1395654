package main

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/outbox"
	"github.com/seed157d4c4d/reliablemq/reconcile"
	"github.com/seed157d4c4d/reliablemq/rmqtest"
)

var (
	metricName = `[a-zA-Z_:][a-zA-Z0-9_:]*`
	label      = `[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"`
	sampleLine = regexp.MustCompile(`^(` + metricName + `)(\{` + label + `(?:,` + label + `)*\})? (\S+)$`)
	helpLine   = regexp.MustCompile(`^# HELP (` + metricName + `) \S.*$`)
	typeLine   = regexp.MustCompile(`^# TYPE (` + metricName + `) (counter|gauge)$`)
)

// parseExposition checks text against the Prometheus text format (0.0.4)
// as this command writes it: each family has a HELP then a TYPE line
// before its samples, which are contiguous; counters are named _total and
// are not negative. It returns each series' value, keyed by the series as
// written (name and labels).
func parseExposition(t *testing.T, text string) map[string]float64 {
	t.Helper()
	if !strings.HasSuffix(text, "\n") {
		t.Fatalf("exposition does not end in a newline:\n%s", text)
	}
	help, types := map[string]bool{}, map[string]string{}
	done := map[string]bool{} // families whose samples ended
	values := map[string]float64{}
	current := ""
	for i, l := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		bad := func(why string) { t.Fatalf("line %d %q: %s\n%s", i+1, l, why, text) }
		if m := helpLine.FindStringSubmatch(l); m != nil {
			if help[m[1]] {
				bad("second HELP")
			}
			help[m[1]] = true
			continue
		}
		if m := typeLine.FindStringSubmatch(l); m != nil {
			if !help[m[1]] || types[m[1]] != "" {
				bad("TYPE without a HELP before it, or a second TYPE")
			}
			types[m[1]] = m[2]
			continue
		}
		if strings.HasPrefix(l, "#") {
			bad("a comment that is neither HELP nor TYPE")
		}
		m := sampleLine.FindStringSubmatch(l)
		if m == nil {
			bad("not a sample line")
		}
		name := m[1]
		typ := types[name]
		if typ == "" {
			bad("sample before its TYPE")
		}
		if name != current {
			if done[name] {
				bad("samples of a family are not contiguous")
			}
			done[current], current = true, name
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			bad(err.Error())
		}
		if typ == "counter" && (!strings.HasSuffix(name, "_total") || v < 0) {
			bad("a counter must be named _total and not be negative")
		}
		if _, dup := values[name+m[2]]; dup {
			bad("duplicate series")
		}
		values[name+m[2]] = v
	}
	for name := range help {
		if types[name] == "" {
			t.Fatalf("%s has a HELP but no TYPE", name)
		}
	}
	return values
}

var wantSeries = []string{
	"reliablemq_outbox_pending", "reliablemq_outbox_oldest_pending_seconds", "reliablemq_outbox_dead_rows",
	"reliablemq_reconcile_sent_total", "reliablemq_reconcile_failed_total", "reliablemq_reconcile_dead_total",
	"reliablemq_reconcile_resent_total", "reliablemq_reconcile_runs_total", "reliablemq_reconcile_run_errors_total",
	"reliablemq_reconcile_last_success_timestamp_seconds",
	`reliablemq_reconcile_send_failures_total{reason="transient"}`,
	`reliablemq_reconcile_send_failures_total{reason="permanent"}`,
	`reliablemq_reconcile_send_failures_total{reason="outcome_unknown"}`,
	`reliablemq_reconcile_send_failures_total{reason="not_durable"}`,
	`reliablemq_reconcile_send_failures_total{reason="namesrv_unreachable"}`,
	`reliablemq_reconcile_send_failures_total{reason="other"}`,
}

func TestMetricsExposition(t *testing.T) {
	t.Parallel()
	m := newMetrics()
	var b strings.Builder
	m.writeTo(&b)
	v := parseExposition(t, b.String())
	for _, s := range wantSeries {
		if got, ok := v[s]; !ok || got != 0 {
			t.Errorf("before any run: %s = %v (present %v), want 0", s, got, ok)
		}
	}
	before := time.Now()
	r := reconcile.Report{BatchReport: outbox.BatchReport{Sent: 3, Failed: 1, Dead: 1},
		Backlog: outbox.Backlog{Pending: 7, OldestPending: 1500 * time.Millisecond, DeadRows: 2}}
	m.observe(r, map[string]int{reasonTransient: 1, reasonPermanent: 1}, nil) // failed sends: no success
	m.observe(reconcile.Report{BatchReport: outbox.BatchReport{Sent: 2}}, nil, nil)
	m.observe(reconcile.Report{}, nil, context.DeadlineExceeded)
	m.runFailed()
	b.Reset()
	m.writeTo(&b)
	v = parseExposition(t, b.String())
	for s, want := range map[string]float64{
		"reliablemq_reconcile_sent_total":                              5,
		"reliablemq_reconcile_failed_total":                            1,
		"reliablemq_reconcile_dead_total":                              1,
		"reliablemq_reconcile_runs_total":                              4,
		"reliablemq_reconcile_run_errors_total":                        2,
		"reliablemq_outbox_pending":                                    0, // the last run that did not fail measured none
		`reliablemq_reconcile_send_failures_total{reason="transient"}`: 1,
		`reliablemq_reconcile_send_failures_total{reason="permanent"}`: 1,
	} {
		if v[s] != want {
			t.Errorf("%s = %v, want %v\n%s", s, v[s], want, b.String())
		}
	}
	if last := v["reliablemq_reconcile_last_success_timestamp_seconds"]; last < float64(before.Unix()) {
		t.Errorf("last success %v, want the second run's time (>= %d)", last, before.Unix())
	}
}

// scrape fetches the metrics the reconcile process prints the address of.
func scrape(t *testing.T, p *proc) map[string]float64 {
	t.Helper()
	p.stdout.waitFor(t, "/metrics\n", p.done)
	_, rest, _ := strings.Cut(p.stdout.String(), "metrics on ")
	url, _, _ := strings.Cut(rest, "\n")
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("Content-Type %q", ct)
	}
	return parseExposition(t, string(body))
}

// TestReconcileMetricsProcess runs reconcile -every with -metrics from the
// built binary: a run that sends, one whose sends fail and one that
// cannot reach the name server, each seen in the exposition after its
// output line.
func TestReconcileMetricsProcess(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t)
	b := env.RequireEmbedded(t) // faults
	topic := testenv.Name(t, "T")
	env.CreateTopic(t, topic, 1)
	db, dsn, relay := outboxDB(t)
	enqueue := func(key string) {
		t.Helper()
		if _, _, err := relay.Enqueue(context.Background(), db, outbox.Message{Topic: topic, Key: key, Body: []byte(key)}); err != nil {
			t.Fatal(err)
		}
	}
	cliEnv := []string{"PATH=/usr/bin:/bin", "MYSQL_DSN=" + dsn}
	// One run at start, then none for an hour: each process is scraped
	// after its first run.
	reconcileEvery := func(ns string) *proc {
		return startCLI(t, cliEnv, "reconcile", "-every", "1h", "-metrics", "127.0.0.1:0", "-namesrv", ns)
	}

	t.Run("sends", func(t *testing.T) {
		enqueue("ok-1")
		p := reconcileEvery(env.Namesrv)
		p.stdout.waitFor(t, "sent 1, failed 0", p.done)
		v := scrape(t, p)
		if v["reliablemq_reconcile_sent_total"] != 1 || v["reliablemq_reconcile_runs_total"] != 1 ||
			v["reliablemq_reconcile_run_errors_total"] != 0 || v["reliablemq_reconcile_last_success_timestamp_seconds"] == 0 {
			t.Errorf("after one run that sent one row: %v", v)
		}
		if code := p.interrupt(t); code != 0 || p.stderr.String() != "" {
			t.Fatalf("exit %d, stderr %q", code, p.stderr.String())
		}
	})

	t.Run("sends fail", func(t *testing.T) {
		enqueue("fails-1")
		b.Inject(rmqtest.SendMessage, rmqtest.Fault{Code: rmqtest.CodeServiceNotAvailable, Remark: "busy", Times: 100})
		t.Cleanup(b.ClearFaults)
		p := reconcileEvery(env.Namesrv)
		p.stderr.waitFor(t, "sends failed", p.done)
		v := scrape(t, p)
		if v[`reliablemq_reconcile_send_failures_total{reason="transient"}`] != 1 || v["reliablemq_reconcile_failed_total"] != 1 ||
			v["reliablemq_reconcile_last_success_timestamp_seconds"] != 0 || v["reliablemq_outbox_pending"] != 1 {
			t.Errorf("after one run whose send failed: %v", v)
		}
		if code := p.interrupt(t); code != 0 || strings.Count(p.stderr.String(), "\n") != 1 {
			t.Fatalf("exit %d, stderr %q; want 0 and one line for the one run", code, p.stderr.String())
		}
	})

	t.Run("name server unreachable", func(t *testing.T) {
		p := reconcileEvery(deadAddr(t))
		p.stderr.waitFor(t, "name server unreachable", p.done)
		v := scrape(t, p)
		if v["reliablemq_reconcile_run_errors_total"] != 1 || v["reliablemq_reconcile_runs_total"] != 1 ||
			v["reliablemq_reconcile_last_success_timestamp_seconds"] != 0 {
			t.Errorf("after one run that could not reach the name server: %v", v)
		}
		if code := p.interrupt(t); code != 0 || !strings.HasPrefix(p.stderr.String(), "reliablemq: reconcile: name server unreachable") {
			t.Fatalf("exit %d, stderr %q", code, p.stderr.String())
		}
	})
}

// TestIdleRunIsQuiet: a scheduled run that finds nothing to do prints
// nothing; -once prints its report anyway.
func TestIdleRunIsQuiet(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t)
	db := testenv.MySQL(t)
	p, err := newProducer(env.NameServers(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	pub := &observedPublisher{pub: p}
	relay, err := outbox.NewRelay(db, pub)
	if err != nil {
		t.Fatal(err)
	}
	job, err := reconcile.New(relay)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	rc := &reconciler{job: job, names: env.NameServers(), pub: pub, m: newMetrics(), stdout: &out}
	if err := rc.run(context.Background(), false); err != nil || out.String() != "" {
		t.Fatalf("idle scheduled run: %v, printed %q", err, out.String())
	}
	if err := rc.run(context.Background(), true); err != nil || !strings.Contains(out.String(), "sent 0, failed 0") {
		t.Fatalf("idle -once run: %v, printed %q", err, out.String())
	}
}
