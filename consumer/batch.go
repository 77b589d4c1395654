package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	rmqconsumer "github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/delaylevel"
	"github.com/seed157d4c4d/reliablemq/observe"
)

// item is one message of a batch on its way through guard, handler and
// parker.
type item struct {
	ext      *primitive.MessageExt
	m        *Message // &msg
	msg      Message  // in the item: one allocation for both
	key      string
	claim    *idempotency.Claim
	claimErr error
	v        verdict
	// failed: its handler ran and failed (a retry for that, not for a
	// busy key or a store's failure).
	failed bool
	// keyParked: (orderly, [ParkKey]) its sharding key had a parked
	// message when checked before the claim.
	keyParked bool
	done      completion // its claim's completion, once handled
	// Set while the completion is recorded in the background: the
	// handler's ctx and its hooks' end, for settle.
	hctx context.Context
	end  func(error)
}

// newItems returns the items of msgs, their messages taken out of
// namespace ns, as group (with its namespace) consumes them.
func newItems(msgs []*primitive.MessageExt, ns, group string) []*item {
	items, all := make([]*item, len(msgs)), make([]item, len(msgs))
	for i, ext := range msgs {
		it := &all[i]
		it.ext, it.m = ext, &it.msg
		fromClient(ext, ns, group, it.m)
		items[i] = it
	}
	return items
}

// completion is one handled message's claim, completed by the completer
// together with those of handlers that finish at the same moment.
type completion struct {
	claim *idempotency.Claim
	err   error
	wave  *sync.WaitGroup // Done once err is set
}

// maxCompletions bounds the claims one completion round trip records: as
// many as one claim round trip carries. Each round trip costs the store a
// statement and, on MySQL, a commit, which cost it more than many rows do;
// completions queue only while the round trip before them runs, so a
// larger bound only lets a busy consumer make fewer.
const maxCompletions = maxClaimWaves * maxBatchSize

// completeClaims records a group of completions in one round trip; each
// gets its own result.
func (c *Consumer) completeClaims(ctx context.Context, batch []*completion) {
	claims := make([]*idempotency.Claim, len(batch))
	for i, b := range batch {
		claims[i] = b.claim
	}
	ctx, cancel := context.WithTimeout(ctx, bookkeeping)
	defer cancel()
	errs := contain(len(claims), func() []error { return c.cfg.guard.CompleteBatch(ctx, claims) })
	for i, err := range errs {
		batch[i].err = err
	}
}

// complete records the effect of it as done with a store without batch
// calls (one round trip per claim either way), right after its handler
// succeeded; with batch calls the completer does (see handle). Its
// events carry ev's span (the handler's); its store calls are bound by
// bctx.
func (c *Consumer) complete(bctx, ev context.Context, it *item) {
	req := &it.done
	req.claim = it.claim
	// A store that panics fails the completion, as in a batch.
	req.err = contain(1, func() []error { return []error{it.claim.Complete(bctx)} })[0]
	c.completed(bctx, ev, it)
}

// completed reports what recording the completion of it came to.
func (c *Consumer) completed(bctx, ev context.Context, it *item) {
	req := &it.done
	lost := errors.Is(req.err, idempotency.ErrLostClaim)
	if !lost {
		// A lost claim is another delivery's now, not a failing store.
		c.trouble.observe(bctx, OpComplete, req.err, it.key, it.m.MsgID)
	}
	switch {
	case lost:
		c.event(ev, observe.ClaimLost, it.m, "guard", req.err)
	case req.err != nil:
		c.stats.storeErrors.Add(1)
		c.event(ev, observe.NotRecorded, it.m, "", req.err)
	}
	if req.err != nil {
		// The effect is applied: acknowledging is right; a redelivery after
		// the lease could apply it again.
		c.cfg.logger.LogAttrs(bctx, slog.LevelError, "handled but not recorded as done",
			slog.String("msg_id", it.m.MsgID), slog.String("keys", it.key), slog.Any("error", req.err))
	}
}

// consumeConcurrently handles a batch from the client (one message unless
// [WithBatchSize]). The client's result is all or nothing: ConsumeSuccess
// acknowledges every message of the batch, anything else asks the client
// to send every one back (which this package never relies on). So the
// batch is acknowledged only once every message in it is settled:
// handled, a duplicate, parked, or its retry copy stored by this package.
// When Close begins before that, the whole batch is left unacknowledged
// and comes back after a restart.
func (c *Consumer) consumeConcurrently(ctx context.Context, msgs ...*primitive.MessageExt) (rmqconsumer.ConsumeResult, error) {
	items := newItems(msgs, c.cfg.namespace, c.group)
	c.handleBatch(ctx, items)
	for _, it := range items {
		if it.v == closing {
			return c.giveBack()
		}
	}
	if !c.storeRetries(items) {
		return c.giveBack()
	}
	return rmqconsumer.ConsumeSuccess, nil
}

// storeRetries stores the retry copies of the items not acknowledged, and
// reports whether every one is stored; false once Close began.
//
// Storing retry copies is work Close waits for, as handlers are: a send
// in flight when Close returns would touch the broker after it. The
// registration ends in a defer, whatever panics in here, so that Close is
// never left waiting for it; and before giveBack, which waits for the
// shutdown, which waits for it.
func (c *Consumer) storeRetries(items []*item) bool {
	began := false
	defer func() {
		if began {
			c.end()
		}
	}()
	for _, it := range items {
		if it.v == ack {
			continue
		}
		if !began {
			if began = c.begin(); !began {
				return false
			}
		}
		var level int
		switch it.v {
		case retry:
			level = c.retryLevel(it.m.Attempt)
		case busy:
			// Wait about a lease, so a key held by a crashed consumer is
			// free when the message comes back.
			var err error
			if level, err = delaylevel.Level(c.cfg.delayLevels, c.cfg.guard.Lease()); err != nil {
				level = len(c.cfg.delayLevels)
			}
		}
		if !c.storeRetry(c.run, it, level) {
			// Close began. Copies already stored for others of the batch
			// make those come back twice: at least once, never lost.
			return false
		}
	}
	return true
}

// giveBack leaves a batch unacknowledged: the client drops results after
// shutdown, so its messages are redelivered after a restart. Their
// send-back is never asked for: the client loses a message the broker
// refuses.
func (c *Consumer) giveBack() (rmqconsumer.ConsumeResult, error) {
	<-c.shutdown
	return rmqconsumer.ConsumeRetryLater, nil
}

// bookkeeping bounds store calls made after the handler, which must not be
// cut short by the handler's own cancellation.
const bookkeeping = 10 * time.Second

// handleBatch runs items through guard, handler and parker and sets each
// one's verdict. The handlers of a batch run at once, each on its own
// message; with a guard their keys are claimed in one round trip before,
// and each success is handed to the completer as its handler returns. A key that occurs more than
// once in the batch is claimed again for each later message, after the
// earlier one is settled (then a duplicate if it was handled).
//
// A panic outside a handler (in a hook, the key func, the parker or the
// guard's store: each the program's bug) is logged at ERROR with its
// stack, and every message it left unsettled is retried: it may run again.
func (c *Consumer) handleBatch(parent context.Context, items []*item) {
	if !c.begin() {
		for _, it := range items {
			it.v = closing
		}
		return
	}
	defer c.end()
	defer func() {
		v := recover()
		if v != nil {
			c.panicked(parent, items[0].m, v)
		}
		for _, it := range items {
			if it.v == unsettled {
				it.v = retry
				c.stats.retries.Add(1)
				c.event(parent, observe.Retry, it.m, "panic", fmt.Errorf("panic: %v", v))
			}
		}
	}()
	// The handlers' ctx ends with the batch, or when Close gives up
	// waiting. What handlers derive from it registers with it, not with
	// the consumer's c.run.
	run, cancel := context.WithCancel(c.run)
	defer cancel()
	if c.cfg.guard == nil {
		if len(items) == 1 { // the default: no closure to allocate
			items[0].v = c.handle(run, parent, nil, items[0])
			return
		}
		c.each(items, func(it *item) { it.v = c.handle(run, parent, nil, it) })
		return
	}
	c.guardedBatch(run, parent, items)
}

// guardedBatch claims the keys of items, wave by wave (each key once per
// wave), and runs the handlers of those acquired. It is apart from
// handleBatch so that an unguarded delivery's stack stays small.
func (c *Consumer) guardedBatch(run, parent context.Context, items []*item) {
	bctx, cancel := context.WithTimeout(context.WithoutCancel(parent), bookkeeping)
	defer cancel()
	pending := make([]*item, 0, len(items))
	for _, it := range items {
		it.key = c.cfg.keyFunc(it.m)
		if v, settled := c.beforeClaim(bctx, it); settled {
			it.v = v
			continue
		}
		pending = append(pending, it)
	}
	for len(pending) > 0 {
		wave, rest := pending, []*item(nil)
		if len(pending) > 1 {
			// Each key once per wave, in batch order.
			wave = make([]*item, 0, len(pending))
			seen := make(map[string]bool, len(pending))
			for _, it := range pending {
				if seen[it.key] {
					rest = append(rest, it)
					continue
				}
				seen[it.key] = true
				wave = append(wave, it)
			}
		}
		// A wave after another starts when that one's handlers are done:
		// its claim, and the calls after its handlers, get a bound of
		// their own if the batch's is mostly used up.
		wctx, cancel := renewed(bctx, time.Now())
		c.guardedWave(run, wctx, wave)
		cancel()
		pending = rest
	}
}

// renewed returns bctx, a bound on bookkeeping store calls, while at least
// half of it is left at now, else a new bound of [bookkeeping]: made
// before a claim, bctx may be used up by the time a slow handler (within
// its lease) returns.
func renewed(bctx context.Context, now time.Time) (context.Context, context.CancelFunc) {
	if d, ok := bctx.Deadline(); ok && d.Sub(now) >= bookkeeping/2 {
		return bctx, noCancel
	}
	return context.WithTimeout(context.WithoutCancel(bctx), bookkeeping)
}

func noCancel() {}

// beforeClaim reports a replay received, settles a guarded message that
// must not be claimed (one without a key), and (orderly, [ParkKey]) asks
// whether the message's sharding key has a parked message: a failed
// check makes it a retry before a claim counts an attempt its handler
// never made. A message whose key has one is parked once claimed (see
// [Consumer.handle]): a redelivery of one already handled is then
// acknowledged as a duplicate, not parked behind its key, where its
// replay would hold the key's later messages. A replay waits only for
// messages of its key parked before it: replayed oldest first, the key
// drains.
func (c *Consumer) beforeClaim(bctx context.Context, it *item) (verdict, bool) {
	m := it.m
	if v, settled := c.replayReceived(bctx, m); settled {
		return v, true
	}
	if c.orderly && c.policy == ParkKey && m.ShardingKey != "" {
		parked, err := c.cfg.parker.(KeyParker).HasParked(bctx, c.group, m.ShardingKey, m.ReplayOf)
		c.trouble.observe(bctx, OpCheckParked, err, m.ShardingKey, m.MsgID)
		if err != nil {
			return c.storeError(bctx, m, "check parked key", err), true
		}
		it.keyParked = parked
	}
	if it.key == "" {
		return c.park(bctx, bctx, m, nil, m.Attempt, ErrNoKey, CausePermanent), true
	}
	return 0, false
}

// replayReceived reports m, a replay of this group's dead letter, as
// received to the parker when it tracks replays; a failed report makes m
// a retry (settled true), so the dead letter does not stop holding its
// key's order before the replay has its place in the queue.
func (c *Consumer) replayReceived(ctx context.Context, m *Message) (verdict, bool) {
	t, ok := c.cfg.parker.(ReplayTracker)
	if !ok || m.ReplayOf == 0 {
		return 0, false
	}
	err := t.ReplayReceived(ctx, c.group, m.ReplayOf)
	c.trouble.observe(ctx, OpReplayReceived, err, m.ShardingKey, m.MsgID)
	if err != nil {
		return c.storeError(ctx, m, "report replay received", err), true
	}
	return 0, false
}

// guardedWave claims the keys of wave (distinct), in one round trip
// shared with the waves of other batches claiming at the same moment, and
// runs the handlers of those acquired; each success is completed as soon
// as its handler returns, combined with others finishing then.
func (c *Consumer) guardedWave(run, bctx context.Context, wave []*item) {
	req := &claimRequest{keys: make([]string, len(wave))}
	for i, it := range wave {
		req.keys[i] = it.key
	}
	if !c.cfg.guard.Batched() {
		// Without a batch claim, combining saves no round trip: it would
		// only run the claims of concurrent batches one after another.
		req.claims, req.errs = c.cfg.guard.ClaimBatch(bctx, req.keys)
	} else if !c.claims.Do(bctx, req) {
		req.errs = make([]error, len(wave))
		for i := range req.errs {
			req.errs[i] = bctx.Err()
		}
		req.claims = make([]*idempotency.Claim, len(wave))
	}
	// One lease ctx for the wave: claims made in one round trip share
	// their deadline, so handle makes its own only for a claim that
	// differs.
	var deadline time.Time
	for i, it := range wave {
		it.claim, it.claimErr = req.claims[i], req.errs[i]
		c.trouble.observe(bctx, OpClaim, req.errs[i], it.key, it.m.MsgID)
		if it.claim != nil && (deadline.IsZero() || it.claim.Deadline().Before(deadline)) {
			deadline = it.claim.Deadline()
		}
	}
	if !deadline.IsZero() {
		var cancel context.CancelFunc
		run, cancel = context.WithDeadline(run, deadline)
		defer cancel()
	}
	// The completions the handlers hand to the completer: each recorded
	// right after its handler succeeded, not after the wave's slowest
	// handler (the claim's lease keeps running, and a key whose lease ends
	// before it is recorded may run again); the wave waits for them all,
	// also when a panic cuts it short (the completer writes to the items).
	var pending sync.WaitGroup
	defer pending.Wait()
	for _, it := range wave {
		it.done.wave = &pending
	}
	c.each(wave, func(it *item) { it.v = c.handle(run, bctx, it.claim, it) })
	pending.Wait()
	// The store calls are done, but what settle reports with the bound
	// (the logger, the trouble alert) must not find it used up by the
	// wave's slowest handler: renewed, as a handler completing its own
	// message renews it.
	sctx, cancel := renewed(bctx, time.Now())
	defer cancel()
	for _, it := range wave {
		if it.end != nil {
			c.settle(sctx, it)
		}
	}
}

// settle finishes a handled message whose completion the completer
// recorded: what the completion came to, the Handled event, and the
// hooks' end (its events land in the handler's span).
//
// A panic in it (the hooks' end, the logger) is contained here, as handle
// contains it for a message completed in its handler: the message is
// handled and acknowledged either way, and the wave's other messages
// must still be settled (their hooks' end called, a failed completion
// reported).
func (c *Consumer) settle(bctx context.Context, it *item) {
	end := it.end
	it.end = nil
	counted := false
	defer func() {
		if p := recover(); p != nil {
			c.panicked(bctx, it.m, p)
			if !counted {
				c.stats.handled.Add(1)
			}
		}
	}()
	defer end(nil)
	c.completed(bctx, it.hctx, it)
	c.event(it.hctx, observe.Handled, it.m, "", nil)
	c.stats.handled.Add(1)
	counted = true
}

// contain runs a combined store call, which must not panic: a panic in it
// would leave the other callers of its round trip waiting for ever. A
// panic becomes every key's error.
func contain(n int, call func() []error) (errs []error) {
	defer func() {
		if v := recover(); v != nil {
			err := fmt.Errorf("consumer: guard store panicked: %v\n%s", v, debug.Stack())
			errs = make([]error, n)
			for i := range errs {
				errs[i] = err
			}
		}
	}()
	return call()
}

// claimRequest is one wave's keys and, once claimed, their claims and
// errors, one each per key.
type claimRequest struct {
	keys   []string
	claims []*idempotency.Claim
	errs   []error
}

// maxClaimWaves bounds the waves one claim round trip carries (each at
// most [maxBatchSize] keys).
const maxClaimWaves = 16

// claimWaves claims the keys of a combined group of waves in one round
// trip. The waves are distinct batches' (a key in two of them is claimed
// by the first, and Busy for the second, as two concurrent claims would
// be).
func (c *Consumer) claimWaves(ctx context.Context, reqs []*claimRequest) {
	n := 0
	for _, r := range reqs {
		n += len(r.keys)
	}
	keys := make([]string, 0, n)
	for _, r := range reqs {
		keys = append(keys, r.keys...)
	}
	// The leader's ctx must not fail the others' claims.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), bookkeeping)
	defer cancel()
	var claims []*idempotency.Claim
	errs := contain(len(keys), func() (errs []error) {
		claims, errs = c.cfg.guard.ClaimBatch(ctx, keys)
		return errs
	})
	if claims == nil {
		claims = make([]*idempotency.Claim, len(keys))
	}
	for _, r := range reqs {
		k := len(r.keys)
		r.claims, r.errs = claims[:k:k], errs[:k:k]
		claims, errs = claims[k:], errs[k:]
	}
}

// each runs fn on every item at once, the first in the calling goroutine
// and the others on workers, and returns when all have returned.
func (c *Consumer) each(items []*item, fn func(*item)) {
	if len(items) > 1 {
		var wg sync.WaitGroup
		wg.Add(len(items) - 1)
		for _, it := range items[1:] {
			c.workers.run(func() {
				defer wg.Done()
				fn(it)
			})
		}
		defer wg.Wait()
	}
	fn(items[0])
}

// handle runs one message's handler: with a guard, claim is its claim (nil
// with claimErr set when the claim failed). bctx bounds store calls after
// the handler; without a guard it is the client's ctx and park makes its
// own bound.
//
// A panic in it outside the handler (see [Consumer.handleBatch]) leaves
// the verdict it returned, or a retry if it had none; but once the
// handler succeeded the message is settled (its effect applied) and
// acknowledged, as when its completion fails: a retry would find its key
// neither done nor released, and run the handler again after the lease.
func (c *Consumer) handle(run, bctx context.Context, claim *idempotency.Claim, it *item) (v verdict) {
	succeeded := false
	defer func() {
		if p := recover(); p != nil {
			c.panicked(bctx, it.m, p)
			switch {
			case v != unsettled:
			case succeeded:
				v = ack
				c.stats.handled.Add(1)
			default:
				v = retry
				c.stats.retries.Add(1)
				c.event(bctx, observe.Retry, it.m, "panic", fmt.Errorf("panic: %v", p))
				if claim != nil && claim.Outcome == idempotency.Acquired {
					// Free the key for the retry now, not after the lease
					// (an orderly queue would stall that long). The handler
					// did not succeed: nothing to apply twice.
					contain(1, func() []error { return []error{claim.Release(bctx)} })
				}
			}
		}
	}()
	m := it.m
	hctx := run
	if c.cfg.guard == nil && m.ReplayOf != 0 {
		rctx, cancel := context.WithTimeout(bctx, bookkeeping)
		v, settled := c.replayReceived(rctx, m)
		cancel()
		if settled {
			return v
		}
	}
	if c.cfg.guard != nil {
		if it.claimErr != nil || claim.Outcome != idempotency.Acquired {
			return c.notAcquired(bctx, claim, it)
		}
		if c.orderly {
			m.Attempt = claim.Attempt // survives restarts, unlike the client's count
			if it.keyParked {
				// Parked behind its key; its claim forgotten, so that its
				// replay runs.
				return c.park(bctx, bctx, m, claim, m.Attempt, ErrKeyParked, CauseKeyParked)
			}
		}
		// Past the lease another delivery may take the key over: the
		// handler's ctx ends with it.
		if d, ok := hctx.Deadline(); !ok || claim.Deadline().Before(d) {
			var cancelLease context.CancelFunc
			hctx, cancelLease = context.WithDeadline(hctx, claim.Deadline())
			defer cancelLease()
		}
		m.ClaimToken = claim.Token()
	}
	if c.cfg.handlerTTL > 0 {
		var cancelTTL context.CancelFunc
		hctx, cancelTTL = context.WithTimeout(hctx, c.cfg.handlerTTL)
		defer cancelTTL()
	}
	hctx, end, unbind := c.beginHooks(hctx, m)
	defer unbind()
	err := invoke(hctx, c.handler, m)
	if claim != nil {
		now := time.Now()
		if now.After(claim.Deadline()) {
			c.event(hctx, observe.LeaseExpired, m, "", err)
		}
		// bctx was made before the claim; the handler may have used it up.
		var cancel context.CancelFunc
		bctx, cancel = renewed(bctx, now)
		defer cancel()
	}
	if err == nil && claim != nil && c.cfg.guard.Batched() {
		// Settled by the wave once recorded (settle), hooks' end included.
		succeeded = true
		it.hctx, it.end, it.done.claim = hctx, end, claim
		it.done.wave.Add(1)
		c.completer.submit(&it.done)
		return ack
	}
	// The hooks' Handle ends once the message is settled, so its events
	// land in it.
	defer end(err)
	if err != nil && c.run.Err() != nil {
		return c.interrupted(bctx, claim, m, err)
	}
	if err != nil {
		it.failed = true
		return c.failed(hctx, bctx, claim, m, err)
	}
	succeeded = true
	if claim != nil {
		c.complete(bctx, hctx, it)
	}
	c.event(hctx, observe.Handled, m, "", nil)
	// Counted last: after a panic above, the recover counts it.
	c.stats.handled.Add(1)
	return ack
}

// panicked logs a panic outside a handler, met while settling m. The
// retries it causes are counted where they are made: a message it reached
// settled is not one.
func (c *Consumer) panicked(ctx context.Context, m *Message, v any) {
	c.cfg.logger.LogAttrs(ctx, slog.LevelError, "panic outside the handler (hook, key func, parker or store); a message it left unsettled is retried",
		slog.String("group", c.group), slog.String("msg_id", m.MsgID), slog.Any("panic", v), slog.String("stack", string(debug.Stack())))
}

// beginHooks starts the hooks' Handle for m, if there is one. The ctx it
// returns ends no later than ctx (see [bound]); unbind releases what binds
// it once the handler returned.
func (c *Consumer) beginHooks(ctx context.Context, m *Message) (hctx context.Context, end func(error), unbind context.CancelFunc) {
	if c.cfg.hooks.Handle == nil {
		return ctx, noEnd, noCancel
	}
	hctx, end = c.cfg.hooks.Begin(ctx, observe.Message{Topic: m.Topic, Group: c.group, MsgID: m.MsgID,
		Key: strings.Join(m.Keys, " "), Properties: m.Properties})
	hctx, unbind = bound(ctx, hctx)
	return hctx, end, unbind
}

// bound returns hooked, the ctx a Handle hook made of own, ending no later
// than own, with own's deadline when it is earlier, and hooked's values. A
// hook that returns a ctx not derived from own (context.Background(), one
// with a deadline of its own, context.WithoutCancel) must not keep the
// handler running past its claim's lease, its batch or Close: past the
// lease another delivery may run the key, and Close waits for handlers. A
// ctx derived from own by its values alone (a tracer's span) is returned
// as it is.
func bound(own, hooked context.Context) (context.Context, context.CancelFunc) {
	if hooked.Done() == own.Done() {
		return hooked, noCancel
	}
	ctx, cancel := context.WithCancelCause(hooked)
	stop := context.AfterFunc(own, func() { cancel(context.Cause(own)) })
	unbind := func() {
		stop()
		cancel(nil)
	}
	if d, ok := own.Deadline(); ok {
		if hd, ok := ctx.Deadline(); !ok || d.Before(hd) {
			var cancelDeadline context.CancelFunc
			ctx, cancelDeadline = context.WithDeadline(ctx, d)
			return ctx, func() {
				cancelDeadline()
				unbind()
			}
		}
	}
	return ctx, unbind
}

func noEnd(error) {}

// notAcquired settles a guarded message whose key was not acquired: the
// claim failed, the key is done (a duplicate) or another delivery holds
// it.
func (c *Consumer) notAcquired(bctx context.Context, claim *idempotency.Claim, it *item) verdict {
	m := it.m
	if errors.Is(it.claimErr, idempotency.ErrKeyTooLong) {
		// No delivery will ever be claimed: like a message without a key.
		return c.park(bctx, bctx, m, nil, m.Attempt, it.claimErr, CausePermanent)
	}
	if it.claimErr != nil {
		return c.storeError(bctx, m, "claim", it.claimErr)
	}
	if claim.Outcome == idempotency.Done {
		c.stats.duplicates.Add(1)
		c.event(bctx, observe.Duplicate, m, "", nil)
		if c.cfg.logger.Enabled(bctx, slog.LevelDebug) {
			c.cfg.logger.LogAttrs(bctx, slog.LevelDebug, "duplicate acknowledged", slog.String("msg_id", m.MsgID), slog.String("keys", it.key))
		}
		return ack
	}
	c.stats.busy.Add(1)
	c.event(bctx, observe.Retry, m, "busy", nil)
	if m.Attempt == busyReportAttempt {
		c.trouble.report(bctx, Trouble{Group: c.group, Op: OpBusy, Failures: m.Attempt, Key: it.key, MsgID: m.MsgID,
			Err: fmt.Errorf("consumer: key held by another consumer for %d deliveries (lease %v)", m.Attempt, c.cfg.guard.Lease())})
	}
	return busy
}

// interrupted settles a message whose handler returned err after Close
// gave up waiting and cancelled it: not a failed attempt (at the cap it
// would be parked for the shutdown), but a message delivered and not
// handled, left unacknowledged for redelivery after a restart. Its claim
// is released (the attempt stays counted), so the redelivery need not
// wait for the lease.
func (c *Consumer) interrupted(bctx context.Context, claim *idempotency.Claim, m *Message, err error) verdict {
	c.cfg.logger.LogAttrs(bctx, slog.LevelWarn, "handler cancelled by Close, left for redelivery", slog.String("topic", m.Topic),
		slog.String("msg_id", m.MsgID), slog.Int("attempt", m.Attempt), slog.Any("error", err))
	c.release(bctx, claim, m)
	return closing
}

// release frees claim (nil: none) for m's next delivery; when it fails
// the lease frees the key once it ends.
func (c *Consumer) release(bctx context.Context, claim *idempotency.Claim, m *Message) {
	if claim == nil {
		return
	}
	if err := claim.Release(bctx); err != nil {
		c.cfg.logger.LogAttrs(bctx, slog.LevelWarn, "release claim", slog.String("msg_id", m.MsgID), slog.Any("error", err))
	}
}

// failed settles a message whose handler returned err: parked when err is
// permanent or the attempts are used up, else retried (its claim
// released).
func (c *Consumer) failed(hctx, bctx context.Context, claim *idempotency.Claim, m *Message, err error) verdict {
	if claim == nil {
		// Failures are rare: the bound for the bookkeeping below is made
		// only now.
		var cancel context.CancelFunc
		bctx, cancel = context.WithTimeout(context.WithoutCancel(bctx), bookkeeping)
		defer cancel()
	}
	if IsPermanent(err) || m.Attempt >= c.cfg.maxAttempts {
		cause := CauseRetries
		if IsPermanent(err) {
			cause = CausePermanent
		}
		return c.park(bctx, hctx, m, claim, m.Attempt, err, cause)
	}
	c.stats.retries.Add(1)
	c.event(hctx, observe.Retry, m, "handler", err)
	c.cfg.logger.LogAttrs(bctx, slog.LevelWarn, "handler failed, retrying", slog.String("topic", m.Topic),
		slog.String("msg_id", m.MsgID), slog.Int("attempt", m.Attempt), slog.Any("error", err))
	c.release(bctx, claim, m)
	return retry
}
