package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/seed157d4c4d/reliablemq/rmqtest"
)

const devBrokerUsage = `usage: reliablemq dev-broker [flags]

Runs rmqtest, the in-process RocketMQ name server and broker, until
interrupted, so programs using the official client can be tried locally
without Docker or a JVM.

`

func devBroker(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("dev-broker", flag.ContinueOnError)
	setUsage(fs, devBrokerUsage)
	namesrv := fs.String("namesrv", "127.0.0.1:9876", "name server listen address")
	broker := fs.String("broker", "127.0.0.1:10911", "broker listen address (advertised in routes)")
	levels := fs.String("delay-levels", "", "comma-separated delay levels, e.g. 1s,5s,10s (default: the broker's 18 levels, 1s..2h)")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("dev-broker: unexpected argument %q", fs.Arg(0))
	}
	opts := []rmqtest.Option{rmqtest.WithNamesrvAddr(*namesrv), rmqtest.WithBrokerAddr(*broker)}
	if *levels != "" {
		var ds []time.Duration
		for _, s := range strings.Split(*levels, ",") {
			d, err := time.ParseDuration(strings.TrimSpace(s))
			if err != nil {
				return usagef("dev-broker: -delay-levels: %v", err)
			}
			ds = append(ds, d)
		}
		opts = append(opts, rmqtest.WithDelayLevels(ds...))
	}
	b, err := rmqtest.Start(opts...)
	if err != nil {
		return fmt.Errorf("dev-broker: %w", err)
	}
	fmt.Fprintf(stdout, "rmqtest dev broker\n  namesrv %s\n  broker  %s\nCtrl-C to stop.\n", b.NamesrvAddr(), b.BrokerAddr())
	<-ctx.Done()
	if err := b.Close(); err != nil {
		return fmt.Errorf("dev-broker: close: %w", err)
	}
	fmt.Fprintln(stdout, "stopped")
	return nil
}
