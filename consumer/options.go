package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/delaylevel"
	"github.com/seed157d4c4d/reliablemq/internal/namespace"
	"github.com/seed157d4c4d/reliablemq/observe"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// maxBrokerRetries is the client's MaxReconsumeTimes: the broker moves a
// message to %DLQ% after this many retries. The consumer parks far
// earlier; this only bounds messages that stay Busy.
const maxBrokerRetries = 16

// maxBatchSize is the largest [WithBatchSize]: the client's pull size,
// above which a batch never fills.
const maxBatchSize = 32

type config struct {
	guard           *idempotency.Guard
	keyFunc         func(*Message) string
	parker          Parker
	alert           func(context.Context, *DeadLetter)
	troubleAlert    func(context.Context, Trouble)
	maxAttempts     int
	retryDelay      time.Duration
	delayLevels     []time.Duration
	shutdownTimeout time.Duration
	handlerTTL      time.Duration
	selector        string
	instance        string
	goroutines      int
	batchSize       int
	credentials     producer.Credentials
	namespace       string
	logger          *slog.Logger
	hooks           observe.Hooks
}

// Option configures a concurrent [Consumer] ([New]).
type Option interface{ applyConcurrent(*config) }

// OrderlyOption configures an orderly [Consumer] ([NewOrderly]).
type OrderlyOption interface{ applyOrderly(*config) }

// SharedOption configures either kind: it is both an [Option] and an
// [OrderlyOption]. Every option is one, except [WithBatchSize] (concurrent
// only: an orderly queue's suspended batch would come back whole).
type SharedOption interface {
	Option
	OrderlyOption
}

type sharedFunc func(*config)

func (f sharedFunc) applyConcurrent(c *config) { f(c) }
func (f sharedFunc) applyOrderly(c *config)    { f(c) }

type concurrentFunc func(*config)

func (f concurrentFunc) applyConcurrent(c *config) { f(c) }

// WithGuard makes the handler run once per business key (see
// [WithKeyFunc]) while the guard retains the key. Default: no guard, every
// delivery runs the handler. Required by the orderly consumer, whose
// attempt count lives in the guard's store. The concurrent consumer takes
// the attempt from the broker's redelivery count and claims through
// [idempotency.Guard.WithoutAttempts].
func WithGuard(g *idempotency.Guard) SharedOption { return sharedFunc(func(c *config) { c.guard = g }) }

// WithKeyFunc sets how the business key is read from a message. Default
// [Key]: the message keys joined by spaces. A message whose key is empty is
// parked (never run unguarded, never acknowledged silently). Never use the
// MsgID: resends get new ones.
func WithKeyFunc(fn func(*Message) string) SharedOption {
	return sharedFunc(func(c *config) { c.keyFunc = fn })
}

// WithParker sets where messages are parked after the attempt cap
// (usually a deadletter.Table). Required.
func WithParker(p Parker) SharedOption { return sharedFunc(func(c *config) { c.parker = p }) }

// WithAlert sets a function called once for each newly parked message,
// after it is recorded (with a [ReportedParker], such as
// deadletter.Table, also for a message an earlier park recorded but did
// not report). Default: none (parked messages are also logged at Error).
func WithAlert(fn func(context.Context, *DeadLetter)) SharedOption {
	return sharedFunc(func(c *config) { c.alert = fn })
}

// WithTroubleAlert sets a function called when messages stop moving
// without being parked: a guard, parker or retry store that fails five
// times in a row (once per run of failures; a success re-arms it), or a
// key still held by another consumer at the fourth delivery. Default: none
// (each is also logged at Error).
func WithTroubleAlert(fn func(context.Context, Trouble)) SharedOption {
	return sharedFunc(func(c *config) { c.troubleAlert = fn })
}

// WithMaxAttempts sets how many deliveries a failing message gets before
// it is parked, 1 to 16. Default 4 (three retries).
func WithMaxAttempts(n int) SharedOption { return sharedFunc(func(c *config) { c.maxAttempts = n }) }

// WithRetryDelay sets the wait before a retry, rounded up to a broker delay
// level (see [WithDelayLevels]). Default: the broker's schedule for
// retries, 10 s, 30 s, 1 m, 2 m, ... by attempt. For the orderly consumer it
// is the queue's suspend time; there the default is 1 s.
func WithRetryDelay(d time.Duration) SharedOption {
	return sharedFunc(func(c *config) { c.retryDelay = d })
}

// WithDelayLevels sets the broker's delay level table (its
// messageDelayLevel). Default the broker's default table.
func WithDelayLevels(levels []time.Duration) SharedOption {
	return sharedFunc(func(c *config) { c.delayLevels = slices.Clone(levels) })
}

// WithShutdownTimeout bounds how long [Consumer.Close] waits for running
// handlers before cancelling their ctx (it then waits for them to return).
// Default 30 s.
func WithShutdownTimeout(d time.Duration) SharedOption {
	return sharedFunc(func(c *config) { c.shutdownTimeout = d })
}

// WithHandlerTimeout sets a deadline on each handler call's ctx. A handler
// that overruns it fails (and is retried) only if it honours the ctx.
// Default: none.
func WithHandlerTimeout(d time.Duration) SharedOption {
	return sharedFunc(func(c *config) { c.handlerTTL = d })
}

// WithTagExpression subscribes to some tags only ("paid || refunded").
// Default "*".
func WithTagExpression(expr string) SharedOption {
	return sharedFunc(func(c *config) { c.selector = expr })
}

// WithInstanceName sets the client's instance name. Default: unique per
// consumer.
func WithInstanceName(name string) SharedOption {
	return sharedFunc(func(c *config) { c.instance = name })
}

// WithConcurrency sets how many deliveries are handled at once: that many
// handlers, or with [WithBatchSize] that many batches, whose handlers run
// at the same time (up to n × batch size handlers). Default 20.
func WithConcurrency(n int) SharedOption { return sharedFunc(func(c *config) { c.goroutines = n }) }

// WithBatchSize lets the client hand the concurrent consumer up to n
// messages of one queue at once (1 to 32, the client's pull size). Each
// message still gets its own handler call, ctx, retry and park; the
// handlers of a batch run at the same time (on goroutines kept between
// batches, until 10 s idle or Close), and [WithConcurrency] batches run
// at once. With a guard, the batch's keys are claimed in one round
// trip (with those of batches claiming at the same moment) and the
// successes completed together with those finishing then. The batch
// is acknowledged once every message in it is handled, a duplicate,
// parked or has its retry copy stored; a failing message is retried or
// parked alone. If Close begins before that, the whole batch is
// redelivered after a restart (messages already handled in it then come
// back too: duplicates the guard suppresses). Default 1. The orderly
// consumer takes one message at a time and refuses n > 1.
func WithBatchSize(n int) Option { return concurrentFunc(func(c *config) { c.batchSize = n }) }

// WithCredentials signs every request to the broker with an ACL account's
// keys: the client's own and the retry copies this package stores. The
// account needs SUB on the group (which covers its %RETRY% topic) and SUB
// on the topic. Default: none (a cluster without ACL).
func WithCredentials(c producer.Credentials) SharedOption {
	return sharedFunc(func(cfg *config) { cfg.credentials = c })
}

// WithNamespace consumes in a RocketMQ namespace, as the official clients'
// namespace option does: the group is "ns%group" and the topic "ns%topic"
// (its retry topic "%RETRY%ns%group"). Handlers see the topic without the
// namespace; the group this package reports and records (dead letters,
// [Trouble], hook events) is the namespaced one, the group's name on the
// broker, so consumers of one group name in two namespaces never share
// parked keys. Default none.
func WithNamespace(ns string) SharedOption {
	return sharedFunc(func(cfg *config) { cfg.namespace = ns })
}

// WithLogger sets the logger. Default: [slog.Default] at construction, so
// retries, parked messages, dead rows and failed runs are visible without
// wiring; slog.New(slog.DiscardHandler) silences it.
func WithLogger(l *slog.Logger) SharedOption { return sharedFunc(func(c *config) { c.logger = l }) }

// WithHooks wraps each handler run in the hooks' Handle (so a tracer
// continues the trace the message's properties carry) and reports what
// happens to each delivery: observe.Handled, Duplicate, Retry (reason
// "handler", "busy" or "store"), Parked (reason: the cause), LeaseExpired
// (a handler still running when its claim's lease ended) and ClaimLost (a
// completion refused because the claim was taken over). The handler's ctx
// ends with its lease, its batch and Close also when Handle returns a ctx
// not derived from the one it was given (its values are kept). Default
// none.
func WithHooks(h observe.Hooks) SharedOption { return sharedFunc(func(c *config) { c.hooks = h }) }

func newConfig(apply func(*config), orderly bool) (*config, error) {
	c := &config{
		keyFunc: Key, maxAttempts: 4, delayLevels: delaylevel.Default, shutdownTimeout: 30 * time.Second,
		selector: "*", goroutines: 20, batchSize: 1,
	}
	if orderly {
		c.retryDelay = time.Second
	}
	apply(c)
	var errs []error
	if orderly && c.guard == nil {
		errs = append(errs, errors.New("consumer: an orderly consumer needs a guard (WithGuard): its attempt count must survive restarts"))
	}
	if orderly && c.guard != nil && !c.guard.CountsAttempts() {
		errs = append(errs, errors.New("consumer: an orderly consumer's guard must count attempts (not one made by Guard.WithoutAttempts): the count is its retry cap"))
	}
	if c.parker == nil {
		errs = append(errs, errors.New("consumer: a parker is required (WithParker): failing messages must go somewhere a human sees"))
	}
	if c.keyFunc == nil {
		errs = append(errs, errors.New("consumer: nil key func"))
	}
	if c.maxAttempts < 1 || c.maxAttempts > maxBrokerRetries {
		errs = append(errs, fmt.Errorf("consumer: max attempts %d outside [1, %d]", c.maxAttempts, maxBrokerRetries))
	}
	if err := delaylevel.Validate(c.delayLevels); err != nil {
		errs = append(errs, fmt.Errorf("consumer: %w", err))
	} else if _, err := delaylevel.Level(c.delayLevels, c.retryDelay); err != nil {
		errs = append(errs, fmt.Errorf("consumer: retry delay: %w", err))
	}
	if c.retryDelay < 0 || c.shutdownTimeout < 0 || c.handlerTTL < 0 {
		errs = append(errs, errors.New("consumer: negative duration"))
	}
	if (c.credentials.AccessKey == "") != (c.credentials.SecretKey == "") {
		errs = append(errs, errors.New("consumer: credentials need both an access key and a secret key"))
	}
	if err := namespace.Validate(c.namespace); err != nil {
		errs = append(errs, fmt.Errorf("consumer: %w", err))
	}
	if c.batchSize < 1 || c.batchSize > maxBatchSize {
		errs = append(errs, fmt.Errorf("consumer: batch size %d outside [1, %d]", c.batchSize, maxBatchSize))
	}
	if c.goroutines < 1 {
		errs = append(errs, fmt.Errorf("consumer: concurrency %d < 1", c.goroutines))
	}
	if c.guard != nil && !orderly {
		if span := RedeliverySpan(c.maxAttempts, c.retryDelay, c.delayLevels, c.guard.Lease()); c.guard.Retention() < span {
			errs = append(errs, fmt.Errorf("consumer: guard retention %v shorter than the redelivery span %v", c.guard.Retention(), span))
		}
	}
	if c.logger == nil {
		c.logger = slog.Default()
	}
	return c, errors.Join(errs...)
}

// RedeliverySpan is the longest time over which a message's deliveries
// can be spread: the retry delays of maxAttempts-1 retries plus one lease
// per attempt (a crashed handler holds its key that long). A guard's
// retention must be at least this long or a late retry of an applied
// message would run again. retryDelay 0 means the broker schedule: retry
// r (0-based) waits delay level 3+r. nil levels means the broker default.
func RedeliverySpan(maxAttempts int, retryDelay time.Duration, levels []time.Duration, lease time.Duration) time.Duration {
	if len(levels) == 0 {
		levels = delaylevel.Default
	}
	span := time.Duration(maxAttempts) * lease
	for r := range maxAttempts - 1 {
		if retryDelay > 0 {
			l, _ := delaylevel.Level(levels, retryDelay)
			span += delaylevel.Of(levels, l)
		} else {
			span += delaylevel.Of(levels, 3+r)
		}
	}
	return span
}
