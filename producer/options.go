package producer

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/delaylevel"
	"github.com/seed157d4c4d/reliablemq/internal/namespace"
	"github.com/seed157d4c4d/reliablemq/observe"
	"github.com/seed157d4c4d/reliablemq/orderly"
)

// maxSendTimeout is the official client's own per-request ceiling.
const maxSendTimeout = 3 * time.Second

type config struct {
	group         string
	instance      string
	attempts      int
	backoff       time.Duration
	sendTimeout   time.Duration
	delayLevels   []time.Duration
	maxBodySize   int
	orderedTopics []string
	onQueueChange func(orderly.QueueCountChange)
	lossGrace     time.Duration
	credentials   Credentials
	namespace     string
	hooks         observe.Hooks
	logger        *slog.Logger
	probe         *nameServerProbe
}

// Credentials are a RocketMQ ACL account's keys, for clusters that run with
// aclEnable (many production and hosted clusters do). Every request the
// client or this library sends to the broker is signed with them.
type Credentials struct {
	AccessKey, SecretKey string
	// SecurityToken is optional (temporary credentials).
	SecurityToken string
}

// String hides the secret and the token, so credentials never reach a log.
func (c Credentials) String() string {
	if c.AccessKey == "" {
		return "(no credentials)"
	}
	return "access key " + c.AccessKey
}

// Option configures a [Producer].
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// TxOption configures a [Transactional] producer.
type TxOption interface{ applyTx(*config) }

// SharedOption configures a [Producer] or a [Transactional] one: it is both
// an [Option] and a [TxOption].
type SharedOption interface {
	Option
	TxOption
}

type sharedFunc func(*config)

func (f sharedFunc) apply(c *config)   { f(c) }
func (f sharedFunc) applyTx(c *config) { f(c) }

// WithGroup sets the producer group. Default "reliablemq_producer".
func WithGroup(group string) Option { return optionFunc(func(c *config) { c.group = group }) }

// WithInstanceName sets the client's instance name. The official client
// shares one connection set per instance name in the process, so each
// Producer gets a unique one by default ("reliablemq-p-" and random hex).
func WithInstanceName(name string) SharedOption {
	return sharedFunc(func(c *config) { c.instance = name })
}

// WithRetry sets how many attempts a send makes in all (at least 1) when
// the failure is [Transient]. Default 3. Failures whose outcome is unknown
// are never retried here: the broker may have stored the message, and the
// caller (or the outbox) decides whether a duplicate is acceptable.
func WithRetry(attempts int) Option {
	return optionFunc(func(c *config) { c.attempts = attempts })
}

// WithoutRetry makes every send a single attempt.
func WithoutRetry() Option { return WithRetry(1) }

// WithRetryBackoff sets the wait before the first retry; it doubles for
// each further retry, up to 2 s. Default 100 ms.
func WithRetryBackoff(d time.Duration) Option {
	return optionFunc(func(c *config) { c.backoff = d })
}

// WithSendTimeout bounds each attempt. Default and maximum 3 s, the official
// client's own fixed per-request timeout; a ctx deadline that comes sooner
// wins.
func WithSendTimeout(d time.Duration) SharedOption {
	return sharedFunc(func(c *config) { c.sendTimeout = d })
}

// WithDelayLevels sets the broker's delay level table (its
// messageDelayLevel setting), ascending. Default the broker's default
// table: 1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h.
func WithDelayLevels(levels []time.Duration) Option {
	return optionFunc(func(c *config) { c.delayLevels = slices.Clone(levels) })
}

// WithMaxBodySize sets the largest body accepted, in bytes (for
// [Producer.SendBatch], of the batch as the broker counts it). Default
// 4 MiB, the broker's default maxMessageSize.
func WithMaxBodySize(n int) SharedOption { return sharedFunc(func(c *config) { c.maxBodySize = n }) }

// WithOrderedTopics lists topics whose messages must carry a sharding key;
// a send to one of them without a key fails with [ErrNoShardingKey]
// instead of landing on an arbitrary queue. Default none.
func WithOrderedTopics(topics ...string) SharedOption {
	return sharedFunc(func(c *config) { c.orderedTopics = append(c.orderedTopics, topics...) })
}

// WithCredentials signs every request with an ACL account's keys.
// Default: none (a cluster without ACL).
func WithCredentials(c Credentials) SharedOption {
	return sharedFunc(func(cfg *config) { cfg.credentials = c })
}

// WithNamespace puts every topic and the producer group in a RocketMQ
// namespace, as the official clients' namespace option does: a message for
// topic T goes to "ns%T" and the group is "ns%group". Messages, results,
// errors and queue count changes keep the topic without it. Default none.
func WithNamespace(ns string) SharedOption {
	return sharedFunc(func(cfg *config) { cfg.namespace = ns })
}

// WithQueueLossGrace sets how long a sharding key whose queue's broker
// left the route is held back (its sends fail as [Transient], so an outbox
// retries them) before the keys re-hash over the queues still routed.
// Default [orderly.DefaultLossGrace], 10 minutes. See [orderly.Selector].
func WithQueueLossGrace(d time.Duration) SharedOption {
	return sharedFunc(func(c *config) { c.lossGrace = d })
}

// WithQueueCountChange sets a function called when a topic's writable queue
// count changes between two sends. Keys re-hash to other queues after such
// a change, so per-key order can break for messages still in flight. The
// change is also logged at Warn. Default: log only.
func WithQueueCountChange(fn func(orderly.QueueCountChange)) SharedOption {
	return sharedFunc(func(c *config) { c.onQueueChange = fn })
}

// WithHooks reports each send (observe.SendDone, with its duration and,
// for a failure, its outcome; one refused before the broker, its message
// invalid, has no duration) and each retry of a transient failure
// (observe.SendRetry; a transactional half message's too), and adds the
// trace context of the send's ctx to the message's properties unless they
// carry one already (an outbox row keeps the trace of the transaction that
// wrote it). A panic in the Event hook is logged at Error and changes
// nothing: the send's result is returned. Default none.
func WithHooks(h observe.Hooks) SharedOption { return sharedFunc(func(c *config) { c.hooks = h }) }

// WithLogger sets the logger. Default: [slog.Default] at construction, so
// retries, parked messages, dead rows and failed runs are visible without
// wiring; slog.New(slog.DiscardHandler) silences it.
func WithLogger(l *slog.Logger) SharedOption { return sharedFunc(func(c *config) { c.logger = l }) }

func newConfig(apply func(*config)) (*config, error) {
	c := &config{
		group:       "reliablemq_producer",
		attempts:    3,
		backoff:     100 * time.Millisecond,
		sendTimeout: maxSendTimeout,
		delayLevels: delaylevel.Default,
		maxBodySize: 4 << 20,
	}
	apply(c)
	var errs []error
	if c.group == "" {
		errs = append(errs, errors.New("producer: empty group"))
	}
	if c.attempts < 1 {
		errs = append(errs, fmt.Errorf("producer: retry attempts %d < 1", c.attempts))
	}
	if c.backoff < 0 {
		errs = append(errs, fmt.Errorf("producer: negative retry backoff %v", c.backoff))
	}
	if (c.credentials.AccessKey == "") != (c.credentials.SecretKey == "") {
		errs = append(errs, errors.New("producer: credentials need both an access key and a secret key"))
	}
	if err := namespace.Validate(c.namespace); err != nil {
		errs = append(errs, fmt.Errorf("producer: %w", err))
	}
	if c.lossGrace < 0 {
		errs = append(errs, fmt.Errorf("producer: negative queue loss grace %v", c.lossGrace))
	}
	if c.sendTimeout <= 0 || c.sendTimeout > maxSendTimeout {
		errs = append(errs, fmt.Errorf("producer: send timeout %v outside (0, %v]", c.sendTimeout, maxSendTimeout))
	}
	if err := delaylevel.Validate(c.delayLevels); err != nil {
		errs = append(errs, fmt.Errorf("producer: %w", err))
	}
	if c.maxBodySize <= 0 {
		errs = append(errs, fmt.Errorf("producer: max body size %d <= 0", c.maxBodySize))
	}
	if c.logger == nil {
		c.logger = slog.Default()
	}
	return c, errors.Join(errs...)
}

// delayLevel maps d to the smallest delay level >= d (1-based), 0 for no
// delay.
func (c *config) delayLevel(d time.Duration) (int, error) {
	if d < 0 {
		return 0, fmt.Errorf("%w: negative delay %v", ErrInvalidMessage, d)
	}
	l, err := delaylevel.Level(c.delayLevels, d)
	if err != nil {
		return 0, fmt.Errorf("%w: %v > %v", ErrDelayTooLong, d, c.delayLevels[len(c.delayLevels)-1])
	}
	return l, nil
}
