package deadletter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/internal/namespace"
	"github.com/seed157d4c4d/reliablemq/internal/remoting"
	"github.com/seed157d4c4d/reliablemq/internal/safely"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// Drain moves messages from a group's broker dead-letter topic
// (%DLQ%<group>) into a [consumer.Parker] (normally the [Table]), so
// nothing ends in a topic nobody reads. The broker puts a message there
// when the client gives up on it without the consumer parking it first:
// the official client's own retry limit, a consumer not using this
// library, an orderly send-back to DLQ.
//
// RocketMQ 4.9.4 and 5.x create the DLQ topic read-write; older 4.x
// releases create it write-only (perm 2), so it cannot be consumed. Drain
// updates its permission to read-write (6) on every master broker where it
// is not readable, then consumes it with its own consumer group,
// "<group>-dlq-drain", parking each message with [consumer.CauseDLQ]. A
// message is acknowledged only once parked; while the parker fails the
// drain tries again (logged, at Error after a few failures in a row) and
// its messages stay in the DLQ. Each message it parks is logged at Error
// and alerted ([WithAlert]), as the consumer's own parks are.
type Drain struct {
	names    []string
	group    string
	dlq      string
	parker   consumer.Parker
	cfg      drainConfig
	drained  atomic.Int64
	consumer []consumer.Option
}

type drainConfig struct {
	interval    time.Duration
	credentials producer.Credentials
	namespace   string
	logger      *slog.Logger
	alert       func(context.Context, *consumer.DeadLetter)
}

// DrainOption configures a [Drain].
type DrainOption func(*drainConfig)

// WithInterval sets how often Run looks for the DLQ topic until it
// exists. Default 1 minute.
func WithInterval(d time.Duration) DrainOption { return func(c *drainConfig) { c.interval = d } }

// WithCredentials signs the drain's requests with an ACL account: it
// needs SUB on the DLQ topic and on the drain's group, and the right to
// update the DLQ topic's permission (an admin account on 4.x). Default:
// none.
func WithCredentials(cr producer.Credentials) DrainOption {
	return func(c *drainConfig) { c.credentials = cr }
}

// WithNamespace drains group's DLQ in a RocketMQ namespace (see
// consumer.WithNamespace): the topic "%DLQ%ns%group", consumed by the group
// "ns%group-dlq-drain", parked under the group "ns%group" as the group's
// own consumer parks. Default none.
func WithNamespace(ns string) DrainOption { return func(c *drainConfig) { c.namespace = ns } }

// WithLogger sets the logger. Default [slog.Default] at construction.
func WithLogger(l *slog.Logger) DrainOption { return func(c *drainConfig) { c.logger = l } }

// WithAlert sets a function called once for each message the drain
// parks, after it is recorded, as consumer.WithAlert is for the
// consumer's own parks (with the same [consumer.ReportedParker] rule): a
// message in the DLQ is one no consumer took. Default: none (each is also
// logged at Error).
func WithAlert(fn func(context.Context, *consumer.DeadLetter)) DrainOption {
	return func(c *drainConfig) { c.alert = fn }
}

// NewDrain returns a drain of group's DLQ into parker.
func NewDrain(nameServers []string, group string, parker consumer.Parker, opts ...DrainOption) (*Drain, error) {
	cfg := drainConfig{interval: time.Minute}
	for _, o := range opts {
		o(&cfg)
	}
	var errs []error
	if len(nameServers) == 0 || group == "" || parker == nil {
		errs = append(errs, errors.New("deadletter: a drain needs name servers, a group and a parker"))
	}
	if cfg.interval <= 0 {
		errs = append(errs, fmt.Errorf("deadletter: drain interval %v <= 0", cfg.interval))
	}
	if (cfg.credentials.AccessKey == "") != (cfg.credentials.SecretKey == "") {
		errs = append(errs, errors.New("deadletter: credentials need both an access key and a secret key"))
	}
	if err := namespace.Validate(cfg.namespace); err != nil {
		errs = append(errs, fmt.Errorf("deadletter: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.logger == nil {
		cfg.logger = slog.Default()
	}
	copts := []consumer.Option{consumer.WithParker(parker), consumer.WithMaxAttempts(16),
		consumer.WithRetryDelay(time.Second), consumer.WithLogger(cfg.logger), consumer.WithNamespace(cfg.namespace)}
	if cfg.credentials.AccessKey != "" {
		copts = append(copts, consumer.WithCredentials(cfg.credentials))
	}
	return &Drain{names: nameServers, group: group, dlq: "%DLQ%" + group, parker: parker, cfg: cfg, consumer: copts}, nil
}

// brokerName is name as the brokers know it: in the drain's namespace.
func (d *Drain) brokerName(name string) string {
	return namespace.Wrap(d.cfg.namespace, name)
}

// Drained returns how many messages Run has parked.
func (d *Drain) Drained() int64 { return d.drained.Load() }

// Run drains until ctx is cancelled: it waits for the DLQ topic to exist,
// makes it readable and consumes it. It returns nil after a clean stop,
// or the error of closing its consumer.
func (d *Drain) Run(ctx context.Context) error {
	tick := time.NewTicker(d.cfg.interval)
	defer tick.Stop()
	for {
		c, err := d.tryStart(ctx)
		if err != nil {
			d.cfg.logger.LogAttrs(ctx, slog.LevelWarn, "dlq drain not started", slog.String("group", d.group), slog.Any("error", err))
		}
		if c != nil {
			<-ctx.Done()
			return c.Close()
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
func (d *Drain) tryStart(ctx context.Context) (*consumer.Consumer, error) {
	cr := d.cfg.credentials
	exists, changed, err := remoting.MakeReadable(ctx, remoting.Credentials(cr), d.names, d.brokerName(d.dlq))
	for _, b := range changed {
		d.cfg.logger.LogAttrs(ctx, slog.LevelInfo, "dlq topic made readable", slog.String("topic", d.brokerName(d.dlq)), slog.String("broker", b))
	}
	if err != nil || !exists {
		return nil, err
	}
	c, err := consumer.New(d.names, d.group+"-dlq-drain", d.dlq, d.park, d.consumer...)
	if err != nil {
		return nil, err
	}
	if err := c.Start(); err != nil {
		return nil, err
	}
	return c, nil
}

// park is the drain's handler. It parks m, trying again while the parker
// fails, and returns an error only when its ctx ends (Close gave up
// waiting: m is then left unacknowledged in the DLQ). A failed handler
// would be a retry, and a retry copy of a DLQ message never comes back to
// this handler: it carries the original topic (RETRY_TOPIC), which the
// client takes for the copy's and, not subscribed to, sends it back until
// the broker moves it to %DLQ%<group>-dlq-drain, a topic nothing drains.
func (d *Drain) park(ctx context.Context, m *consumer.Message) error {
	dl := &consumer.DeadLetter{Group: d.brokerName(d.group), Topic: m.Topic, MsgID: m.MsgID, Keys: m.Keys,
		Tag: m.Tag, ShardingKey: m.ShardingKey, Properties: m.Properties, Body: m.Body, Attempts: m.Attempt,
		LastError: "moved to the broker dead-letter topic " + d.brokerName(d.dlq), Cause: consumer.CauseDLQ}
	wait := 100 * time.Millisecond
	for failures := 1; ; failures++ {
		inserted, err := d.parker.Park(ctx, dl)
		if err == nil {
			if inserted {
				d.drained.Add(1)
				d.cfg.logger.LogAttrs(ctx, slog.LevelError, "message from the broker's dead-letter topic parked for manual handling",
					slog.String("group", d.group), slog.String("topic", m.Topic), slog.String("msg_id", m.MsgID),
					slog.Any("keys", m.Keys))
				if d.cfg.alert != nil {
					// Parked: a panic in the alert must not make it a retry.
					safely.Report(ctx, d.cfg.logger, "alert", func() { d.cfg.alert(ctx, dl) })
				}
				if rp, ok := d.parker.(consumer.ReportedParker); ok {
					if err := rp.Reported(ctx, dl); err != nil {
						d.cfg.logger.LogAttrs(ctx, slog.LevelWarn, "parked message reported, but not marked so: a later park of it (a redelivery) reports it again",
							slog.String("msg_id", m.MsgID), slog.Any("error", err))
					}
				}
			}
			return nil
		}
		level := slog.LevelWarn
		if failures >= parkTroubleAfter {
			level = slog.LevelError
		}
		d.cfg.logger.LogAttrs(ctx, level, "dlq drain cannot park a message, trying again", slog.String("group", d.group),
			slog.String("msg_id", m.MsgID), slog.Int("failures", failures), slog.Duration("in", wait), slog.Any("error", err))
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, 10*time.Second)
	}
}

// parkTroubleAfter is how many failed parks of one message in a row the
// drain logs at Error rather than Warn: its messages are not moving.
const parkTroubleAfter = 5
