package producer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/seed157d4c4d/reliablemq/internal/clientlog"
	"github.com/seed157d4c4d/reliablemq/internal/namespace"
	"github.com/seed157d4c4d/reliablemq/internal/remoting"
	"github.com/seed157d4c4d/reliablemq/observe"
)

// TxState is what a local transaction tells the broker about its half
// message.
type TxState int

// Transaction states.
const (
	// TxUnknown leaves the half message to the broker's check-back.
	TxUnknown TxState = iota
	// TxCommit makes the message visible to consumers.
	TxCommit
	// TxRollback discards it.
	TxRollback
)

func (s TxState) String() string {
	switch s {
	case TxCommit:
		return "commit"
	case TxRollback:
		return "rollback"
	}
	return "unknown"
}

// HalfMessage is a transactional message the broker asks about: Topic is
// the topic it was sent to, MsgID its client message id (UNIQ_KEY). Body
// is nil, with a warning logged, when it is larger than [WithMaxBodySize]
// (give every producer of a group the same limit) or, on the producer's
// own connection, compressed and not inflatable (the official client
// hands such a body over as it came): decide by keys or MsgID then.
// Inflating stops at the limit on the producer's own connection only.
type HalfMessage struct {
	Message
	MsgID string
}

// TxChecker answers the broker's check-back for a half message whose
// outcome did not reach it (a crash after the local transaction, a lost
// one-way request). It is called one check at a time (check-backs come
// through the client and on the producer's own connection to each master,
// and wait for each other), with a ctx bounded by the check timeout
// (30 s); it must answer from durable state, and TxUnknown makes the
// broker ask again later.
type TxChecker interface {
	CheckTx(ctx context.Context, m HalfMessage) TxState
}

// Transactional sends RocketMQ transactional messages through one
// long-lived official client: a half message, then a local transaction,
// then commit or rollback. Messages follow the same rules as a
// [Producer]'s ([Validate], the body size limit, ordered topics), with the
// same orderly queue selector, credentials and instance naming ("reliablemq-tx-"
// and random hex by default). It is safe for concurrent use.
type Transactional struct {
	cfg     *config
	client  rocketmq.TransactionProducer
	checker TxChecker
	pending sync.Map // *primitive.Message -> *localCall

	gate gate // sends and checks
	// checkMu holds the checker to one check at a time, as TxChecker's
	// doc promises, whichever connection a check-back came on.
	checkMu sync.Mutex

	// The client's check-back goroutine answers the broker after our
	// checker returns, reading client state that the client's Shutdown
	// writes without synchronization (v2.1.2). Close therefore shuts the
	// client down only once that goroutine is idle or parked in
	// CheckLocalTransaction; see flushChecks.
	checks chan interface{} // the client's check-back queue; nil if not found
	// backs answers check-backs on connections of its own to every
	// master: see checkBacks.
	backs    *checkBacks
	parked   chan struct{} // a check-back after Close is parked
	shutDown chan struct{} // closed once the client is shut down
}

type localCall struct {
	ctx   context.Context
	local func(ctx context.Context, msgID string) TxState
	ran   bool
}

// TxResult is a transactional send's outcome.
type TxResult struct {
	Result
	// State is what the broker was told: TxCommit only if the local
	// transaction committed.
	State TxState
}

// txCheckTimeout bounds one check-back.
const txCheckTimeout = 30 * time.Second

// NewTransactional starts a transactional producer for group on
// nameServers; checker answers the broker's check-backs, which go to a
// live producer of the group, so keep one running per group. From the
// start it reports the group to every master of the cluster, and answers
// check-backs that come that way too (the official client reports it only
// to the brokers of topics it has sent to: a producer started after a
// crash, sending nothing yet, was asked nothing, and after its last
// check-back a broker drops a half message whose local transaction may
// have committed). It does no blocking I/O; the reports run in the
// background until Close.
func NewTransactional(nameServers []string, group string, checker TxChecker, opts ...TxOption) (*Transactional, error) {
	cfg, err := newConfig(func(c *config) {
		c.group = group
		for _, o := range opts {
			o.applyTx(c)
		}
	})
	if len(nameServers) == 0 {
		err = errors.Join(err, errors.New("producer: no name servers"))
	}
	if checker == nil {
		err = errors.Join(err, errors.New("producer: nil transaction checker"))
	}
	if err != nil {
		return nil, err
	}
	if cfg.instance == "" {
		cfg.instance = uniqueInstance("reliablemq-tx-")
	}
	clientlog.Contain()
	cfg.probe = newNameServerProbe(nameServers)
	p := &Transactional{cfg: cfg, checker: checker, parked: make(chan struct{}, 1), shutDown: make(chan struct{})}
	c, err := rocketmq.NewTransactionProducer(txListener{p}, clientOptions(cfg, nameServers)...)
	if err != nil {
		return nil, fmt.Errorf("producer: new transaction client: %w", err)
	}
	p.checks = checkQueue(c)
	if err := c.Start(); err != nil {
		return nil, fmt.Errorf("producer: start transaction client: %w", err)
	}
	p.client = c
	p.backs = newCheckBacks(p, nameServers)
	p.backs.start()
	return p, nil
}

// SendInTransaction sends m as a half message (invisible to consumers),
// then calls local with the message's client id, and commits or rolls back
// the half message by local's answer. local is not called when the half
// message was refused or not stored: the error is then a *[SendError], or
// [ErrClosed]; a [Transient] failure of the half message is retried first,
// by the default [WithRetry] policy. A nil error means the broker stored
// the half message; the
// result's State says what it was told. Transactional messages cannot be
// delayed. The commit or rollback is a one-way request: if it is lost, the
// broker's check-back asks the [TxChecker].
func (p *Transactional) SendInTransaction(ctx context.Context, m Message, local func(ctx context.Context, msgID string) TxState) (TxResult, error) {
	if err := p.gate.enter(); err != nil {
		return TxResult{}, err
	}
	defer p.gate.leave()
	if m.Delay != 0 {
		return TxResult{}, p.cfg.refused(ctx, &SendError{Topic: m.Topic, Keys: m.Keys, Outcome: Permanent,
			Err: fmt.Errorf("%w: transactional messages cannot be delayed", ErrInvalidMessage)})
	}
	m.Properties = p.cfg.hooks.InjectInto(ctx, m.Properties)
	pm, err := p.cfg.build(m)
	if err != nil {
		return TxResult{}, p.cfg.refused(ctx, &SendError{Topic: m.Topic, Keys: m.Keys, Outcome: Permanent, Err: err})
	}
	start := time.Now()
	r, err := p.sendHalf(ctx, m, pm, local)
	p.cfg.reportSend(ctx, m.Topic, m.Keys, time.Since(start), r.Result, err)
	return r, err
}

// sendHalf sends pm as a half message and settles it by local's answer.
func (p *Transactional) sendHalf(ctx context.Context, m Message, pm *primitive.Message,
	local func(ctx context.Context, msgID string) TxState) (TxResult, error) {
	call := &localCall{ctx: ctx, local: local}
	p.pending.Store(pm, call)
	defer p.pending.Delete(pm)
	// A [Transient] failure stored nothing and ran nothing: the half
	// message is sent again, as a Producer's send is (the default
	// [WithRetry] policy). The client fails the first sends of a topic
	// made at once this way ("route info not found": v2.1.2 publishes the
	// route it fetched for one of them only).
	wait := p.cfg.backoff
	var res *primitive.TransactionSendResult
	var msgID string
	attempt := 1
	for ; ; attempt++ {
		sctx, cancel := context.WithTimeout(ctx, p.cfg.sendTimeout)
		var err error
		res, err = p.client.SendMessageInTransaction(sctx, pm)
		cancel()
		msgID = pm.GetProperty(primitive.PropertyUniqueClientMessageIdKeyIndex)
		if err == nil {
			break
		}
		outcome, code := classify(err)
		if outcome != Transient || attempt >= p.cfg.attempts || call.ran {
			return TxResult{}, &SendError{Topic: m.Topic, Keys: m.Keys, MsgID: msgID, Outcome: outcome, Code: code, Attempts: attempt,
				Err: p.cfg.describe(ctx, err)}
		}
		p.cfg.emit(ctx, observe.Event{Kind: observe.SendRetry, Topic: m.Topic, Key: strings.Join(m.Keys, " "), MsgID: msgID,
			Attempt: attempt, Reason: outcome.String(), Err: err})
		p.cfg.logger.LogAttrs(ctx, slog.LevelWarn, "half message send failed, retrying",
			slog.String("topic", m.Topic), slog.Any("keys", m.Keys), slog.Int("attempt", attempt), slog.Any("error", err))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return TxResult{}, &SendError{Topic: m.Topic, Keys: m.Keys, MsgID: msgID, Outcome: Transient, Code: code,
				Attempts: attempt, Err: errors.Join(err, ctx.Err())}
		case <-t.C:
		}
		wait = min(2*wait, 2*time.Second)
	}
	r := TxResult{Result: Result{MsgID: msgID, Attempts: attempt}, State: TxUnknown}
	if res.SendResult != nil {
		r.OffsetMsgID, r.QueueOffset = res.OffsetMsgID, res.QueueOffset
		if res.MessageQueue != nil {
			r.Queue = res.MessageQueue.QueueId
		}
	}
	switch res.State {
	case primitive.CommitMessageState:
		r.State = TxCommit
	case primitive.RollbackMessageState:
		r.State = TxRollback
	}
	if !call.ran {
		// The broker answered but not SEND_OK: the client rolled the half
		// message back without running the local transaction.
		return r, &SendError{Topic: m.Topic, Keys: m.Keys, MsgID: msgID, Outcome: Transient, Attempts: attempt,
			Err: errors.New("half message not stored durably; rolled back")}
	}
	return r, nil
}

// Close stops new sends and check-backs, waits for those in progress
// (including the answer of a check-back to the broker) and shuts the
// client down. The official client leaves its check-back goroutine running
// after that (v2.1.2); checks it still delivers are answered TxUnknown
// without calling the checker. Close is idempotent and safe to call
// concurrently.
func (p *Transactional) Close() error {
	return p.gate.close(func() error {
		p.backs.close()
		p.flushChecks()
		defer close(p.shutDown)
		return p.client.Shutdown()
	})
}

// flushTimeout bounds how long Close waits for the check-back goroutine
// to finish answering the broker: the answer is one one-way request.
const flushTimeout = 10 * time.Second

// flushChecks returns once the client's check-back goroutine has finished
// answering any check-back the checker already answered: it hands the
// goroutine a value that it skips (the queue is unbuffered, so the handoff
// means the goroutine is back at its receive), unless a check-back that
// arrived after Close is parked in CheckLocalTransaction, which also keeps
// the goroutine away from the client until the shutdown is done.
func (p *Transactional) flushChecks() {
	if p.checks == nil {
		return
	}
	t := time.NewTimer(flushTimeout)
	defer t.Stop()
	select {
	case p.checks <- flushMarker{}:
	case <-p.parked:
	case <-t.C:
		p.cfg.logger.Warn("producer: the client's check-back goroutine did not come back; shutting down anyway")
	}
}

// flushMarker is what flushChecks hands the check-back goroutine; the
// client skips values of types it does not know, logging them as "unknown
// type" to its own logger (discarded unless the application set one), so
// the marker names itself.
type flushMarker struct{}

func (flushMarker) String() string {
	return "reliablemq: check-back queue flushed before shutdown (not an error)"
}

// checkQueue finds the official client's check-back queue, an unexported
// channel of its transaction producer (v2.1.2: transactionProducer.producer
// .callbackCh). It returns nil if the client's layout differs; a test pins
// it.
func checkQueue(c rocketmq.TransactionProducer) chan interface{} {
	v := reflect.ValueOf(c)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return nil
	}
	f := v.Elem().FieldByName("producer")
	if f.Kind() != reflect.Pointer || f.IsNil() || f.Elem().Kind() != reflect.Struct {
		return nil
	}
	f = f.Elem().FieldByName("callbackCh")
	if !f.IsValid() || f.Type() != reflect.TypeOf((chan interface{})(nil)) {
		return nil
	}
	return *(*chan interface{})(unsafe.Pointer(f.UnsafeAddr()))
}

// txListener adapts the client's callbacks.
type txListener struct{ p *Transactional }

// ExecuteLocalTransaction runs the local transaction of a send.
func (l txListener) ExecuteLocalTransaction(pm *primitive.Message) primitive.LocalTransactionState {
	v, ok := l.p.pending.Load(pm)
	if !ok {
		return primitive.RollbackMessageState // not ours: never commit what we did not run
	}
	call := v.(*localCall)
	call.ran = true
	return clientState(call.local(call.ctx, pm.GetProperty(primitive.PropertyUniqueClientMessageIdKeyIndex)))
}

// CheckLocalTransaction asks the checker about a half message.
func (l txListener) CheckLocalTransaction(ext *primitive.MessageExt) primitive.LocalTransactionState {
	p := l.p
	if p.gate.enter() != nil {
		// Closed: park until the client is shut down, so that the client's
		// answer cannot race its shutdown; the broker asks another
		// producer later.
		select {
		case p.parked <- struct{}{}:
		default:
		}
		<-p.shutDown
		return primitive.UnknowState
	}
	defer p.gate.leave()
	h := HalfMessage{Message: Message{Topic: ext.Topic, Body: ext.Body, Tag: ext.GetTags(),
		ShardingKey: cmp.Or(ext.GetShardingKey(), ext.GetProperty(remoting.PropJavaShardingKey))}}
	if rt := ext.GetProperty(remoting.PropRealTopic); rt != "" {
		h.Topic = rt
	}
	h.Topic = namespace.Strip(p.cfg.namespace, h.Topic)
	if keys := ext.GetKeys(); keys != "" {
		// Split only at the separator: a key may hold other whitespace.
		h.Keys = remoting.SplitKeys(keys)
	}
	h.MsgID = ext.GetProperty(primitive.PropertyUniqueClientMessageIdKeyIndex)
	if h.MsgID == "" {
		h.MsgID = ext.MsgId
	}
	return clientState(p.ask(h))
}

// ask runs the checker on h with a bounded ctx, after any other check in
// progress. A checker that panics answers TxUnknown (the client would
// otherwise lose its only check-back goroutine). A body larger than the
// max body size is dropped here, whichever connection the broker asked
// on, as HalfMessage's doc says.
func (p *Transactional) ask(h HalfMessage) (state TxState) {
	if len(h.Body) > p.cfg.maxBodySize {
		p.cfg.logger.Warn("producer: a check-back's body is larger than the max body size; the checker is asked without it",
			slog.String("msgId", h.MsgID), slog.Int("bytes", len(h.Body)), slog.Int("limit", p.cfg.maxBodySize))
		h.Body = nil
	}
	p.checkMu.Lock()
	defer p.checkMu.Unlock()
	// The checker is called back by the broker, with no caller ctx: the
	// work is bounded instead, from when the checker is called.
	ctx, cancel := context.WithTimeout(context.Background(), txCheckTimeout)
	defer cancel()
	defer func() {
		if r := recover(); r != nil {
			p.cfg.logger.LogAttrs(ctx, slog.LevelError, "producer: transaction checker panicked; answered unknown",
				slog.String("topic", h.Topic), slog.String("msg_id", h.MsgID), slog.Any("panic", r))
			state = TxUnknown
		}
	}()
	return p.checker.CheckTx(ctx, h)
}

func clientState(s TxState) primitive.LocalTransactionState {
	switch s {
	case TxCommit:
		return primitive.CommitMessageState
	case TxRollback:
		return primitive.RollbackMessageState
	}
	return primitive.UnknowState
}
