// Command reliablemq is the reliablemq command-line tool.
//
//	reliablemq dev-broker [-namesrv ADDR] [-broker ADDR] [-delay-levels LIST]
//
// dev-broker runs rmqtest, the in-process RocketMQ name server and broker,
// as a standalone process so that programs using the official client can
// be tried locally without Docker or a JVM.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, errUsage) {
			fmt.Fprintln(os.Stderr, "reliablemq:", err)
		}
		os.Exit(2)
	}
}

var errUsage = errors.New("usage")

const usage = `usage: reliablemq <command> [flags]

commands:
  dev-broker   run an in-process RocketMQ name server and broker (rmqtest)

Run "reliablemq <command> -h" for a command's flags.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	switch args[0] {
	case "dev-broker":
		return devBroker(ctx, args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprintf(stderr, "reliablemq: unknown command %q\n\n%s", args[0], usage)
	return errUsage
}
