// Command reliablemq is the reliablemq command-line tool.
//
//	reliablemq migrate [-dsn DSN] up|down|status
//	reliablemq reconcile [-dsn DSN] [-namesrv ADDRS] -once | -every D | -cron EXPR
//	reliablemq dead [-dsn DSN] list | show ID | replay ID | discard ID -reason R
//	reliablemq dev-broker [-namesrv ADDR] [-broker ADDR] [-delay-levels LIST]
//	reliablemq bench [-quick] [-sweep] [-ops N] [-drain-rows N] [-repeats N] [-json FILE] [-svg FILE]
//	reliablemq lag [-group G] [-namesrv ADDRS] [-system] [-json]
//	reliablemq trace [-dsn DSN] [-namesrv ADDRS] [-group G,...] [-topic T,...] KEY
//	reliablemq record -out FILE [-namesrv ADDR] [-listen ADDR] [-scenario NAME]
//
// migrate applies the SQL schema (package migrations). reconcile runs the
// outbox reconcile job. dead works the manual-handling table. lag shows
// consumer groups' progress per queue. trace shows where a business key's
// message is. dev-broker
// runs rmqtest, the in-process RocketMQ name server and broker, as a
// standalone process so programs using the official client can be tried
// locally without Docker or a JVM. -dsn defaults to $MYSQL_DSN (never
// printed: it may hold a password) and -namesrv to $RMQ_NAMESRV. Flags may
// come before or after a command's action.
//
// Exit status: 0 ok; 1 the work failed; 2 usage error (an unknown command or
// flag, a missing or extra argument, a bad flag value or DSN: nothing was
// attempted). Every failure prints exactly one line on stderr,
// "reliablemq: <command>: ...". reconcile -once exits 1 also when a send
// failed or a row went dead in that run. -h prints a command's help on stdout and
// exits 0. Passwords (of -dsn, MYSQL_DSN or any DSN-like argument) and
// RMQ_SECRET_KEY are never printed: the commands do not print them, and
// all output is masked as well.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/go-sql-driver/mysql"
)

func main() {
	// The MySQL driver logs some connection errors itself; they reach the
	// user through the returned errors.
	_ = mysql.SetLogger(log.New(io.Discard, "", 0)) // a non-nil logger is never refused
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hide := secrets(os.Args[1:], os.Getenv)
	stdout, stderr := &maskWriter{os.Stdout, hide}, &maskWriter{os.Stderr, hide}
	err := run(ctx, os.Args[1:], stdout, stderr)
	if err == nil {
		return
	}
	fmt.Fprintln(stderr, "reliablemq:", err)
	if errors.Is(err, errUsage) {
		os.Exit(2)
	}
	os.Exit(1)
}

// commands lists the commands for usage errors.
const commands = "migrate, reconcile, dead, lag, trace, bench, dev-broker, record"

const usage = `usage: reliablemq <command> [flags]

commands:
  migrate      apply or roll back the SQL schema, or show its status
  reconcile    send what the outbox still holds, once or on a schedule
  dead         list, show, replay or discard parked messages
  lag          show consumer groups' committed offsets and lag per queue
  trace        show where a business key's message is: outbox, broker, consume log, dead letters
  bench        measure each layer's overhead as ratios against the raw client
  dev-broker   run an in-process RocketMQ name server and broker (rmqtest)
  record       proxy a real name server and brokers, writing every frame to a transcript

Run "reliablemq <command> -h" for a command's flags. Flags may come before
or after a command's action.

Exit status: 0 ok; 1 the work failed; 2 usage error. A failure prints one
line on stderr, "reliablemq: <command>: ...". Passwords in -dsn or
MYSQL_DSN and RMQ_SECRET_KEY are never printed.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("no command: give one of %s; see \"reliablemq -h\"", commands)
	}
	var err error
	switch args[0] {
	case "dev-broker":
		err = devBroker(ctx, args[1:], stdout)
	case "migrate":
		err = migrate(ctx, args[1:], stdout, stderr)
	case "reconcile":
		err = reconcileCmd(ctx, args[1:], stdout, stderr)
	case "dead":
		err = deadCmd(ctx, args[1:], stdout)
	case "bench":
		err = benchCmd(ctx, args[1:], stdout)
	case "record":
		err = recordCmd(ctx, args[1:], stdout, stderr)
	case "lag":
		err = lagCmd(ctx, args[1:], stdout)
	case "trace":
		err = traceCmd(ctx, args[1:], stdout)
	case "-h", "-help", "--help", "help":
		if args[0] == "help" && len(args) > 1 { // "help dead" is "dead -h"
			if len(args) > 2 {
				return usagef("help: unexpected argument %q", args[2])
			}
			if !slices.Contains(strings.Split(commands, ", "), args[1]) {
				return usagef("help: %s: unknown command; give one of %s", args[1], commands)
			}
			return run(ctx, []string{args[1], "-h"}, stdout, stderr)
		}
		fmt.Fprint(stdout, usage)
		return nil
	default:
		return usagef("%s: unknown command; give one of %s; see \"reliablemq -h\"", args[0], commands)
	}
	if errors.Is(err, errHelp) || err == nil {
		return nil
	}
	return &oneLine{err}
}

// oneLine prints an error (often several joined ones) on one line, each
// distinct line once, so a cron job's log has one line per failure.
type oneLine struct{ err error }

func (e *oneLine) Unwrap() error { return e.err }

func (e *oneLine) Error() string {
	var parts []string
	for _, l := range strings.Split(e.err.Error(), "\n") {
		if l = strings.TrimSpace(l); l != "" && !slices.Contains(parts, l) {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, "; ")
}
