package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/remoting"
)

// Drain moves messages from a group's broker dead-letter topic
// (%DLQ%<group>) into a [Parker], so nothing ends in a topic nobody reads.
// The broker puts a message there when the client gives up on it without
// this package parking it first: the official client's own retry limit, a
// consumer not using this package, an orderly send-back to DLQ.
//
// RocketMQ 4.x creates the DLQ topic write-only (perm 2), so it cannot be
// consumed; Drain updates its permission to read-write (6) on every broker
// that hosts it, then consumes it with its own consumer group,
// "<group>-dlq-drain", parking each message with [CauseDLQ].
type Drain struct {
	names    []string
	group    string
	dlq      string
	parker   Parker
	opts     []Option
	interval time.Duration
	logger   *slog.Logger
	drained  atomic.Int64
}

// NewDrain returns a drain of group's DLQ into parker. opts configure the
// drain's consumer ([WithLogger], [WithInstanceName]...); interval is how
// often Run looks for the DLQ topic until it exists (0 means 1 minute).
func NewDrain(nameServers []string, group string, parker Parker, interval time.Duration, opts ...Option) (*Drain, error) {
	if len(nameServers) == 0 || group == "" || parker == nil {
		return nil, errors.New("consumer: drain needs name servers, a group and a parker")
	}
	if interval < 0 {
		return nil, fmt.Errorf("consumer: negative drain interval %v", interval)
	}
	if interval == 0 {
		interval = time.Minute
	}
	cfg, err := newConfig(append([]Option{WithParker(parker)}, opts...), false)
	if err != nil {
		return nil, err
	}
	return &Drain{names: nameServers, group: group, dlq: "%DLQ%" + group, parker: parker, opts: opts,
		interval: interval, logger: cfg.logger}, nil
}

// Drained returns how many messages Run has parked.
func (d *Drain) Drained() int64 { return d.drained.Load() }

// Run drains until ctx is cancelled. It waits for the DLQ topic to exist,
// makes it readable, and consumes it; it returns nil after a clean stop.
func (d *Drain) Run(ctx context.Context) error {
	tick := time.NewTicker(d.interval)
	defer tick.Stop()
	for {
		started, err := d.tryStart(ctx)
		if err != nil {
			d.logger.LogAttrs(ctx, slog.LevelWarn, "dlq drain not started", slog.String("group", d.group), slog.Any("error", err))
		}
		if started != nil {
			<-ctx.Done()
			return started.Close()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// tryStart returns a running consumer of the DLQ, or nil when the topic
// does not exist yet.
func (d *Drain) tryStart(ctx context.Context) (*Consumer, error) {
	exists, err := d.makeReadable(ctx)
	if err != nil || !exists {
		return nil, err
	}
	h := func(ctx context.Context, m *Message) error {
		inserted, err := d.parker.Park(ctx, &DeadLetter{Group: d.group, Topic: m.Topic, MsgID: m.MsgID, Keys: m.Keys,
			Tag: m.Tag, ShardingKey: m.ShardingKey, Properties: m.Properties, Body: m.Body, Attempts: m.Attempt,
			LastError: "moved to the broker dead-letter topic " + d.dlq, Cause: CauseDLQ, Status: Parked})
		if err == nil && inserted {
			d.drained.Add(1)
		}
		return err
	}
	opts := append([]Option{WithParker(d.parker), WithMaxAttempts(maxBrokerRetries), WithRetryDelay(time.Second)}, d.opts...)
	c, err := New(d.names, d.group+"-dlq-drain", d.dlq, h, opts...)
	if err != nil {
		return nil, err
	}
	if err := c.Start(); err != nil {
		return nil, err
	}
	return c, nil
}

// makeReadable reports whether the DLQ topic exists, and sets perm 6 on
// every master broker where it is not readable.
func (d *Drain) makeReadable(ctx context.Context) (bool, error) {
	var route *remoting.Route
	var lastErr error
	for _, ns := range d.names {
		r, err := remoting.FetchRoute(ctx, ns, d.dlq)
		if errors.Is(err, remoting.ErrNoRoute) {
			return false, nil
		}
		if err != nil {
			lastErr = err
			continue
		}
		route = r
		break
	}
	if route == nil {
		return false, lastErr
	}
	for _, q := range route.QueueDatas {
		if q.Perm&remoting.PermRead != 0 {
			continue
		}
		for _, b := range route.BrokerDatas {
			addr := b.BrokerAddrs["0"] // the master
			if b.BrokerName != q.BrokerName || addr == "" {
				continue
			}
			err := remoting.UpdateTopic(ctx, addr, d.dlq, q.ReadQueueNums, q.WriteQueueNums, remoting.PermRead|remoting.PermWrite)
			if err != nil {
				return true, err
			}
			d.logger.LogAttrs(ctx, slog.LevelInfo, "dlq topic made readable", slog.String("topic", d.dlq),
				slog.String("broker", b.BrokerName))
		}
	}
	return true, nil
}
