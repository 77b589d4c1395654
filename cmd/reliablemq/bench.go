package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/seed157d4c4d/reliablemq/internal/bench"
)

const benchUsage = `usage: reliablemq bench [-ops N] [-drain-rows N] [-repeats N] [-json FILE] [-svg FILE]

Measures each layer's cost as a ratio against the raw client and the
databases' own limits, side by side in one run, and prints a table with
the targets. RocketMQ is rmqtest unless RMQ_NAMESRV (and RMQ_BROKER) are
set (then one more pair compares that broker with rmqtest); MySQL is MYSQL_DSN (default root@tcp(127.0.0.1:3306)/, database
reliablemq_bench is recreated); Redis is REDIS_ADDR or miniredis.

`

func benchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(stderr, benchUsage); fs.PrintDefaults() }
	ops := fs.Int("ops", 4000, "operations per side per repeat")
	drain := fs.Int("drain-rows", 20000, "outbox rows the reconcile drain sends, and messages per consume pair")
	repeats := fs.Int("repeats", 3, "runs per pair; the median ratio is reported")
	jsonPath := fs.String("json", "", "also write the results as JSON to this file")
	svgPath := fs.String("svg", "", "also draw the ratios as an SVG chart to this file")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if fs.NArg() > 0 || *ops <= 0 || *drain <= 0 || *repeats <= 0 {
		fs.Usage()
		return errUsage
	}
	results, err := bench.Run(ctx, bench.Config{Ops: *ops, DrainRows: *drain, Repeats: *repeats, Progress: stdout})
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	fmt.Fprintln(stdout)
	if err := bench.PrintTable(stdout, results); err != nil {
		return err
	}
	for _, out := range []struct {
		path  string
		write func(io.Writer, []bench.Result) error
	}{{*jsonPath, bench.WriteJSON}, {*svgPath, bench.WriteSVG}} {
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
