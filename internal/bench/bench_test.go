package bench

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	rmqconsumer "github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/redis/go-redis/v9"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

// TestRunSmall runs every pair once at a tiny size: the command works and
// every ratio is measured (no target is asserted; speed belongs to the
// command's own output).
func TestRunSmall(t *testing.T) {
	testenv.SkipUnderRace(t)
	testenv.MySQL(t)
	results, err := Run(context.Background(), Config{Ops: 200, DrainRows: 500, Repeats: 1})
	if err != nil {
		t.Fatal(err)
	}
	want := 11
	if os.Getenv("RMQ_NAMESRV") != "" {
		want++ // the real broker vs rmqtest pair
	}
	if len(results) != want {
		t.Fatalf("%d results, want %d", len(results), want)
	}
	for _, r := range results {
		if r.BaseRate <= 0 || r.Rate <= 0 || r.Ratio <= 0 {
			t.Errorf("%s: not measured: %+v", r.Name, r)
		}
		// Every pair reports latencies: per call, or per message at a
		// steady load for the consume pairs.
		for _, l := range []struct{ p50, p99 time.Duration }{{r.BaseP50, r.BaseP99}, {r.P50, r.P99}} {
			if l.p50 <= 0 || l.p99 < l.p50 || l.p99 > time.Minute {
				t.Errorf("%s: latencies p50 %v p99 %v", r.Name, l.p50, l.p99)
			}
		}
	}
	var table, js, svg bytes.Buffer
	if err := WriteSVG(&svg, results); err != nil || !strings.Contains(svg.String(), "</svg>") {
		t.Fatalf("svg: %v", err)
	}
	if err := PrintTable(&table, results); err != nil {
		t.Fatal(err)
	}
	if err := WriteJSON(&js, results); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table.String(), "producer send, 16 goroutine(s)") || !strings.Contains(js.String(), `"median_ratio"`) {
		t.Fatalf("table:\n%s\njson:\n%s", table.String(), js.String())
	}
	for _, want := range []string{"BASE p50", "BASE p99", "SUBJ p50", "SUBJ p99"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table has no %s column:\n%s", want, table.String())
		}
	}
	for _, want := range []string{`"baseline_p50_ns"`, `"baseline_p99_ns"`, `"subject_p50_ns"`, `"subject_p99_ns"`} {
		if !strings.Contains(js.String(), want) {
			t.Errorf("json has no %s:\n%s", want, js.String())
		}
	}
	if !strings.Contains(svg.String(), "p50 ") || !strings.Contains(svg.String(), "p99 ") {
		t.Errorf("svg shows no latencies:\n%s", svg.String())
	}
	wellFormedSVG(t, svg.String())
	if runtime.GOOS == "linux" {
		for _, r := range results {
			if r.CPU["this process"] <= 0 || r.BaseCPU["this process"] <= 0 {
				t.Errorf("%s: this process's CPU time not measured: %v vs %v", r.Name, r.CPU, r.BaseCPU)
			}
		}
		if !strings.Contains(js.String(), `"subject_cpu_ns_per_op"`) {
			t.Errorf("json has no CPU times:\n%s", js.String())
		}
	}
}

// TestPrintCPU: the totals, the ratio they imply and the limit left by the
// servers' extra work or, where measured, by the store calls alone, from
// made-up figures.
func TestPrintCPU(t *testing.T) {
	us := time.Microsecond
	results := []Result{
		{Name: "pair", BaseCPU: map[string]time.Duration{"this process": 10 * us, "mysql": 5 * us},
			CPU: map[string]time.Duration{"this process": 20 * us, "mysql": 35 * us}},
		{Name: "floored", BaseCPU: map[string]time.Duration{"this process": 10 * us, "mysql": 5 * us},
			CPU:      map[string]time.Duration{"this process": 20 * us, "mysql": 35 * us},
			FloorCPU: map[string]time.Duration{"this process": 6 * us, "mysql": 29 * us}, Floor: "store alone"},
		{Name: "whole", BaseCPU: map[string]time.Duration{"this process": 10 * us, "mysql": 5 * us},
			CPU:      map[string]time.Duration{"this process": 20 * us, "mysql": 35 * us},
			FloorCPU: map[string]time.Duration{"this process": 11 * us, "mysql": 9 * us}, Floor: "raw, by hand", FloorWhole: true},
		{Name: "unmeasured"},
	}
	var out bytes.Buffer
	if err := PrintCPU(&out, results); err != nil {
		t.Fatal(err)
	}
	// Totals 15 and 55: ratio 15/55; limit 15/(15+30) from the servers'
	// extra work, 15/(15+35) from the store alone, 15/20 from the floor
	// done with the baseline's work (20, of which 5 beyond the baseline).
	for _, want := range []string{"THIS PROCESS", "MYSQL", "LIMIT", "15.0", "55.0", "0.27", "0.33", "store alone", "35.0", "0.30",
		"raw, by hand", "20.0", "0.75"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("no %q in:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "unmeasured") || strings.Contains(out.String(), "REDIS") {
		t.Errorf("a pair or a process without figures is printed:\n%s", out.String())
	}
	out.Reset()
	if err := PrintCPU(&out, results[3:]); err != nil || out.Len() != 0 {
		t.Fatalf("nothing measured, yet printed %q (%v)", out.String(), err)
	}
}

// TestSweepSmall sweeps two worker counts at a tiny size: each pair is
// measured at each count under one name, and the chart is well-formed
// SVG with one line per side per pair (no rate is asserted).
func TestSweepSmall(t *testing.T) {
	testenv.MySQL(t)
	results, err := Sweep(context.Background(), Config{Ops: 40, DrainRows: 80, Repeats: 1}, []int{1, 4})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string][]int{}
	for _, r := range results {
		seen[r.Name] = append(seen[r.Name], r.Workers)
	}
	for name, counts := range seen {
		if len(counts) != 2 || counts[0] != 1 || counts[1] != 4 {
			t.Errorf("%s measured at %v workers, want [1 4]", name, counts)
		}
	}
	if _, ok := seen["producer send"]; !ok || len(seen) < 7 {
		t.Fatalf("pairs swept: %v", seen)
	}
	var svg bytes.Buffer
	if err := WriteSweepSVG(&svg, results); err != nil {
		t.Fatal(err)
	}
	wellFormedSVG(t, svg.String())
	if got, want := strings.Count(svg.String(), "<polyline"), 2*len(seen); got != want {
		t.Errorf("%d polylines, want %d", got, want)
	}
}

// TestWriteSweepSVG draws a made-up sweep (no backend): well-formed, one
// panel per pair, names escaped.
func TestWriteSweepSVG(t *testing.T) {
	t.Parallel()
	var results []Result
	for i, w := range []int{1, 4, 16, 64} {
		for _, name := range []string{"a <pair> & more", "b", "c", "d"} {
			results = append(results, Result{Name: name, Baseline: "base", Subject: "subj", Workers: w,
				BaseRate: float64(1000 * (i + 1)), Rate: float64(900 * (i + 1)), Ratio: 0.9})
		}
	}
	var svg bytes.Buffer
	if err := WriteSweepSVG(&svg, results); err != nil {
		t.Fatal(err)
	}
	wellFormedSVG(t, svg.String())
	for _, want := range []string{"a &lt;pair&gt; &amp; more", ">64<", "subject", "baseline"} {
		if !strings.Contains(svg.String(), want) {
			t.Errorf("svg has no %q", want)
		}
	}
	if got := strings.Count(svg.String(), "<polyline"); got != 8 {
		t.Errorf("%d polylines, want 8", got)
	}
}

func TestPercentiles(t *testing.T) {
	t.Parallel()
	var d []time.Duration
	for i := 100; i >= 1; i-- {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	p50, p99 := percentiles(d)
	if p50 != 51*time.Millisecond || p99 != 100*time.Millisecond {
		t.Fatalf("p50 %v p99 %v, want 51ms 100ms", p50, p99)
	}
	if p50, p99 := percentiles(nil); p50 != 0 || p99 != 0 {
		t.Fatalf("empty: p50 %v p99 %v", p50, p99)
	}
}

// wellFormedSVG fails t unless s parses as XML with an <svg> root.
func wellFormedSVG(t *testing.T, s string) {
	t.Helper()
	dec := xml.NewDecoder(strings.NewReader(s))
	root := ""
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("svg is not well-formed: %v\n%s", err, s)
		}
		if el, ok := tok.(xml.StartElement); ok && root == "" {
			root = el.Name.Local
		}
	}
	if root != "svg" {
		t.Fatalf("svg root is %q", root)
	}
}

// TestGuardAloneClaimsEveryKeyOrFails: the guarded pairs' store-alone
// measurement claims and completes every key (one done marker each, no
// counter left) and reports a store that is down as an error, not as a
// rate.
func TestGuardAloneClaimsEveryKeyOrFails(t *testing.T) {
	m, err := miniredis.Run()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr(), MaxRetries: -1})
	defer rdb.Close()
	e := &env{cfg: Config{DrainRows: 1500}, rdb: rdb, meter: newMeter()}
	if _, err := e.guardAlone(context.Background(), "redis"); err != nil {
		t.Fatal(err)
	}
	if n := len(m.Keys()); n != 1500 {
		t.Fatalf("%d done markers left, want 1500 (one per key)", n)
	}
	m.Close()
	if _, err := e.guardAlone(context.Background(), "redis"); err == nil {
		t.Fatal("no error with Redis down")
	}
}

// TestConsumeLatencyRunsUntilHandled: a consume side's latency runs from
// just before a message's send to its handling, not to its delivery; the
// messages that wait for the side to hold its queues are not counted.
func TestConsumeLatencyRunsUntilHandled(t *testing.T) {
	testenv.SkipUnderRace(t) // it starts the official push consumer
	e := &env{cfg: Config{Ops: 400}, body: []byte("x"), meter: newMeter()}
	defer e.close()
	if err := e.openBroker(); err != nil {
		t.Fatal(err)
	}
	if err := e.openProducers(); err != nil {
		t.Fatal(err)
	}
	const handling = 30 * time.Millisecond
	var calls atomic.Int64
	p50, p99, err := e.consumeLatency(context.Background(), func(topic, seq string, handled func(keys string)) (func(), error) {
		return e.startRawWith(topic, seq, func(_ context.Context, msgs ...*primitive.MessageExt) (rmqconsumer.ConsumeResult, error) {
			for _, m := range msgs {
				keys := m.GetKeys()
				if keys != "warm" {
					calls.Add(1)
				}
				time.AfterFunc(handling, func() { handled(keys) })
			}
			return rmqconsumer.ConsumeSuccess, nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if p50 < handling || p99 < p50 {
		t.Fatalf("p50 %v, p99 %v: want both at least the %v a message takes to be handled", p50, p99, handling)
	}
	if n := calls.Load(); n != 50 {
		t.Fatalf("%d messages measured, want max(50, 400/8)", n)
	}
}

// TestRepeatsAlternateTheSideOrder: the repeats of a pair alternate which
// side runs first, a floor between them stays between them, and each
// side's sample lands on its own side whatever the order.
func TestRepeatsAlternateTheSideOrder(t *testing.T) {
	e := &env{cfg: Config{Repeats: 3, Progress: io.Discard}, meter: &meter{}}
	var orders [][]string
	p := pair{name: "fake", run: func(context.Context) (sample, sample, error) {
		var order []string
		b, s, err := e.sides(func() (sample, error) {
			order = append(order, "base")
			return sample{rate: 1}, nil
		}, func() (sample, error) {
			order = append(order, "subject")
			return sample{rate: 2}, nil
		}, func() error {
			order = append(order, "floor")
			return nil
		})
		orders = append(orders, order)
		return b, s, err
	}}
	r, err := e.measure(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{{"base", "floor", "subject"}, {"subject", "floor", "base"}, {"base", "floor", "subject"}}
	if !slices.EqualFunc(orders, want, slices.Equal) {
		t.Fatalf("side orders %v, want %v", orders, want)
	}
	if r.BaseRate != 1 || r.Rate != 2 {
		t.Fatalf("baseline %v, subject %v: want 1 and 2 whatever the order", r.BaseRate, r.Rate)
	}
	boom := errors.New("boom")
	e.subjectFirst = true
	if _, _, err := e.sides(func() (sample, error) { return sample{}, nil },
		func() (sample, error) { return sample{}, boom }, nil); !errors.Is(err, boom) {
		t.Fatalf("err %v, want the subject's", err)
	}
}
