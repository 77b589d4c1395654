package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/seed157d4c4d/reliablemq/rmqtest"
)

func devBroker(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dev-broker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	namesrv := fs.String("namesrv", "127.0.0.1:9876", "name server listen address")
	broker := fs.String("broker", "127.0.0.1:10911", "broker listen address (advertised in routes)")
	levels := fs.String("delay-levels", "", "comma-separated delay levels, e.g. 1s,5s,10s (default: the broker's 18 levels, 1s..2h)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "reliablemq: dev-broker: unexpected argument %q\n", fs.Arg(0))
		return errUsage
	}
	opts := []rmqtest.Option{rmqtest.WithNamesrvAddr(*namesrv), rmqtest.WithBrokerAddr(*broker)}
	if *levels != "" {
		var ds []time.Duration
		for _, s := range strings.Split(*levels, ",") {
			d, err := time.ParseDuration(strings.TrimSpace(s))
			if err != nil {
				return fmt.Errorf("dev-broker: -delay-levels: %w", err)
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
