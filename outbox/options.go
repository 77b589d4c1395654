package outbox

import (
	"context"
	"log/slog"
	"time"

	"github.com/seed157d4c4d/reliablemq/observe"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// common is the configuration a [Relay] and a [TxMessenger] share.
type common struct {
	table  string
	logger *slog.Logger
	hooks  observe.Hooks
}

type config struct {
	common
	lease       time.Duration
	maxAttempts int
	backoff     time.Duration
	maxBackoff  time.Duration
	concurrency int
	alert       func(context.Context, *Row)
}

type txConfig struct {
	common
	credentials producer.Credentials
	namespace   string
}

// Option configures a [Relay].
type Option interface{ applyRelay(*config) }

// TxOption configures a [TxMessenger].
type TxOption interface{ applyTx(*txConfig) }

// SharedOption configures a [Relay] or a [TxMessenger]: it is both an
// [Option] and a [TxOption].
type SharedOption interface {
	Option
	TxOption
}

type relayOption func(*config)

func (f relayOption) applyRelay(c *config) { f(c) }

type txOption func(*txConfig)

func (f txOption) applyTx(c *txConfig) { f(c) }

type sharedOption func(*common)

func (f sharedOption) applyRelay(c *config) { f(&c.common) }
func (f sharedOption) applyTx(c *txConfig)  { f(&c.common) }

// WithTable sets the outbox table, a plain identifier of at most 58
// bytes. Default "mq_log". The table "<name>_order" (mq_log_order in the
// migrations) holds the per-sharding-key locks that keep a key's rows in
// enqueue order; create both for another name.
func WithTable(name string) SharedOption { return sharedOption(func(c *common) { c.table = name }) }

// WithLogger sets the logger. Default: [slog.Default] at construction, so
// retries, parked messages, dead rows and failed runs are visible without
// wiring; slog.New(slog.DiscardHandler) silences it.
func WithLogger(l *slog.Logger) SharedOption { return sharedOption(func(c *common) { c.logger = l }) }

// WithHooks reports what happens to rows (observe.RowRetry,
// observe.RowDead, observe.ClaimLost) and adds the trace context of the
// enqueuing ctx to each message's properties, so a row sent later by
// reconcile keeps the trace of the transaction that wrote it. Sends are
// reported by the producer's own hooks (producer.WithHooks). A panic in
// the Event hook (or the alert) is logged at Error and changes nothing: it
// runs on the relay's own goroutines, after the row's fate is recorded.
// Default none.
func WithHooks(h observe.Hooks) SharedOption { return sharedOption(func(c *common) { c.hooks = h }) }

// WithLease sets how long a claimed row is reserved for the relay that
// claimed it; a relay that dies mid-batch frees its rows after this.
// Default 1 minute.
func WithLease(d time.Duration) Option { return relayOption(func(c *config) { c.lease = d }) }

// WithMaxAttempts sets how many failed sends make a row Dead. Default 10.
func WithMaxAttempts(n int) Option { return relayOption(func(c *config) { c.maxAttempts = n }) }

// WithBackoff sets the wait after the first failed send and its cap; the
// wait doubles per attempt with jitter (between half and all of it).
// Default 1 s, capped at 10 minutes.
func WithBackoff(first, max time.Duration) Option {
	return relayOption(func(c *config) { c.backoff, c.maxBackoff = first, max })
}

// WithConcurrency sets how many sends a relay runs at once. Default 16.
func WithConcurrency(n int) Option { return relayOption(func(c *config) { c.concurrency = n }) }

// WithAlert sets a function called once for each row given up on: made
// Dead, or, Sent but never confirmed, out of resends or refused for good
// on one (its Status stays Sent). Default none (such rows are also logged
// at Error).
func WithAlert(fn func(context.Context, *Row)) Option {
	return relayOption(func(c *config) { c.alert = fn })
}

// WithCredentials signs the [TxMessenger]'s requests with an ACL
// account's keys (see [producer.WithCredentials]). Default: none (a
// cluster without ACL). A [Relay] sends through the [Publisher] it is
// given, which carries its own credentials.
func WithCredentials(c producer.Credentials) TxOption {
	return txOption(func(cfg *txConfig) { cfg.credentials = c })
}

// WithNamespace sends the [TxMessenger]'s messages in a RocketMQ namespace
// (see [producer.WithNamespace]); the table keeps the topics without it.
// Default none. A [Relay] sends through the [Publisher] it is given,
// which carries its own namespace.
func WithNamespace(ns string) TxOption {
	return txOption(func(cfg *txConfig) { cfg.namespace = ns })
}
