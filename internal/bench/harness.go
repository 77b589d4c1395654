package bench

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// sample is one side of a pair, measured once: its rate and, when the side
// is made of calls the harness can time, the latency of each call.
type sample struct {
	rate     float64
	p50, p99 time.Duration   // zero when not measured
	cpu      []time.Duration // per operation, one per e.meter.names
}

// parallel runs op n times over w goroutines and returns the rate and the
// per-call latency percentiles. Each goroutine appends to its own slice,
// allocated before the clock starts, so recording takes no lock and two
// monotonic clock reads per call; the slices are merged after the run.
func parallel(n, w int, op func() error) (sample, error) {
	var left atomic.Int64
	left.Store(int64(n))
	var firstErr atomic.Value
	lat := make([][]time.Duration, w)
	for i := range lat {
		lat[i] = make([]time.Duration, 0, n/w+1)
	}
	var wg sync.WaitGroup
	start := time.Now()
	for i := range w {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				t := time.Now()
				if err := op(); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				lat[i] = append(lat[i], time.Since(t))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err, _ := firstErr.Load().(error); err != nil {
		return sample{}, err
	}
	s := sample{rate: float64(n) / elapsed.Seconds()}
	s.p50, s.p99 = percentiles(slices.Concat(lat...))
	return s, nil
}

// parallel is [parallel] with the CPU time per operation metered.
func (e *env) parallel(n, w int, op func() error) (sample, error) {
	start := e.meter.now()
	s, err := parallel(n, w, op)
	s.cpu = e.meter.perOp(start, n)
	return s, err
}

// both measures base and subject, each cfg.Ops times on w goroutines, in
// the repeat's order (see sides).
func (e *env) both(w int, base, subject func() error) (sample, sample, error) {
	return e.sides(func() (sample, error) { return e.parallel(e.cfg.Ops, w, base) },
		func() (sample, error) { return e.parallel(e.cfg.Ops, w, subject) }, nil)
}

// sides measures the baseline and the subject one after the other, and
// between them, when set, what must run between (a floor). Repeats
// alternate which side goes first: the side that runs second inherits
// the work the first left to the servers (a database's purge and page
// flushes, a broker's commit-log flush), so a fixed order would bias every
// ratio the same way.
func (e *env) sides(base, subject func() (sample, error), between func() error) (b, s sample, err error) {
	first, second := &b, &s
	run1, run2 := base, subject
	if e.subjectFirst {
		first, second, run1, run2 = &s, &b, subject, base
	}
	if *first, err = run1(); err != nil {
		return sample{}, sample{}, err
	}
	if between != nil {
		if err := between(); err != nil {
			return sample{}, sample{}, err
		}
	}
	if *second, err = run2(); err != nil {
		return sample{}, sample{}, err
	}
	return b, s, nil
}

// percentiles returns the 50th and 99th percentiles of d (nearest rank),
// sorting d in place; zero for an empty d.
func percentiles(d []time.Duration) (p50, p99 time.Duration) {
	if len(d) == 0 {
		return 0, 0
	}
	slices.Sort(d)
	rank := func(p float64) time.Duration { return d[min(len(d)-1, int(p*float64(len(d))))] }
	return rank(0.50), rank(0.99)
}

// recorder collects latencies of calls the harness does not drive itself
// (the relay's sends during a drain). It is safe for concurrent use.
type recorder struct {
	mu  sync.Mutex
	lat []time.Duration
}

func (r *recorder) add(d time.Duration) {
	r.mu.Lock()
	r.lat = append(r.lat, d)
	r.mu.Unlock()
}

func (r *recorder) percentiles() (p50, p99 time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return percentiles(r.lat)
}

// pair is one measurement: a baseline and a subject, measured side by side.
type pair struct {
	name, baseline, subject string
	target                  float64
	// workers is the goroutines each side runs on; zero when the pair's
	// concurrency is not the bench's to set (a push consumer's own pool).
	workers int
	// run measures both sides once.
	run func(ctx context.Context) (base, subject sample, err error)
	// floor, when set, measures once per repeat the work the subject
	// cannot avoid beyond the baseline's (see Result.FloorCPU); only its
	// CPU times are kept. floorName labels it; floorWhole says it did that
	// work together with the baseline's.
	floor      func(ctx context.Context) (sample, error)
	floorName  string
	floorWhole bool
}

// measure runs p cfg.Repeats times and keeps the median of each figure.
func (e *env) measure(ctx context.Context, p pair) (Result, error) {
	var ratios []float64
	var bases, subjects, floors []sample
	for i := range e.cfg.Repeats {
		e.subjectFirst = i%2 == 1
		b, s, err := p.run(ctx)
		if err != nil {
			return Result{}, err
		}
		if p.floor != nil && len(e.meter.names) > 0 {
			f, err := p.floor(ctx)
			if err != nil {
				return Result{}, err
			}
			floors = append(floors, f)
		}
		order := "baseline first"
		if e.subjectFirst {
			order = "subject first"
		}
		fmt.Fprintf(e.cfg.Progress, "  %-34s run %d: %10.0f vs %10.0f /s  (%.2fx)  p50 %s vs %s  p99 %s vs %s  (%s)\n",
			p.name, i+1, s.rate, b.rate, s.rate/b.rate,
			formatLatency(s.p50), formatLatency(b.p50), formatLatency(s.p99), formatLatency(b.p99), order)
		ratios = append(ratios, s.rate/b.rate)
		bases, subjects = append(bases, b), append(subjects, s)
	}
	r := Result{Name: p.name, Baseline: p.baseline, Subject: p.subject, Workers: p.workers,
		BaseRate: medianOf(bases, sample.getRate), Rate: medianOf(subjects, sample.getRate),
		BaseP50: medianOf(bases, sample.getP50), BaseP99: medianOf(bases, sample.getP99),
		P50: medianOf(subjects, sample.getP50), P99: medianOf(subjects, sample.getP99),
		Ratio: median(ratios), Target: p.target}
	if len(floors) > 0 {
		r.Floor, r.FloorWhole = p.floorName, p.floorWhole
	}
	if len(e.meter.names) > 0 {
		r.BaseCPU, r.CPU = make(map[string]time.Duration), make(map[string]time.Duration)
		for i, name := range e.meter.names {
			cpu := func(s sample) time.Duration { return s.cpu[i] }
			r.BaseCPU[name], r.CPU[name] = medianOf(bases, cpu), medianOf(subjects, cpu)
			if len(floors) > 0 {
				if r.FloorCPU == nil {
					r.FloorCPU = make(map[string]time.Duration)
				}
				r.FloorCPU[name] = medianOf(floors, cpu)
			}
		}
	}
	if p.target > 0 {
		pass := r.Ratio >= p.target
		r.Pass = &pass
	}
	return r, nil
}

func (s sample) getRate() float64      { return s.rate }
func (s sample) getP50() time.Duration { return s.p50 }
func (s sample) getP99() time.Duration { return s.p99 }

// medianOf returns the median of one figure over the repeats.
func medianOf[T float64 | time.Duration](samples []sample, get func(sample) T) T {
	v := make([]T, len(samples))
	for i, s := range samples {
		v[i] = get(s)
	}
	return median(v)
}

func median[T float64 | time.Duration](v []T) T {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
