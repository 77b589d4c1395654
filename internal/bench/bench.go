// Package bench measures what each reliability layer costs, as ratios
// against the raw client and the databases' own limits, each pair measured
// side by side in one run and repeated (alternating which side goes
// first), the median ratio reported, with each side's latency (p50, p99)
// per call, or for a consume pair per message at a steady load. It backs
// `reliablemq bench`.
package bench

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Config sizes a run.
type Config struct {
	// Ops is the operations per side per repeat (default 4000).
	Ops int
	// DrainRows is the outbox rows the reconcile drain sends, and the
	// messages each consume pair consumes (default 20000: a push consumer
	// delivers in bursts, so short runs measure the bursts).
	DrainRows int
	// Repeats is how many times each pair runs; the median ratio is kept
	// (default 3).
	Repeats int
	// Progress, when set, receives a line per measurement.
	Progress io.Writer
	// Only, when set, runs only the pairs whose name contains it (case
	// ignored).
	Only string
}

// Quick returns the sizes of a smoke run: every pair once, small, so a CI
// stage can run the whole bench in well under a minute. Its ratios are
// noisy; it proves the bench works, not how fast anything is.
func Quick() Config { return Config{Ops: 200, DrainRows: 500, Repeats: 1} }

func (c Config) withDefaults() Config {
	if c.Ops <= 0 {
		c.Ops = 4000
	}
	if c.DrainRows <= 0 {
		c.DrainRows = 20000
	}
	if c.Repeats <= 0 {
		c.Repeats = 3
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	return c
}

// Result is one pair. Rates and latencies are medians over the repeats; a
// latency is the time of one call (one send, one Guard.Do, one
// transaction) and is zero where the side has no call to time (the consume
// pairs, whose push consumers drive delivery themselves).
type Result struct {
	Name     string        `json:"name"`
	Baseline string        `json:"baseline"`
	Subject  string        `json:"subject"`
	Workers  int           `json:"workers,omitempty"`
	BaseRate float64       `json:"baseline_per_s"`
	Rate     float64       `json:"subject_per_s"`
	Ratio    float64       `json:"median_ratio"`
	BaseP50  time.Duration `json:"baseline_p50_ns,omitempty"`
	BaseP99  time.Duration `json:"baseline_p99_ns,omitempty"`
	P50      time.Duration `json:"subject_p50_ns,omitempty"`
	P99      time.Duration `json:"subject_p99_ns,omitempty"`
	Target   float64       `json:"target,omitempty"`
	Pass     *bool         `json:"pass,omitempty"`
	// BaseCPU and CPU are each side's median CPU time per operation, by
	// process: "this process" and, where they run on this machine,
	// "broker", "mysql" and "redis" (nil off Linux).
	BaseCPU map[string]time.Duration `json:"baseline_cpu_ns_per_op,omitempty"`
	CPU     map[string]time.Duration `json:"subject_cpu_ns_per_op,omitempty"`
	// FloorCPU, for the pairs that measure it, is the CPU time per
	// operation, by process, of Floor: the work the subject cannot avoid
	// beyond the baseline's, alone (a guard's store calls) or, when
	// FloorWhole, done together with the baseline's (a raw consumer
	// reading each message; the business transaction with the guard's or
	// the outbox's row written by hand; a drain by hand), of which the
	// excess over the baseline counts.
	FloorCPU   map[string]time.Duration `json:"floor_cpu_ns_per_op,omitempty"`
	Floor      string                   `json:"floor,omitempty"`
	FloorWhole bool                     `json:"floor_whole,omitempty"`
}

// workers is the goroutines each concurrent side of Run uses.
const workers = 16

// Run runs every pair and returns the results.
func Run(ctx context.Context, cfg Config) ([]Result, error) {
	cfg = cfg.withDefaults()
	e, err := open(ctx, cfg, workers)
	if err != nil {
		return nil, err
	}
	defer e.close()
	return e.runAll(ctx, e.pairs(workers))
}

// Sweep runs the pairs whose concurrency the bench sets (all but the
// consume pairs) at each worker count in turn, by default 1, 4, 16 and
// 64, and returns every result, each with its Workers; a pair keeps its
// name across worker counts.
func Sweep(ctx context.Context, cfg Config, workerCounts []int) ([]Result, error) {
	cfg = cfg.withDefaults()
	if len(workerCounts) == 0 {
		workerCounts = []int{1, 4, 16, 64}
	}
	e, err := open(ctx, cfg, slices.Max(workerCounts))
	if err != nil {
		return nil, err
	}
	defer e.close()
	var results []Result
	for _, w := range workerCounts {
		fmt.Fprintf(cfg.Progress, "%d worker(s):\n", w)
		rs, err := e.runAll(ctx, e.sweepPairs(w))
		results = append(results, rs...)
		if err != nil {
			return results, err
		}
	}
	return results, nil
}

// runAll measures ps (those cfg.Only selects) in order, stopping at the
// first error.
func (e *env) runAll(ctx context.Context, ps []pair) ([]Result, error) {
	var results []Result
	for _, p := range ps {
		if !strings.Contains(strings.ToLower(p.name), strings.ToLower(e.cfg.Only)) {
			continue
		}
		r, err := e.measure(ctx, p)
		if err != nil {
			return results, fmt.Errorf("%s: %w", p.name, err)
		}
		results = append(results, r)
	}
	if len(results) == 0 {
		return nil, fmt.Errorf("no pair's name contains %q", e.cfg.Only)
	}
	return results, nil
}
