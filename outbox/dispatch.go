package outbox

// The relay's policy, free of SQL: which claimed rows are sent in what
// order, what a failed send does to its row (retry with backoff, Dead,
// given up), and how sent rows are marked. The rows live behind rowStore.

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/safely"
	"github.com/seed157d4c4d/reliablemq/internal/token"
	"github.com/seed157d4c4d/reliablemq/observe"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// DispatchDue claims up to limit due Pending rows (oldest due first,
// skipping rows other relays have locked) and sends them.
func (r *Relay) DispatchDue(ctx context.Context, limit int) (BatchReport, error) {
	return r.DispatchDueAsOf(ctx, time.Time{}, limit)
}

// DispatchDueAsOf is DispatchDue for the rows that were due by asOf, a
// time read earlier from time.Now (a run's start). A row that fails is due
// again after its backoff: a caller claiming batch after batch over a
// backlog that takes longer than that claims it again, and with the broker
// down one run took every row through all its attempts to Dead. Given the
// run's start, such a row waits for the next run. The zero asOf is now.
func (r *Relay) DispatchDueAsOf(ctx context.Context, asOf time.Time, limit int) (BatchReport, error) {
	return r.claimAndSend(ctx, func(owner string) ([]*Row, error) {
		return r.store.claimDue(ctx, owner, asOf, limit)
	}, false)
}

// ResendUnconfirmed claims up to limit Sent rows not confirmed within
// timeout and sends them again (a new message with the same key: the
// consumer's guard absorbs the duplicate). After maxAttempts sends in all,
// or a resend the broker refuses for good (producer.IsPermanent), a row is
// given up on: it stays Sent, is no longer resent, and the alert fires.
func (r *Relay) ResendUnconfirmed(ctx context.Context, timeout time.Duration, limit int) (BatchReport, error) {
	return r.ResendUnconfirmedAsOf(ctx, time.Time{}, timeout, limit)
}

// ResendUnconfirmedAsOf is ResendUnconfirmed for the rows that were due by
// asOf, as DispatchDueAsOf: a row sent, resent or failed after asOf is not
// claimed (with a confirm timeout shorter than a run, one run resent a row
// until it was given up).
func (r *Relay) ResendUnconfirmedAsOf(ctx context.Context, asOf time.Time, timeout time.Duration, limit int) (BatchReport, error) {
	return r.claimAndSend(ctx, func(owner string) ([]*Row, error) {
		return r.store.claimUnconfirmed(ctx, owner, asOf, timeout, limit)
	}, true)
}

// dueFor is, as a query argument, how long a row must have been due to
// be claimed as of asOf: the time since then in microseconds, on the
// monotonic clock (the database compares it with its own clock, so the
// two clocks need not agree), read when the query is sent (computed
// earlier, the time the claim waited for its connection would let rows
// made due after asOf through); 0 for the zero asOf.
type dueFor time.Time

// Value implements driver.Valuer.
func (a dueFor) Value() (driver.Value, error) {
	if time.Time(a).IsZero() {
		return int64(0), nil
	}
	return max(time.Since(time.Time(a)), 0).Microseconds(), nil
}

func (r *Relay) claimAndSend(ctx context.Context, claim func(owner string) ([]*Row, error), resend bool) (BatchReport, error) {
	owner := token.New()
	// The lease runs from the claim on the database's clock: counted here
	// from before it, this deadline comes no later than the lease's end.
	deadline := r.now().Add(r.cfg.lease)
	// Only a first send's claim can take a Pending row a sibling waits for.
	counted := !resend
	if counted {
		r.fly.claimStarted()
	}
	rows, err := claim(owner)
	if err != nil || len(rows) == 0 {
		r.fly.register(nil, false, counted)
		return BatchReport{}, err
	}
	return r.sendRows(ctx, owner, rows, resend, false, counted, deadline)
}

// sendRows sends rows owner holds, in id order. With a deadline (the
// claim's lease end), a batch the broker slows down does not outlast its
// claim: from half the lease on, sent rows are marked as they are sent
// (rather than together after the batch), and no send starts after the
// deadline (those rows are due again, to be claimed anew). Past the lease
// another claim may take a row and send it a second time. claimed says the
// rows come from a claim counted by flights.claimStarted.
func (r *Relay) sendRows(ctx context.Context, owner string, rows []*Row, resend, shared, claimed bool, deadline time.Time) (BatchReport, error) {
	// A sharding key's rows are one group, sent in order; an unordered row
	// is a group of its own. Groups start in the order of their first row.
	var groups [][]*Row
	keyed := map[string]int{}
	for _, row := range rows {
		if row.ShardingKey == "" {
			groups = append(groups, []*Row{row})
			continue
		}
		i, ok := keyed[row.ShardingKey]
		if !ok {
			i = len(groups)
			keyed[row.ShardingKey] = i
			groups = append(groups, nil)
		}
		groups[i] = append(groups[i], row)
	}
	flying := r.fly.register(groups, !resend, claimed)
	var (
		mu     sync.Mutex
		sent   []sentRow
		report = BatchReport{Claimed: len(rows)}
		errs   []error
		wg     sync.WaitGroup
		sem    = make(chan struct{}, r.cfg.concurrency)
	)
	early := false // past half the lease: rows are marked as they are sent
	markNow := func() {
		mu.Lock()
		chunk := sent
		sent, early = nil, true
		mu.Unlock()
		n, lost, err := r.markBatch(ctx, owner, chunk, resend)
		mu.Lock()
		report.Sent += n
		report.LostClaims += lost
		if err != nil {
			errs = append(errs, err)
		}
		mu.Unlock()
	}
	stop := make(chan struct{})
	var timer sync.WaitGroup
	if !deadline.IsZero() && len(rows) > 1 { // a lone row is marked right after its send
		timer.Go(func() {
			t := time.NewTimer(deadline.Add(-r.cfg.lease / 2).Sub(r.now()))
			defer t.Stop()
			select {
			case <-stop:
			case <-t.C:
				markNow()
			}
		})
	}
	// record queues a row the broker accepted for the batched mark as
	// soon as it is sent; past half the lease it is marked right away,
	// whatever its group still has to send.
	record := func(row sentRow) {
		mu.Lock()
		sent = append(sent, row)
		now := early
		mu.Unlock()
		if now {
			markNow()
		}
	}
	for i, g := range groups {
		var fl *flight
		if flying != nil {
			fl = flying[i]
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			defer r.fly.land(fl)
			// A group waiting for a sibling frees its slot meanwhile: the
			// sibling may be queued for a slot of its own batch.
			pause := func(mark uint64, at earlier, nap, budget time.Duration) (bool, time.Duration, error) {
				limit := time.Duration(math.MaxInt64)
				if !deadline.IsZero() {
					limit = deadline.Sub(r.now())
				}
				<-sem
				defer func() { sem <- struct{}{} }()
				return r.fly.wait(ctx, fl, mark, at, nap, budget, limit)
			}
			rep, err := r.sendGroup(ctx, owner, g, resend, deadline, record, fl, pause)
			mu.Lock()
			report.Add(rep)
			if err != nil {
				errs = append(errs, err)
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	close(stop)
	timer.Wait()
	// Unordered rows are marked Sent together, a chunk per statement;
	// after a Transact, in the background with other calls' rows (see
	// marker), waited for only when marks fall behind.
	if shared && len(sent) > 0 {
		if seq, wait := r.marks.add(owner, sent); wait {
			// A ctx ending here leaves the marks queued, not dropped; a
			// mark that fails is logged, and returned by Flush.
			_ = r.marks.wait(ctx, seq)
		}
		report.Sent += len(sent)
		sent = nil
	}
	n, lost, err := r.markBatch(ctx, owner, sent, resend)
	report.Sent += n
	report.LostClaims += lost
	if err != nil {
		errs = append(errs, err)
	}
	return report, errors.Join(errs...)
}

// markBatch marks sent rows owner holds Sent (see mysqlStore.markSentBatch)
// and returns how many it marked and how many another claim had taken.
func (r *Relay) markBatch(ctx context.Context, owner string, sent []sentRow, resend bool) (marked, lost int, err error) {
	if len(sent) == 0 {
		return 0, 0, nil
	}
	// One bound for the whole mark: a stopping job outlives its ctx by
	// markFlushTimeout at most.
	mctx, cancel := markContext(ctx)
	defer cancel()
	n, err := markSent(mctx, r.store, []string{owner}, sent, resend)
	if err != nil {
		return int(n), 0, err
	}
	lost = len(sent) - int(n)
	for range lost {
		r.emit(ctx, observe.Event{Kind: observe.ClaimLost, Reason: "outbox"})
	}
	return int(n), lost, nil
}

// markContext is the context of a statement marking rows the broker
// accepted as Sent: ctx's cancellation (a stopping job) does not abort
// it, as a row left claimed is sent a second time once its lease ends;
// markFlushTimeout bounds it instead.
func markContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), markFlushTimeout)
}

// markFlushTimeout bounds a statement marking rows Sent, which must not
// depend on the ctx of the call that sent them.
const markFlushTimeout = 10 * time.Second

// blockedRetry is how long a row waits at least when an earlier row of
// its sharding key is not Sent yet.
const blockedRetry = time.Second

// inFlightWait bounds how long a row waits for what its relay cannot see
// the end of: an earlier row of its key that another process is sending
// (claimed under a live lease), polled from firstNap to maxNap apart, and
// this relay's claims under way while that row is due. Then it is handed
// back. A wait for this relay's own sends of the key is not counted.
const (
	inFlightWait = 5 * time.Second
	firstNap     = time.Millisecond
	maxNap       = 50 * time.Millisecond
)

// pauseFunc is flights.wait for a group, its concurrency slot freed.
type pauseFunc func(mark uint64, at earlier, nap, budget time.Duration) (again bool, spent time.Duration, err error)

// await returns what row finds before it once no earlier row of its key
// is being sent or may be being claimed here: it waits for this relay's
// groups at earlier rows of the key (see flights), and, for up to
// inFlightWait, for another process's send and for this relay's claims.
// A row behind a Dead or backing-off row does not wait. The duration is
// how long until the row the key has before it is due.
func (r *Relay) await(ctx context.Context, row *Row, fl *flight, pause pauseFunc) (earlier, time.Duration, error) {
	r.fly.advance(fl, row.ID)
	budget, nap := inFlightWait, firstNap
	for {
		mark := r.fly.mark(fl)
		at, dueIn, err := r.store.predecessor(ctx, row)
		if err != nil || at == allSent || at == blocked {
			return at, dueIn, err
		}
		again, spent, err := pause(mark, at, nap, budget)
		budget, nap = budget-spent, min(2*nap, maxNap)
		if err != nil || !again {
			return at, dueIn, err
		}
	}
}

// sendGroup sends one group's rows. An ordered group's rows are marked
// one by one before the next is sent; an unordered row, and a resend, is
// passed to record as soon as the broker accepts it, for the batched mark.
// A row whose key has an earlier row not Sent yet waits, through pause,
// while that row is being sent (see await).
func (r *Relay) sendGroup(ctx context.Context, owner string, rows []*Row, resend bool, deadline time.Time,
	record func(sentRow), fl *flight, pause pauseFunc) (rep BatchReport, err error) {
	for i, row := range rows {
		if row.ShardingKey != "" && !resend {
			at, dueIn, err := r.await(ctx, row, fl, pause)
			switch {
			case errors.Is(err, errClaimRanOut):
				// As below: the rows left are due again, for a new claim.
				return rep, nil
			case err != nil && ctx.Err() != nil:
				// Stopping while waiting: hand the rows back now, as a send
				// cut short does.
				return rep, r.releaseAll(ctx, owner, rows[i:], blockedRetry)
			}
			if err != nil {
				return rep, errors.Join(err, r.releaseAll(ctx, owner, rows[i:], blockedRetry))
			}
			if at != allSent { // an earlier row of the key is Pending or Dead
				// Behind a row backing off, due again when that row is (at
				// most the longest backoff): claimed sooner, they would only
				// be handed back again.
				after := blockedRetry
				if at == blocked {
					after = max(after, min(dueIn, r.cfg.maxBackoff))
				}
				rep.Blocked += len(rows) - i
				return rep, r.releaseAll(ctx, owner, rows[i:], after)
			}
		}
		if resend && row.Attempts >= r.cfg.maxAttempts {
			held, err := r.store.giveUp(ctx, row.ID, owner, fmt.Sprintf("no consumer confirmed it after %d sends", row.Attempts), false)
			if err != nil {
				return rep, err
			}
			if held {
				r.dead(ctx, row, "unconfirmed after resends", "unconfirmed", &rep)
			} else {
				r.lostClaim(ctx, row, "", &rep)
			}
			continue
		}
		if !deadline.IsZero() && !r.now().Before(deadline) {
			// The claim ran out (checked last before the send: the
			// predecessor query may be what outlasted it): the rows left
			// are due again, for a new claim to send (this one would send
			// them a second time).
			return rep, nil
		}
		res, sendErr := r.pub.Send(ctx, row.producerMessage())
		sent := sendErr == nil || producer.IsNotDurable(sendErr)
		if sent && (row.ShardingKey == "" || resend) {
			// Unordered rows, and resends (their order was settled by the
			// first send), are marked in batches.
			record(sentRow{row.ID, res.MsgID})
			continue
		}
		if sent {
			// The next row of the key is sent only once this one is Sent.
			mctx, cancel := markContext(ctx)
			held, err := retryMark(func() (bool, error) { return r.store.markSent(mctx, row.ID, owner, res.MsgID) })
			cancel()
			if err != nil {
				return rep, err
			}
			if !held {
				r.lostClaim(ctx, row, res.MsgID, &rep)
			} else {
				rep.Sent++
			}
			continue
		}
		if ctx.Err() != nil {
			// The job is stopping (a SIGTERM): the send was cut short, not
			// refused, so no attempt is counted. Its rows are handed back
			// for another instance now; recording the failure with ctx
			// failed, and left them claimed until the lease ended.
			return rep, r.releaseAll(ctx, owner, rows[i:], blockedRetry)
		}
		if fl != nil {
			// Past its rows now: the alert fail may call must not find its
			// own group in the way (a compensating event of the same key,
			// through Transact, waits for earlier groups of the key).
			r.fly.advance(fl, math.MaxInt64)
		}
		retryIn, err := r.fail(ctx, owner, row, sendErr, resend, &rep)
		if err != nil {
			return rep, err
		}
		if row.ShardingKey != "" && i+1 < len(rows) {
			// The rest wait for this row: due again when it is.
			rep.Blocked += len(rows) - i - 1
			return rep, r.releaseAll(ctx, owner, rows[i+1:], max(blockedRetry, retryIn))
		}
	}
	return rep, nil
}

// fail records row's failed send: Dead (or, a resend, given up on) past
// the attempts or when the broker refuses it for good, else due again
// after the backoff, which it returns (zero when the row is not retried).
func (r *Relay) fail(ctx context.Context, owner string, row *Row, sendErr error, resend bool, rep *BatchReport) (time.Duration, error) {
	attempts := row.Attempts + 1
	text := sendErr.Error()
	switch {
	case resend && (attempts >= r.cfg.maxAttempts || producer.IsPermanent(sendErr)):
		// A resend the broker refuses for good is given up on at once, as
		// a first send goes Dead: resending it could only fail again.
		reason, prefix := "unconfirmed", "unconfirmed after resends: "
		if producer.IsPermanent(sendErr) {
			reason, prefix = "permanent", "unconfirmed, and its resend refused: "
		}
		held, err := r.store.giveUp(ctx, row.ID, owner, prefix+text, true)
		if err != nil {
			return 0, err
		}
		if !held {
			r.lostClaim(ctx, row, "", rep)
			return 0, nil
		}
		r.dead(ctx, row, text, reason, rep)
	case !resend && (attempts >= r.cfg.maxAttempts || producer.IsPermanent(sendErr)):
		held, err := r.store.markDead(ctx, row.ID, owner, text)
		if err != nil {
			return 0, err
		}
		if !held {
			r.lostClaim(ctx, row, "", rep)
			return 0, nil
		}
		reason := "attempts"
		if producer.IsPermanent(sendErr) {
			reason = "permanent"
		}
		r.dead(ctx, row, text, reason, rep)
	default:
		status := Pending
		if resend {
			status = Sent
		}
		retryIn := r.backoff(attempts)
		held, err := r.store.retryLater(ctx, row.ID, status, owner, text, retryIn)
		if err != nil {
			return 0, err
		}
		if !held {
			r.lostClaim(ctx, row, "", rep)
			return 0, nil
		}
		rep.Failed++
		r.emit(ctx, observe.Event{Kind: observe.RowRetry, Topic: row.Topic, Key: row.Key, Attempt: attempts,
			Err: sendErr})
		r.cfg.logger.LogAttrs(ctx, slog.LevelWarn, "outbox send failed, retrying later", slog.Int64("id", row.ID),
			slog.String("topic", row.Topic), slog.Int("attempt", attempts), slog.Any("error", sendErr))
		return retryIn, nil
	}
	return 0, nil
}

// lostClaim counts a row another relay claimed once this claim's lease
// ended: what this one meant to record of it (its send, msgID, when the
// broker took it) is that relay's to record.
func (r *Relay) lostClaim(ctx context.Context, row *Row, msgID string, rep *BatchReport) {
	rep.LostClaims++
	r.emit(ctx, observe.Event{Kind: observe.ClaimLost, Topic: row.Topic, Key: row.Key, MsgID: msgID, Reason: "outbox"})
}

// dead reports a row given up on: made Dead, or (unconfirmed) no longer
// resent. reason is "attempts", "permanent" or "unconfirmed".

func (r *Relay) dead(ctx context.Context, row *Row, text, reason string, rep *BatchReport) {
	rep.Dead++
	r.emit(ctx, observe.Event{Kind: observe.RowDead, Topic: row.Topic, Key: row.Key, MsgID: row.MsgID,
		Attempt: row.Attempts + 1, Reason: reason, Err: errors.New(text)})
	if row.Status == Pending {
		row.Status, row.Attempts = Dead, row.Attempts+1
	}
	row.LastError = text
	r.cfg.logger.LogAttrs(ctx, slog.LevelError, "outbox row dead: a human must act", slog.Int64("id", row.ID),
		slog.String("topic", row.Topic), slog.String("keys", row.Key), slog.String("error", text))
	if r.cfg.alert != nil {
		safely.Report(ctx, r.cfg.logger, "outbox: alert", func() { r.cfg.alert(ctx, row) })
	}
}

// releaseAll hands rows owner holds back, due again after after.
// It outlives ctx as a mark does (see markContext): a job stopping hands
// its rows back for another instance.
func (r *Relay) releaseAll(ctx context.Context, owner string, rows []*Row, after time.Duration) error {
	ctx, cancel := markContext(ctx)
	defer cancel()
	ids := make([]int64, len(rows))
	for i, row := range rows {
		ids[i] = row.ID
	}
	return r.store.release(ctx, ids, owner, after)
}

// backoff is the wait after a row's attempts-th failed send: the first
// wait doubled per attempt up to the cap, then jittered to between half
// and all of it. Past half the cap the next doubling is the cap: doubling
// further could overflow (a cap of math.MaxInt64 reads as no cap).
func (r *Relay) backoff(attempts int) time.Duration {
	d := r.cfg.backoff
	for i := 1; i < attempts && d < r.cfg.maxBackoff; i++ {
		if d > r.cfg.maxBackoff/2 {
			d = r.cfg.maxBackoff
			break
		}
		d *= 2
	}
	d = min(d, r.cfg.maxBackoff)
	return d/2 + rand.N(d/2+1)
}

// emit reports e to the hooks' Event, if set, containing a panic in it
// ([safely.Report]): the relay reports from its sends' goroutines and its
// mark timer, where nothing could recover it.
func (r *Relay) emit(ctx context.Context, e observe.Event) {
	if r.cfg.hooks.Event == nil {
		return
	}
	safely.Report(ctx, r.cfg.logger, "outbox: event hook", func() { r.cfg.hooks.Event(ctx, e) })
}
