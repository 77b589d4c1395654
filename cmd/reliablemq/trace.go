package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/deadletter"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/namespace"
	"github.com/seed157d4c4d/reliablemq/internal/remoting"
	"github.com/seed157d4c4d/reliablemq/outbox"
	"github.com/seed157d4c4d/reliablemq/producer"
)

const traceUsage = `usage: reliablemq trace [flags] KEY

Answers "where is my message": for one business key, the outbox rows
(status, attempts, message id, last error), the broker's copies found by
the key in its topics and in each group's retry and dead-letter topics,
each consumer group's consume-log state, and the dead letters carrying it.
Groups are -group, or every group the brokers know. ACL credentials come
from RMQ_ACCESS_KEY and RMQ_SECRET_KEY (and RMQ_SECURITY_TOKEN), never
flags.

`

// traceFlags are the trace command's flags.
type traceFlags struct {
	dsn, namesrv, namespace, groups, topics *string
	outboxTable, consumeTable, deadTable    *string
	since                                   *time.Duration
}

func traceCmd(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("trace", flag.ContinueOnError)
	setUsage(fs, traceUsage)
	f := traceFlags{dsn: dsnFlag(fs), namesrv: namesrvFlag(fs), namespace: namespaceFlag(fs),
		groups:       fs.String("group", "", "consumer groups, comma-separated (default: every group the brokers know)"),
		topics:       fs.String("topic", "", "topics to search the broker in, comma-separated, besides the outbox rows' topics"),
		outboxTable:  fs.String("outbox-table", "mq_log", "outbox table"),
		consumeTable: fs.String("consume-table", "mq_consume_log", "consume-log table"),
		deadTable:    fs.String("dead-table", "mq_dead_letter", "dead-letter table"),
		since:        fs.Duration("since", 7*24*time.Hour, "how far back the broker's key index is searched"),
	}
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() != 1 || fs.Arg(0) == "" {
		return usagef("trace: want exactly one KEY, got %d arguments", fs.NArg())
	}
	key := fs.Arg(0)
	// A usage error, before the database and the brokers are asked.
	space, err := brokerNamespace(*f.namespace)
	if err != nil {
		return fmt.Errorf("trace: %w", err)
	}
	var (
		relay *outbox.Relay
		store *idempotency.MySQLStore
		dead  *deadletter.Table
		names []string
	)
	db, err := openDB(ctx, *f.dsn, func(db *sqlx.DB) (err error) {
		// The options are the flags: every bad one is named.
		var bad []error
		if relay, err = outbox.NewRelay(db, noPublisher{}, outbox.WithTable(*f.outboxTable)); err != nil {
			bad = append(bad, err)
		}
		if store, err = idempotency.NewMySQLStore(db, idempotency.WithTable(*f.consumeTable)); err != nil {
			bad = append(bad, err)
		}
		if dead, err = deadletter.NewTable(db, deadletter.WithTable(*f.deadTable)); err != nil {
			bad = append(bad, err)
		}
		if len(bad) > 0 {
			return usagef("%v", errors.Join(bad...))
		}
		// Before the database is dialled.
		names, err = nameServers(*f.namesrv)
		return err
	})
	if err != nil {
		return fmt.Errorf("trace: %w", err)
	}
	defer db.Close()
	t := &tracer{key: key, out: stdout, creds: remoting.Credentials(brokerCredentials()), namespace: space}
	if t.brokers, err = clusterBrokers(ctx, names); err != nil {
		return fmt.Errorf("trace: %w", err)
	}
	groups := splitList(*f.groups)
	if len(groups) == 0 {
		groups = t.knownGroups(ctx)
	}
	rows := t.outboxRows(ctx, relay)
	topics := splitList(*f.topics)
	for _, r := range rows {
		if !slices.Contains(topics, r.Topic) {
			topics = append(topics, r.Topic)
		}
	}
	for _, g := range groups {
		topics = append(topics, "%RETRY%"+g, "%DLQ%"+g)
	}
	for i, topic := range topics {
		topics[i] = namespace.Wrap(space, topic)
	}
	t.brokerCopies(ctx, topics, time.Now().Add(-*f.since))
	t.consumeLog(ctx, store, groups)
	t.deadLetters(ctx, dead)
	if err := errors.Join(t.problems...); err != nil {
		return fmt.Errorf("trace: %w", err)
	}
	return nil
}

// tracer prints one section per place a message can be; a place that
// cannot be asked is reported at the end, after what the others answered.
type tracer struct {
	key       string
	out       io.Writer
	creds     remoting.Credentials
	namespace string // groups and topics are named without it
	brokers   []remoting.Broker
	problems  []error
}

func (t *tracer) section(title string, header string, lines []string) {
	fmt.Fprintf(t.out, "%s:\n", title)
	if len(lines) == 0 {
		fmt.Fprintln(t.out, "  (none)")
		return
	}
	w := tabwriter.NewWriter(t.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "  "+header)
	for _, l := range lines {
		fmt.Fprintln(w, "  "+l)
	}
	w.Flush()
}

func (t *tracer) fail(err error) { t.problems = append(t.problems, err) }

func (t *tracer) knownGroups(ctx context.Context) []string {
	var groups []string
	for _, b := range t.brokers {
		gs, err := remoting.SubscriptionGroups(ctx, b.Addr, t.creds)
		if err != nil {
			t.fail(fmt.Errorf("groups of broker %s: %w", b.Name, err))
			continue
		}
		for _, g := range gs {
			if remoting.IsSystemGroup(g) || !inNamespace(t.namespace, g) {
				continue
			}
			if g = namespace.Strip(t.namespace, g); !slices.Contains(groups, g) {
				groups = append(groups, g)
			}
		}
	}
	slices.Sort(groups)
	return groups
}

func (t *tracer) outboxRows(ctx context.Context, relay *outbox.Relay) []*outbox.Row {
	rows, err := relay.Find(ctx, t.key)
	if err != nil {
		t.fail(err)
	}
	var lines []string
	for _, r := range rows {
		lines = append(lines, fmt.Sprintf("%d\t%s\t%s\t%d\t%s\t%s\t%s\t%s", r.ID, r.Topic, r.Status, r.Attempts, dash(r.MsgID),
			stamp(r.SentAt), stamp(&r.NextAttemptAt), firstLine(dash(r.LastError), 60)))
	}
	t.section("outbox", "ID\tTOPIC\tSTATUS\tATTEMPTS\tMSG ID\tSENT AT\tNEXT ATTEMPT\tLAST ERROR", lines)
	return rows
}

// queryMax is how many messages one key lookup asks a broker for; the
// broker's answer includes other keys whose hash collides.
const queryMax = 64

func (t *tracer) brokerCopies(ctx context.Context, topics []string, since time.Time) {
	var lines, full []string
	for _, topic := range topics {
		for _, b := range t.brokers {
			msgs, more, err := remoting.QueryByKey(ctx, t.creds, b.Addr, topic, t.key, queryMax, since, time.Now().Add(time.Minute))
			if err != nil {
				t.fail(err)
				continue
			}
			for _, m := range msgs {
				props := remoting.DecodeProperties(m.Properties)
				lines = append(lines, fmt.Sprintf("%s\t%s\t%d\t%d\t%s\t%d\t%s", topic, b.Name, m.QueueID, m.QueueOffset,
					dash(props[remoting.PropUniqKey]), m.ReconsumeTimes, time.UnixMilli(m.StoreTimestamp).UTC().Format(time.DateTime)))
			}
			if more {
				full = append(full, topic+" on "+b.Name)
			}
		}
	}
	t.section("broker", "TOPIC\tBROKER\tQUEUE\tOFFSET\tMSG ID\tRECONSUMED\tSTORED AT (UTC)", lines)
	for _, f := range full {
		fmt.Fprintf(t.out, "  (%s: the broker's answer was full; more copies may exist: narrow -since)\n", f)
	}
}

func (t *tracer) consumeLog(ctx context.Context, store *idempotency.MySQLStore, groups []string) {
	states, err := store.Lookup(ctx, t.key, groups...)
	if err != nil {
		t.fail(err)
	}
	var lines []string
	for _, s := range states {
		state := "processing or failed"
		if s.Done {
			state = "done"
		}
		lines = append(lines, fmt.Sprintf("%s\t%s\t%d\t%s\t%s", s.Group, state, s.Attempts, stamp(&s.Updated), stamp(&s.Expires)))
	}
	t.section(fmt.Sprintf("consume log (%d groups asked)", len(groups)), "GROUP\tSTATE\tATTEMPTS\tUPDATED\tEXPIRES", lines)
}

func (t *tracer) deadLetters(ctx context.Context, dead *deadletter.Table) {
	entries, err := dead.List(ctx, deadletter.Filter{Key: t.key, Limit: 50, NoBody: true})
	if err != nil {
		t.fail(err)
	}
	var lines []string
	for _, e := range entries {
		lines = append(lines, fmt.Sprintf("%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s", e.ID, e.Group, e.Topic, e.Status, e.Cause, e.Attempts,
			stamp(&e.CreatedAt), firstLine(e.LastError, 60)))
	}
	t.section("dead letters", "ID\tGROUP\tTOPIC\tSTATUS\tCAUSE\tATTEMPTS\tPARKED AT\tERROR", lines)
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func stamp(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.DateTime)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// noPublisher is the relay's publisher for reading: trace never sends.
type noPublisher struct{}

func (noPublisher) Send(context.Context, producer.Message) (producer.Result, error) {
	return producer.Result{}, errors.New("trace sends nothing")
}
