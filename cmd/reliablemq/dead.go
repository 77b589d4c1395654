package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode"
	"unicode/utf8"

	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/deadletter"
	"github.com/seed157d4c4d/reliablemq/internal/namespace"
	"github.com/seed157d4c4d/reliablemq/producer"
)

const deadUsage = `usage: reliablemq dead [flags] list | show ID | replay ID | discard ID | received ID

Works the manual-handling (dead-letter) table consumers park messages in.

  list      parked messages (-status and -group filter)
  show      one message in full
  replay    send it again to its original topic (needs -namesrv); it is
            replaying, and holds its key's order, until its group's
            consumer receives it
  discard   mark it handled without replaying (-reason required)
  received  mark a replaying message received by hand, when no consumer
            will report it (-reason required)

`

// deadFlags are the dead command's flags.
type deadFlags struct {
	dsn, namesrv, namespace, group, status, reason, table *string
	limit                                                 *int
	after                                                 *int64
}

func deadCmd(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("dead", flag.ContinueOnError)
	setUsage(fs, deadUsage)
	f := deadFlags{dsn: dsnFlag(fs), namesrv: namesrvFlag(fs), namespace: namespaceFlag(fs),
		group:  fs.String("group", "", "only this consumer group (list; in -namespace if set)"),
		status: fs.String("status", "parked", "parked, replaying, replayed, discarded or all (list)"),
		limit:  fs.Int("limit", 50, "rows to list"),
		after:  fs.Int64("after", 0, "list rows with id greater than this"),
		reason: fs.String("reason", "", "why (replay, discard, received)"),
		table:  fs.String("table", "mq_dead_letter", "dead-letter table"),
	}
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	action, id, err := deadAction(fs, f)
	if err != nil {
		return err
	}
	space, err := brokerNamespace(*f.namespace)
	if err != nil {
		return fmt.Errorf("dead: %w", err)
	}
	*f.namespace = space
	var table *deadletter.Table
	db, err := openDB(ctx, *f.dsn, func(db *sqlx.DB) (err error) {
		if table, err = deadletter.NewTable(db, deadletter.WithTable(*f.table)); err != nil {
			return usagef("%v", err) // the options are the flags
		}
		if action == "replay" { // it needs one; said before the database is dialled
			_, err = nameServers(*f.namesrv)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("dead: %w", err)
	}
	defer db.Close()
	switch action {
	case "list":
		return deadList(ctx, table, f, stdout)
	case "show":
		return deadShow(ctx, table, id, *f.namespace, stdout)
	}
	e, err := deadInNamespace(ctx, table, action, id, *f.namespace)
	if err != nil {
		return err
	}
	switch action {
	case "replay":
		return deadReplay(ctx, table, e, f, stdout)
	case "received":
		if err := table.MarkReceived(ctx, id, *f.reason); err != nil {
			return fmt.Errorf("dead: %w", err)
		}
		_, err := fmt.Fprintf(stdout, "marked %d received\n", id)
		return err
	default:
		return deadDiscard(ctx, table, id, *f.reason, stdout)
	}
}

// deadInNamespace returns dead letter id, refusing an action on one of
// another namespace than ns (or of one when ns is empty): another
// tenant's, which a replay would send to that tenant's topic in ours.
func deadInNamespace(ctx context.Context, table *deadletter.Table, action string, id int64, ns string) (*deadletter.Entry, error) {
	e, err := table.Get(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("dead: %w", err)
	}
	switch in := namespace.Of(e.Group); {
	case in == ns:
		return e, nil
	case in == "":
		return nil, usagef("dead: %s %d: its group %s is in no namespace, not %q: unset -namespace and RMQ_NAMESPACE", action, id, e.Group, ns)
	default:
		return nil, usagef("dead: %s %d: its group %s is in namespace %q, not %q: pass -namespace %s", action, id, e.Group, in, ns, in)
	}
}

// deadAction checks the action, its id and the flags it needs.
func deadAction(fs *flag.FlagSet, f deadFlags) (action string, id int64, err error) {
	action = fs.Arg(0)
	want := 2
	switch action {
	case "":
		return "", 0, usagef("dead: missing action: list, show ID, replay ID, discard ID or received ID")
	case "list":
		want = 1
	case "show", "replay", "discard", "received":
		if fs.NArg() < 2 {
			return "", 0, usagef("dead: %s: missing ID", action)
		}
	default:
		return "", 0, usagef("dead: unknown action %q: want list, show ID, replay ID, discard ID or received ID", action)
	}
	if fs.NArg() > want {
		return "", 0, usagef("dead: %s: unexpected argument %q", action, fs.Arg(want))
	}
	if want == 2 {
		if id, err = strconv.ParseInt(fs.Arg(1), 10, 64); err != nil || id <= 0 {
			return "", 0, usagef("dead: %s: bad id %q: want a positive integer", action, fs.Arg(1))
		}
	}
	if _, ok := statusFilter(*f.status); !ok {
		return "", 0, usagef("dead: unknown -status %q: want parked, replaying, replayed, discarded or all", *f.status)
	}
	if *f.limit <= 0 || *f.after < 0 {
		return "", 0, usagef("dead: -limit %d -after %d: want a positive limit and an id of 0 or more", *f.limit, *f.after)
	}
	if (action == "discard" || action == "received") && *f.reason == "" {
		return "", 0, usagef("dead: %s needs -reason", action)
	}
	return action, id, nil
}

// statusFilter maps -status to a filter status (0: all).
func statusFilter(s string) (deadletter.Status, bool) {
	switch s {
	case "parked":
		return deadletter.Parked, true
	case "replayed":
		return deadletter.Replayed, true
	case "discarded":
		return deadletter.Discarded, true
	case "replaying":
		return deadletter.Replaying, true
	case "all":
		return 0, true
	}
	return 0, false
}

func deadList(ctx context.Context, table *deadletter.Table, f deadFlags, stdout io.Writer) error {
	status, _ := statusFilter(*f.status) // checked by deadAction
	entries, err := table.List(ctx, deadletter.Filter{Group: namespace.Wrap(*f.namespace, *f.group), Namespace: *f.namespace, Status: status, AfterID: *f.after, Limit: *f.limit, NoBody: true})
	if err != nil {
		return fmt.Errorf("dead: %w", err)
	}
	if len(entries) == 0 {
		_, err := fmt.Fprintln(stdout, "(none)")
		return err
	}
	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tGROUP\tTOPIC\tKEYS\tCAUSE\tSTATUS\tATTEMPTS\tPARKED AT (UTC)\tERROR")
	for _, e := range entries {
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", e.ID, printable(e.Group, ""), printable(e.Topic, ""),
			printable(strings.Join(e.Keys, " "), ""), printable(string(e.Cause), ""), e.Status, e.Attempts,
			e.CreatedAt.Format("2006-01-02 15:04:05"), firstLine(e.LastError, 60))
	}
	return w.Flush()
}

// deadShow prints dead letter id in full. With a namespace ns it refuses
// one of another namespace, as list does not list it: another tenant's
// body and properties. Without one it shows any, as list lists any.
func deadShow(ctx context.Context, table *deadletter.Table, id int64, ns string, stdout io.Writer) error {
	e, err := table.Get(ctx, id)
	if err != nil {
		return fmt.Errorf("dead: %w", err)
	}
	if in := namespace.Of(e.Group); ns != "" && in != ns {
		return usagef("dead: show %d: its group %s is in namespace %q, not %q", id, e.Group, in, ns)
	}
	_, err = fmt.Fprintf(stdout, "id:           %d\ngroup:        %s\ntopic:        %s\nmsg id:       %s\nkeys:         %s\n"+
		"tag:          %s\nsharding key: %s\nproperties:   %v\ncause:        %s\nstatus:       %s\nreason:       %s\n"+
		"attempts:     %d\nparked at:    %s UTC\nupdated at:   %s UTC\nbody:         %q\nlast error:\n%s\n",
		e.ID, printable(e.Group, ""), printable(e.Topic, ""), printable(e.MsgID, ""), printable(strings.Join(e.Keys, " "), ""),
		printable(e.Tag, ""), printable(e.ShardingKey, ""), printable(fmt.Sprint(e.Properties), ""), printable(string(e.Cause), ""),
		e.Status, printable(e.Reason, ""), e.Attempts, e.CreatedAt.Format("2006-01-02 15:04:05"),
		e.UpdatedAt.Format("2006-01-02 15:04:05"), e.Body, printable(e.LastError, "\n\t"))
	return err
}

// deadReplay replays e. Its producer's body limit is e's body size:
// the clients compress a body over 4 KiB and the broker limits what it
// stores, so a message may have come with a larger body than the
// producer's default limit, and the consumer parks it inflated. The
// replay is sent compressed too, and the broker judges its size.
func deadReplay(ctx context.Context, table *deadletter.Table, e *deadletter.Entry, f deadFlags, stdout io.Writer) error {
	id := e.ID
	names, err := nameServers(*f.namesrv)
	if err != nil {
		return fmt.Errorf("dead: %w", err)
	}
	if err := probeNameServers(ctx, names); err != nil {
		return fmt.Errorf("dead: replay %d: %w", id, err)
	}
	var limit []producer.Option
	if len(e.Body) > 0 { // an empty body is refused whatever the limit
		limit = append(limit, producer.WithMaxBodySize(len(e.Body)))
	}
	p, err := newProducer(names, *f.namespace, limit...)
	if err != nil {
		return fmt.Errorf("dead: %w", err)
	}
	defer p.Close()
	if err := table.Replay(ctx, id, p, *f.reason); err != nil {
		return fmt.Errorf("dead: %w", err)
	}
	_, err = fmt.Fprintf(stdout, "replayed %d: sent again; it stays replaying until its group's consumer receives it\n", id)
	return err
}

func deadDiscard(ctx context.Context, table *deadletter.Table, id int64, reason string, stdout io.Writer) error {
	if err := table.Discard(ctx, id, reason); err != nil {
		return fmt.Errorf("dead: %w", err)
	}
	_, err := fmt.Fprintf(stdout, "discarded %d\n", id)
	return err
}

// firstLine returns s's first line, cut to about n bytes at a character
// boundary, made [printable].
func firstLine(s string, n int) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > n {
		cut := n
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return printable(s, "")
}

// printable returns s with each character a terminal acts on rather than
// shows (control and bidirectional-override characters, but those in
// keep) escaped as in a Go string literal (\x1b, \r, \u009b, \u202e), and
// each byte of invalid UTF-8 as \xff. A dead letter's keys, tag,
// properties and error text are whatever the message's producer or its
// handler wrote: printed raw, an escape sequence would rewrite the
// operator's screen (or clipboard), and a newline forge a line.
func printable(s, keep string) string {
	var b strings.Builder
	for i, r := range s {
		switch {
		case r == utf8.RuneError && !strings.HasPrefix(s[i:], "\uFFFD"):
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case (unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r)) && !strings.ContainsRune(keep, r):
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}
