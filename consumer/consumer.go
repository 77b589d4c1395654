package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apache/rocketmq-client-go/v2"
	rmqconsumer "github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/clientlog"
	"github.com/seed157d4c4d/reliablemq/internal/combine"
	"github.com/seed157d4c4d/reliablemq/internal/delaylevel"
	"github.com/seed157d4c4d/reliablemq/internal/namespace"
	"github.com/seed157d4c4d/reliablemq/internal/safely"
	"github.com/seed157d4c4d/reliablemq/internal/token"
	"github.com/seed157d4c4d/reliablemq/observe"
)

// Errors.
var (
	// ErrClosed is returned by Start after Close.
	ErrClosed = errors.New("consumer: closed")
	// ErrNoKey is the parked error of a message without a business key
	// when a guard is in use.
	ErrNoKey = errors.New("consumer: message has no business key")
	// ErrKeyParked is the parked error of a message whose sharding key
	// has an earlier message parked (orderly, [ParkKey] policy).
	ErrKeyParked = errors.New("consumer: an earlier message of this sharding key is parked")
)

// Stats counts what a consumer did since it started.
type Stats struct {
	// Handled: handler succeeded (and, with a guard, the key was recorded
	// done); the message is acknowledged.
	Handled int64
	// Duplicates: acknowledged without running, the guard said done.
	Duplicates int64
	// Retries: failed attempts sent back or suspended for another try.
	Retries int64
	// Busy: deliveries whose key another consumer held; retried.
	Busy int64
	// Parked: messages newly recorded for manual handling, and those an
	// earlier park recorded and did not report ([ReportedParker]).
	Parked int64
	// StoreErrors: guard, parker or retry-store failures; each became a
	// retry, except a failure to record a handled key as done (the effect
	// is applied and acknowledged; see observe.NotRecorded).
	StoreErrors int64
}

type counters struct {
	handled, duplicates, retries, busy, parked, storeErrors atomic.Int64
}

// Consumer consumes one topic for one consumer group through the official
// push consumer, running a [Handler] per message with the guarantees the
// package doc lists. It is safe for concurrent use.
type Consumer struct {
	cfg     *config
	group   string
	topic   string
	handler Handler
	orderly bool
	policy  ParkPolicy
	client  rocketmq.PushConsumer
	retrier *retrySender // stores retry copies itself (concurrent mode)
	names   []string

	// mu guards started and closing; a run of handlers registers in
	// inflight under its read lock (see begin), so that none starts once
	// Close waits.
	mu       sync.RWMutex
	started  bool
	closing  bool
	inflight sync.WaitGroup
	// run is the parent of the handlers' ctx: cancelled when Close gives
	// up waiting. A root: the consumer outlives the ctx of any call that
	// made or started it.
	run       context.Context
	cancelRun context.CancelFunc
	stopping  chan struct{} // closed when Close begins
	shutdown  chan struct{} // closed once the client is shut down
	trouble   *trouble
	// completer records the guard completions of handlers that finish
	// at the same moment in one round trip, in the background.
	completer *completer
	// claims combines the guard claims of batches that claim at the same
	// moment.
	claims *combine.Batcher[*claimRequest]
	// workers run the handlers of a batch beyond its first message.
	workers *workers

	closeOnce sync.Once
	closeErr  error
	stats     counters
	// unsure holds the messages whose Park failed: the parker may have
	// recorded them all the same (a reply lost after the commit).
	unsure unsureParks
}

// unsureParks remembers, per message id, parks that failed, so that the
// park that then finds the message recorded reports it (alert, event,
// count) rather than take it for a park reported before. It cannot tell
// that record from one an earlier delivery made and reported (a parked
// message delivered again, whose park then fails once): that one is
// reported twice, an alert too many rather than none. It is this
// process's alone, and forgets everything when it holds maxUnsureParks: a
// park whose retry another process makes, or so forgotten, is recorded
// without its report. It is used only with a parker that is not a
// [ReportedParker]: one that is tells both apart itself.
type unsureParks struct {
	mu  sync.Mutex
	ids map[string]struct{}
}

const maxUnsureParks = 4096

func (u *unsureParks) add(msgID string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.ids == nil || len(u.ids) >= maxUnsureParks {
		u.ids = map[string]struct{}{}
	}
	u.ids[msgID] = struct{}{}
}

// take reports whether msgID's park had failed, and forgets it.
func (u *unsureParks) take(msgID string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	_, ok := u.ids[msgID]
	delete(u.ids, msgID)
	return ok
}

// New returns a concurrent consumer of topic for group: messages are
// handled in parallel, a failure is retried after the retry delay through
// the broker's retry topic, and after the attempt cap the message is
// parked. Call [Consumer.Start] to begin.
func New(nameServers []string, group, topic string, h Handler, opts ...Option) (*Consumer, error) {
	return newConsumer(nameServers, group, topic, h, false, ParkMessage, func(c *config) {
		for _, o := range opts {
			o.applyConcurrent(c)
		}
	})
}

func newConsumer(nameServers []string, group, topic string, h Handler, orderly bool, policy ParkPolicy, apply func(*config)) (*Consumer, error) {
	cfg, err := newConfig(apply, orderly)
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	if len(nameServers) == 0 {
		errs = append(errs, errors.New("consumer: no name servers"))
	}
	if group == "" || topic == "" {
		errs = append(errs, errors.New("consumer: empty group or topic"))
	}
	if h == nil {
		errs = append(errs, errors.New("consumer: nil handler"))
	}
	if policy == ParkKey {
		if _, ok := cfg.parker.(KeyParker); !ok {
			errs = append(errs, errors.New("consumer: the ParkKey policy needs a parker that implements KeyParker"))
		}
	} else if policy != ParkMessage {
		errs = append(errs, fmt.Errorf("consumer: unknown park policy %d", policy))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if cfg.instance == "" {
		cfg.instance = "reliablemq-c-" + token.New()[:12]
	}
	if cfg.guard != nil && !orderly {
		// The attempt comes from the broker's redelivery count: the
		// store's count would only cost a write per claim.
		cfg.guard = cfg.guard.WithoutAttempts()
	}
	group, topic = namespace.Wrap(cfg.namespace, group), namespace.Wrap(cfg.namespace, topic)
	c := &Consumer{cfg: cfg, group: group, topic: topic, handler: h, orderly: orderly, policy: policy,
		names: nameServers, stopping: make(chan struct{}),
		shutdown: make(chan struct{}), retrier: newRetrySender(group, cfg.credentials),
		trouble: &trouble{group: group, logger: cfg.logger, alert: cfg.troubleAlert}}
	c.run, c.cancelRun = context.WithCancel(context.Background())
	c.completer = newCompleter(c.completeClaims)
	c.claims = combine.New(maxClaimWaves, c.claimWaves)
	c.workers = newWorkers(c.stopping)
	return c, nil
}

// Start connects and begins consuming. The topic must exist. A broker with
// ACL on that refuses the account fails Start with [ErrAccessDenied].
// Like the client's Start it takes no ctx: its one round trip of its own,
// the access check, is bounded by a timeout.
func (c *Consumer) Start() error { return c.start(context.Background()) }

// start starts the consumer; ctx bounds the access check before it.
func (c *Consumer) start(ctx context.Context) error {
	// Before the lock: the check asks the brokers, and Close must not wait
	// for it.
	if err := c.checkAccess(ctx); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return ErrClosed
	}
	if c.started {
		return errors.New("consumer: already started")
	}
	clientlog.Contain()
	opts := []rmqconsumer.Option{
		rmqconsumer.WithNameServer(c.names),
		rmqconsumer.WithGroupName(c.group),
		rmqconsumer.WithInstance(c.cfg.instance),
		rmqconsumer.WithConsumerModel(rmqconsumer.Clustering),
		rmqconsumer.WithConsumeFromWhere(rmqconsumer.ConsumeFromFirstOffset),
		rmqconsumer.WithConsumeMessageBatchMaxSize(c.cfg.batchSize),
		rmqconsumer.WithConsumeGoroutineNums(c.cfg.goroutines),
		rmqconsumer.WithConsumerOrder(c.orderly),
	}
	if cr := c.cfg.credentials; cr.AccessKey != "" {
		opts = append(opts, rmqconsumer.WithCredentials(primitive.Credentials{AccessKey: cr.AccessKey,
			SecretKey: cr.SecretKey, SecurityToken: cr.SecurityToken}))
	}
	if !c.orderly {
		opts = append(opts, rmqconsumer.WithMaxReconsumeTimes(maxBrokerRetries))
	}
	client, err := rocketmq.NewPushConsumer(opts...)
	if err != nil {
		return fmt.Errorf("consumer: new client: %w", err)
	}
	listener := c.consumeConcurrently
	if c.orderly {
		listener = c.consumeOrderly
	}
	sel := rmqconsumer.MessageSelector{Type: rmqconsumer.TAG, Expression: c.cfg.selector}
	if err := client.Subscribe(c.topic, sel, listener); err != nil {
		return fmt.Errorf("consumer: subscribe %s: %w", c.topic, err)
	}
	if err := client.Start(); err != nil {
		return fmt.Errorf("consumer: start: %w", err)
	}
	c.client = client
	c.started = true
	return nil
}

// Run starts the consumer, consumes until ctx ends, then closes it (see
// [Consumer.Close]) and returns. It returns Start's error, or Close's, or
// nil after a clean stop.
func (c *Consumer) Run(ctx context.Context) error {
	if err := c.start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	return c.Close()
}

// Stats returns the counters so far.
func (c *Consumer) Stats() Stats {
	return Stats{
		Handled: c.stats.handled.Load(), Duplicates: c.stats.duplicates.Load(), Retries: c.stats.retries.Load(),
		Busy: c.stats.busy.Load(), Parked: c.stats.parked.Load(), StoreErrors: c.stats.storeErrors.Load(),
	}
}

// Close stops intake, waits for running handlers (up to the drain timeout,
// then cancels their ctx and waits for them to return), and shuts the
// client down, committing the offsets of what finished. Messages delivered
// but not handled are redelivered later. Nothing touches a store after
// Close returns. It is idempotent and safe to call concurrently.
func (c *Consumer) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closing = true
		started := c.started
		c.mu.Unlock()
		close(c.stopping)
		if !started {
			c.cancelRun()
			c.completer.close()
			close(c.shutdown)
			return
		}
		drained := make(chan struct{})
		go func() {
			c.inflight.Wait()
			close(drained)
		}()
		timer := time.NewTimer(c.cfg.shutdownTimeout)
		select {
		case <-drained:
		case <-timer.C:
			c.cancelRun()
			<-drained
		}
		timer.Stop()
		c.cancelRun()
		// Handlers are done and Close began before: no batch hands a
		// worker anything more, and idle workers exit.
		c.workers.wait()
		c.completer.close() // every wave waited for its completions
		var errs []error
		if err := c.client.Shutdown(); err != nil {
			errs = append(errs, fmt.Errorf("consumer: shutdown: %w", err))
		}
		c.retrier.close()
		c.closeErr = errors.Join(errs...)
		close(c.shutdown)
	})
	return c.closeErr
}

// begin registers a run of handlers, or of a batch's retry sends, which
// Close waits for; ok is false once Close has begun. A run that began
// calls end when it is over. Their ctx derives from c.run.
func (c *Consumer) begin() (ok bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closing {
		return false
	}
	c.inflight.Add(1)
	return true
}

func (c *Consumer) end() { c.inflight.Done() }

type verdict int

const (
	// unsettled: not settled yet (the zero value, so that nothing is
	// acknowledged by default); what a panic leaves becomes a retry.
	unsettled verdict = iota
	ack
	// busy: another consumer holds the key; come back after about a lease.
	busy
	retry
	closing
)

// retryLevel is the delay level before the attempt after attempt: the
// configured retry delay, or the broker's own schedule (3 + retries so far).
func (c *Consumer) retryLevel(attempt int) int {
	if c.cfg.retryDelay > 0 {
		l, _ := delaylevel.Level(c.cfg.delayLevels, c.cfg.retryDelay) // validated in New
		return l
	}
	return min(2+attempt, len(c.cfg.delayLevels))
}

// storeRetry stores the retry copy of it, due after delay level level, trying
// again with backoff while the broker cannot take it or cannot be
// reached, until the copy is stored (true) or Close begins (false). The
// failures are counted, logged and, past [troubleAfter] in a row,
// reported. A copy the broker refuses for the message itself can never be
// stored. A message whose handler failed is parked instead
// (CauseRetryRefused), trying again while the parker fails, and
// acknowledged once parked (true). One that did not run (its key held by
// another delivery, or a store failed) is kept here and handled again
// after the backoff, until its key is done or it ran (true, or parked as
// above if it failed), or Close begins (false): store failures never
// park.
// ctx is c.run: when Close gives up waiting, it cuts a send short, and
// c.stopping ends the loop.
func (c *Consumer) storeRetry(ctx context.Context, it *item, level int) bool {
	wait := 100 * time.Millisecond
	for {
		err := c.retrier.send(ctx, it.ext, it.m.Attempt, level)
		switch {
		case errors.Is(err, errRetryRefused) && !it.failed:
			// It cannot come back through the broker; parked, it would
			// never run, though its key may be free after the lease, or
			// the store back.
			select {
			case <-c.stopping:
				return false
			case <-time.After(wait):
			}
			wait = min(2*wait, 10*time.Second)
			it.v = unsettled
			c.handleBatch(ctx, []*item{it})
			switch it.v {
			case ack:
				return true
			case closing:
				return false
			case retry:
				level = c.retryLevel(it.m.Attempt)
			}
			continue
		case errors.Is(err, errRetryRefused):
			// The message's fault, not the broker's: parked, as the cap
			// would have it after its last retry.
			pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), bookkeeping)
			v := c.park(pctx, pctx, it.m, nil, it.m.Attempt, err, CauseRetryRefused)
			cancel()
			if v == ack {
				return true
			}
		default:
			c.trouble.observe(ctx, OpRetryStore, err, it.ext.GetKeys(), it.ext.MsgId)
			if err == nil {
				return true
			}
			c.stats.storeErrors.Add(1)
			c.cfg.logger.LogAttrs(ctx, slog.LevelWarn, "retry copy not stored, trying again", slog.String("msg_id", it.ext.MsgId),
				slog.Duration("in", wait), slog.Any("error", err))
		}
		select {
		case <-c.stopping:
			return false
		case <-time.After(wait):
		}
		wait = min(2*wait, 10*time.Second)
	}
}

// event reports what happened to m.
func (c *Consumer) event(ctx context.Context, kind observe.Kind, m *Message, reason string, err error) {
	if c.cfg.hooks.Event == nil {
		return
	}
	// A report: its panic changes nothing (a duplicate stays acknowledged,
	// a handled message handled).
	safely.Report(ctx, c.cfg.logger, "event hook", func() {
		c.cfg.hooks.Event(ctx, observe.Event{Kind: kind, Topic: m.Topic, Group: c.group, Key: strings.Join(m.Keys, " "),
			MsgID: m.MsgID, Attempt: m.Attempt, Reason: reason, Err: err})
	})
}

func (c *Consumer) storeError(ctx context.Context, m *Message, op string, err error) verdict {
	c.stats.storeErrors.Add(1)
	c.event(ctx, observe.Retry, m, "store", err)
	c.cfg.logger.LogAttrs(ctx, slog.LevelWarn, "store failed, retrying", slog.String("op", op),
		slog.String("msg_id", m.MsgID), slog.Any("error", err))
	return retry
}

// park records m for manual handling and acknowledges it; if recording
// fails the message is retried instead. It reports m with ev's span (the
// handler's, when there was one).
//
// Once the parker recorded m, m is settled: a panic after that (the Event
// hook, the guard's store forgetting the key) is logged and m stays
// parked and acknowledged. Made a retry, it would run again, and its dead
// letter, replayed later, once more.
func (c *Consumer) park(ctx, ev context.Context, m *Message, claim *idempotency.Claim, attempts int, cause error, kind Cause) (v verdict) {
	parked := false
	defer func() {
		if !parked {
			return // a panic before goes on: m is not settled
		}
		if p := recover(); p != nil {
			c.panicked(ctx, m, p)
			v = ack
		}
	}()
	text := cause.Error()
	var pe *PanicError
	if errors.As(cause, &pe) {
		text += "\n" + string(pe.Stack)
	}
	dl := &DeadLetter{Group: c.group, Topic: m.Topic, MsgID: m.MsgID, Keys: m.Keys, Tag: m.Tag,
		ShardingKey: m.ShardingKey, Properties: m.Properties, Body: m.Body, Attempts: attempts,
		LastError: text, Cause: kind, ReplayOf: m.ReplayOf}
	inserted, err := c.cfg.parker.Park(ctx, dl)
	c.trouble.observe(ctx, OpPark, err, strings.Join(m.Keys, " "), m.MsgID)
	if err != nil {
		if _, ok := c.cfg.parker.(ReportedParker); !ok {
			// A ReportedParker says itself, on the next park, whether the
			// record this one may have made was reported: remembered here
			// as well, a record an earlier delivery made and reported
			// would be reported again.
			c.unsure.add(m.MsgID)
		}
		if claim != nil {
			_ = claim.Release(ctx) // best effort; the lease frees the key otherwise
		}
		return c.storeError(ctx, m, "park", err)
	}
	parked = true
	if c.unsure.take(m.MsgID) {
		// A park of m failed before: if that one recorded m after all, it
		// was never reported, and this one is the first to know.
		inserted = true
	}
	if claim != nil {
		// Forget the key, so a replay of the parked message runs.
		if ferr := claim.Forget(ctx); ferr != nil {
			c.cfg.logger.LogAttrs(ctx, slog.LevelWarn, "forget parked key", slog.String("msg_id", m.MsgID), slog.Any("error", ferr))
		}
	}
	if inserted {
		// A ReportedParker's record of an earlier park, not reported, is
		// reported as recorded (dl is the record): this delivery may have
		// failed otherwise, or, under ParkKey, been parked behind that
		// record, its own.
		kind, attempts = dl.Cause, dl.Attempts
		if dl.LastError != text {
			cause = errors.New(dl.LastError)
		}
		c.stats.parked.Add(1)
		c.event(ev, observe.Parked, m, string(kind), cause)
		c.cfg.logger.LogAttrs(ctx, slog.LevelError, "message parked for manual handling", slog.String("group", c.group),
			slog.String("topic", m.Topic), slog.String("msg_id", m.MsgID), slog.Any("keys", m.Keys),
			slog.Int("attempt", attempts), slog.String("cause", string(kind)), slog.Any("error", cause))
		if c.cfg.alert != nil {
			// Parked: a panic in the alert must not make it a retry too.
			safely.Report(ctx, c.cfg.logger, "alert", func() { c.cfg.alert(ctx, dl) })
		}
		if rp, ok := c.cfg.parker.(ReportedParker); ok {
			if err := rp.Reported(ctx, dl); err != nil {
				c.cfg.logger.LogAttrs(ctx, slog.LevelWarn, "parked message reported, but not marked so: a later park of it (a redelivery) reports it again",
					slog.String("msg_id", m.MsgID), slog.Any("error", err))
			}
		}
	}
	return ack
}
