package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"

	"github.com/seed157d4c4d/reliablemq/internal/bench"
)

const benchUsage = `usage: reliablemq bench [-quick] [-sweep] [-only TEXT] [-ops N] [-drain-rows N] [-repeats N]
                       [-json FILE] [-svg FILE] [-cpuprofile FILE]

Measures each layer's cost as a ratio against the raw client and the
databases' own limits, side by side in one run, and prints a table with
each side's p50 and p99 per call (per message, at a steady 1,000 a
second, for the consume pairs) and the targets. RocketMQ is rmqtest
unless RMQ_NAMESRV (and RMQ_BROKER) are set (then one more pair compares
that broker with rmqtest); MySQL is MYSQL_DSN (default
root@tcp(127.0.0.1:3306)/, database reliablemq_bench is recreated); Redis
is REDIS_ADDR (keys under reliablemq_bench: are removed before and after)
or miniredis.

-quick runs every pair once at small sizes (a smoke run for CI: it fails
only when the bench cannot run, never on a ratio). -sweep runs the pairs
whose concurrency the bench sets at 1, 4, 16 and 64 workers; with -svg it
draws throughput against workers per pair. On Linux a second table gives
each side's CPU time per operation, by process. -only runs the pairs
whose name contains TEXT; -cpuprofile writes this process's CPU profile
(go tool pprof) over the run.

`

func benchCmd(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	setUsage(fs, benchUsage)
	ops := fs.Int("ops", 4000, "operations per side per repeat")
	drain := fs.Int("drain-rows", 20000, "outbox rows the reconcile drain sends, and messages per consume pair")
	repeats := fs.Int("repeats", 3, "runs per pair; the median ratio is reported")
	quick := fs.Bool("quick", false, "every pair once at small sizes (-ops 200 -drain-rows 500 -repeats 1 unless given)")
	sweep := fs.Bool("sweep", false, "run the pairs at 1, 4, 16 and 64 workers (-svg then draws throughput against workers)")
	jsonPath := fs.String("json", "", "also write the results as JSON to this file")
	svgPath := fs.String("svg", "", "also draw the results as an SVG chart to this file")
	only := fs.String("only", "", "run only the pairs whose name contains this text (case ignored)")
	profile := fs.String("cpuprofile", "", "write this process's CPU profile over the run to this file")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if *quick { // explicit sizes win over -quick's
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		q := bench.Quick()
		for _, size := range []struct {
			name  string
			v     *int
			quick int
		}{{"ops", ops, q.Ops}, {"drain-rows", drain, q.DrainRows}, {"repeats", repeats, q.Repeats}} {
			if !set[size.name] {
				*size.v = size.quick
			}
		}
	}
	if fs.NArg() > 0 {
		return usagef("bench: unexpected argument %q", fs.Arg(0))
	}
	for _, size := range []struct {
		name string
		v    int
	}{{"ops", *ops}, {"drain-rows", *drain}, {"repeats", *repeats}} {
		if size.v <= 0 {
			return usagef("bench: -%s %d: must be positive", size.name, size.v)
		}
	}
	cfg := bench.Config{Ops: *ops, DrainRows: *drain, Repeats: *repeats, Progress: stdout, Only: *only}
	if *profile != "" {
		f, err := os.Create(*profile)
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	run, chart := bench.Run, bench.WriteSVG
	if *sweep {
		run = func(ctx context.Context, cfg bench.Config) ([]bench.Result, error) { return bench.Sweep(ctx, cfg, nil) }
		chart = bench.WriteSweepSVG
	}
	results, err := run(ctx, cfg)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	fmt.Fprintln(stdout)
	if err := bench.PrintTable(stdout, results); err != nil {
		return err
	}
	fmt.Fprintln(stdout)
	if err := bench.PrintCPU(stdout, results); err != nil {
		return err
	}
	return writeBenchFiles(results, *jsonPath, *svgPath, chart)
}

// writeBenchFiles writes the results as JSON to jsonPath and as a chart
// to svgPath, each when set.
func writeBenchFiles(results []bench.Result, jsonPath, svgPath string, chart func(io.Writer, []bench.Result) error) error {
	for _, out := range []struct {
		path  string
		write func(io.Writer, []bench.Result) error
	}{{jsonPath, bench.WriteJSON}, {svgPath, chart}} {
		if out.path == "" {
			continue
		}
		f, err := os.Create(out.path)
		if err != nil {
			return err
		}
		if err := out.write(f, results); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	return nil
}
