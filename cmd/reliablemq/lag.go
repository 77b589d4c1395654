package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/namespace"
	"github.com/seed157d4c4d/reliablemq/internal/remoting"
)

const lagUsage = `usage: reliablemq lag [flags]

Shows each consumer group's progress per message queue: the broker's max
offset, the group's committed offset, the lag between them and the store
time of the last consumed message, largest lag first, with a total line.
Without -group, every group the brokers have a subscription config for
(system groups only with -system). ACL credentials come from
RMQ_ACCESS_KEY and RMQ_SECRET_KEY (and RMQ_SECURITY_TOKEN), never flags.

`

// lagRow is one queue of one group on one broker.
type lagRow struct {
	Group          string `json:"group"`
	Topic          string `json:"topic"`
	Broker         string `json:"broker"`
	Queue          int    `json:"queue"`
	BrokerOffset   int64  `json:"broker_offset"`
	ConsumerOffset int64  `json:"consumer_offset"`
	Lag            int64  `json:"lag"`
	// LastConsumed is the store time of the last consumed message, nil
	// when the broker does not know it.
	LastConsumed *time.Time `json:"last_consumed,omitempty"`
}

func lagCmd(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("lag", flag.ContinueOnError)
	setUsage(fs, lagUsage)
	ns, nsp := namesrvFlag(fs), namespaceFlag(fs)
	group := fs.String("group", "", "only this consumer group (default: all groups, or all of -namespace)")
	system := fs.Bool("system", false, "also list the broker's own groups (TOOLS_CONSUMER, ...) when -group is not set")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("lag: unexpected argument %q", fs.Arg(0))
	}
	space, err := brokerNamespace(*nsp)
	if err != nil {
		return fmt.Errorf("lag: %w", err)
	}
	names, err := nameServers(*ns)
	if err != nil {
		return fmt.Errorf("lag: %w", err)
	}
	brokers, err := clusterBrokers(ctx, names)
	if err != nil {
		return fmt.Errorf("lag: %w", err)
	}
	creds := remoting.Credentials(brokerCredentials())

	// Ask every master; a broker that fails is reported after the table
	// of what the others answered.
	var problems []error
	groups := []string{namespace.Wrap(space, *group)}
	if *group == "" {
		groups = nil
		for _, b := range brokers {
			gs, err := remoting.SubscriptionGroups(ctx, b.Addr, creds)
			if err != nil {
				problems = append(problems, fmt.Errorf("broker %s: %w", b.Name, err))
				continue
			}
			for _, g := range gs {
				if (*system || !remoting.IsSystemGroup(g)) && inNamespace(space, g) && !slices.Contains(groups, g) {
					groups = append(groups, g)
				}
			}
		}
		slices.Sort(groups)
	}
	var rows []lagRow
	for _, g := range groups {
		for _, b := range brokers {
			s, err := remoting.GetConsumeStats(ctx, b.Addr, g, "", creds)
			if err != nil {
				problems = append(problems, fmt.Errorf("broker %s: %w", b.Name, err))
				continue
			}
			for _, q := range s.Queues {
				r := lagRow{Group: g, Topic: q.Topic, Broker: q.BrokerName, Queue: q.QueueID,
					BrokerOffset: q.BrokerOffset, ConsumerOffset: q.ConsumerOffset, Lag: q.Lag()}
				if q.LastTimestamp > 0 {
					ts := time.UnixMilli(q.LastTimestamp)
					r.LastConsumed = &ts
				}
				rows = append(rows, r)
			}
		}
	}
	if *group != "" && len(rows) == 0 && len(problems) == 0 {
		// A group no broker has a subscription config for never consumed
		// here: a misspelt name must not read as no lag.
		if err := knownGroup(ctx, brokers, groups[0], creds); err != nil {
			return fmt.Errorf("lag: %w", err)
		}
	}
	slices.SortFunc(rows, func(a, b lagRow) int {
		return cmp.Or(cmp.Compare(b.Lag, a.Lag), cmp.Compare(a.Group, b.Group), cmp.Compare(a.Topic, b.Topic),
			cmp.Compare(a.Broker, b.Broker), cmp.Compare(a.Queue, b.Queue))
	})
	var total lagRow
	for _, r := range rows {
		total.BrokerOffset += r.BrokerOffset
		total.ConsumerOffset += r.ConsumerOffset
		total.Lag += r.Lag
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if rows == nil {
			rows = []lagRow{}
		}
		if err := enc.Encode(struct {
			Queues   []lagRow `json:"queues"`
			TotalLag int64    `json:"total_lag"`
		}{rows, total.Lag}); err != nil {
			return err
		}
	} else if err := printLag(stdout, rows, total, groups); err != nil {
		return err
	}
	if len(problems) > 0 {
		return fmt.Errorf("lag: %w", errors.Join(problems...))
	}
	return nil
}

// knownGroup fails unless some broker has a subscription config for
// group (brokers create one when a consumer of the group first reports
// in).
func knownGroup(ctx context.Context, brokers []remoting.Broker, group string, creds remoting.Credentials) error {
	var errs []error
	for _, b := range brokers {
		gs, err := remoting.SubscriptionGroups(ctx, b.Addr, creds)
		if err != nil {
			errs = append(errs, fmt.Errorf("broker %s: %w", b.Name, err))
			continue
		}
		if slices.Contains(gs, group) {
			return nil
		}
	}
	return errors.Join(append(errs, fmt.Errorf("group %q: no broker knows it (no consumer of it ever reported in): check the name and -namespace", group))...)
}

func printLag(w io.Writer, rows []lagRow, total lagRow, groups []string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tTOPIC\tBROKER\tQUEUE\tBROKER OFFSET\tCONSUMER OFFSET\tLAG\tLAST CONSUMED")
	for _, r := range rows {
		last := "-"
		if r.LastConsumed != nil {
			last = r.LastConsumed.Format("2006-01-02 15:04:05")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\n", r.Group, r.Topic, r.Broker, r.Queue,
			r.BrokerOffset, r.ConsumerOffset, r.Lag, last)
	}
	fmt.Fprintf(tw, "TOTAL\t%d group(s)\t\t%d queue(s)\t%d\t%d\t%d\n", len(groups), len(rows),
		total.BrokerOffset, total.ConsumerOffset, total.Lag)
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(rows) == 0 {
		_, err := fmt.Fprintln(w, "(no committed offsets)")
		return err
	}
	return nil
}

// clusterBrokers asks the name servers in turn for the cluster's brokers
// and returns the masters of the first answer.
func clusterBrokers(ctx context.Context, names []string) ([]remoting.Broker, error) {
	var errs []error
	for _, ns := range names {
		bs, err := remoting.ClusterBrokers(ctx, ns)
		if err != nil {
			if errors.As(err, new(*net.OpError)) || errors.Is(err, context.DeadlineExceeded) {
				err = fmt.Errorf("name server unreachable: %w", err)
			}
			errs = append(errs, err)
			continue
		}
		masters := slices.DeleteFunc(bs, func(b remoting.Broker) bool { return b.Addr == "" })
		if len(masters) == 0 {
			return nil, fmt.Errorf("name server %s knows no broker master", ns)
		}
		return masters, nil
	}
	return nil, errors.Join(errs...)
}
