package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/producer"
)

const deadUsage = `usage: reliablemq dead [flags] list | show ID | replay ID | discard ID

Works the manual-handling (dead-letter) table consumers park messages in.

  list      parked messages (-status and -group filter)
  show      one message in full
  replay    send it again to its original topic (needs -namesrv)
  discard   mark it handled without replaying (-reason required)

`

func deadCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dead", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(stderr, deadUsage); fs.PrintDefaults() }
	dsn, ns := dsnFlag(fs), namesrvFlag(fs)
	group := fs.String("group", "", "only this consumer group (list)")
	status := fs.String("status", "parked", "parked, replayed, discarded or all (list)")
	limit := fs.Int("limit", 50, "rows to list")
	after := fs.Int64("after", 0, "list rows with id greater than this")
	reason := fs.String("reason", "", "why (replay, discard)")
	table := fs.String("table", "mq_dead_letter", "dead-letter table")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	action := fs.Arg(0)
	var id int64
	switch {
	case action == "list" && fs.NArg() == 1:
	case (action == "show" || action == "replay" || action == "discard") && fs.NArg() == 2:
		var err error
		if id, err = strconv.ParseInt(fs.Arg(1), 10, 64); err != nil || id <= 0 {
			fmt.Fprintf(stderr, "reliablemq: dead: %s: bad id %q\n", action, fs.Arg(1))
			return errUsage
		}
	default:
		fs.Usage()
		return errUsage
	}
	if action == "discard" && *reason == "" {
		fmt.Fprintln(stderr, "reliablemq: dead: discard needs -reason")
		return errUsage
	}
	db, err := openDB(*dsn)
	if err != nil {
		return fmt.Errorf("dead: %w", err)
	}
	defer db.Close()
	dead, err := consumer.NewDeadLetters(db, *table)
	if err != nil {
		return err
	}
	switch action {
	case "list":
		f := consumer.Filter{Group: *group, AfterID: *after, Limit: *limit}
		switch *status {
		case "parked":
			f.Status = consumer.Parked
		case "replayed":
			f.Status = consumer.Replayed
		case "discarded":
			f.Status = consumer.Discarded
		case "all":
		default:
			fmt.Fprintf(stderr, "reliablemq: dead: unknown -status %q\n", *status)
			return errUsage
		}
		dls, err := dead.List(ctx, f)
		if err != nil {
			return err
		}
		w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "ID\tGROUP\tTOPIC\tKEYS\tCAUSE\tSTATUS\tATTEMPTS\tPARKED AT\tERROR")
		for _, d := range dls {
			fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", d.ID, d.Group, d.Topic, strings.Join(d.Keys, " "),
				d.Cause, d.Status, d.Attempts, d.CreatedAt.Format("2006-01-02 15:04:05"), firstLine(d.LastError, 60))
		}
		if err := w.Flush(); err != nil {
			return err
		}
		if len(dls) == 0 {
			fmt.Fprintln(stdout, "(none)")
		}
	case "show":
		d, err := dead.Get(ctx, id)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "id:           %d\ngroup:        %s\ntopic:        %s\nmsg id:       %s\nkeys:         %s\n"+
			"tag:          %s\nsharding key: %s\nproperties:   %v\ncause:        %s\nstatus:       %s\nreason:       %s\n"+
			"attempts:     %d\nparked at:    %s\nupdated at:   %s\nbody:         %q\nlast error:\n%s\n",
			d.ID, d.Group, d.Topic, d.MsgID, strings.Join(d.Keys, " "), d.Tag, d.ShardingKey, d.Properties, d.Cause,
			d.Status, d.Reason, d.Attempts, d.CreatedAt.Format("2006-01-02 15:04:05"), d.UpdatedAt.Format("2006-01-02 15:04:05"),
			d.Body, d.LastError)
	case "replay":
		names, err := nameServers(*ns)
		if err != nil {
			return fmt.Errorf("dead: %w", err)
		}
		p, err := producer.New(names, brokerCredentials()...)
		if err != nil {
			return err
		}
		defer p.Close()
		if err := dead.Replay(ctx, id, p, *reason); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "replayed %d\n", id)
	case "discard":
		if err := dead.Discard(ctx, id, *reason); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "discarded %d\n", id)
	}
	return nil
}

func firstLine(s string, n int) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > n {
		s = s[:n] + "..."
	}
	return s
}
