package rmqtest

import (
	"strconv"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/remoting"
)

const (
	pullCommitOffset = 1
	pullSuspend      = 2
	pullSubscription = 4

	// maxHold bounds a held pull below the client's 30 s pull timeout.
	maxHold = 25 * time.Second
)

type heldPull struct {
	c        *conn
	req      *remoting.Command
	sub      *subscription
	deadline time.Time // wall clock: the client's timeout is real time
}

func (b *Broker) pullMessage(c *conn, req *remoting.Command) *remoting.Command {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := req.ExtFields
	sysFlag := atoi(e["sysFlag"])
	var sub *subscription
	if sysFlag&pullSubscription != 0 {
		sub = parseSubscription(e["topic"], e["subscription"], nil)
	} else {
		g := b.groups[e["consumerGroup"]]
		if g == nil {
			return response(remoting.CodeSubscriptionNotExist, "the consumer's group info not exist"+faqSuffix)
		}
		if sub = g.subs[e["topic"]]; sub == nil {
			return response(remoting.CodeSubscriptionNotExist, "the consumer's subscription not exist"+faqSuffix)
		}
	}
	t, q, errResp := b.queueLookup(e)
	if errResp != nil {
		return errResp
	}
	if g := e["consumerGroup"]; g != "" {
		b.subGroups[g] = struct{}{}
	}
	if t.perm&permRead == 0 {
		return response(remoting.CodeNoPermission, "the topic["+t.name+"] pulling message is forbidden")
	}
	if sysFlag&pullCommitOffset != 0 {
		b.commitOffsetLocked(e["consumerGroup"], queueKey{t.name, q}, atoi64(e["commitOffset"]))
	}
	resp := b.pullLocked(t, q, req, sub)
	if resp.Code == remoting.CodePullNotFound && sysFlag&pullSuspend != 0 {
		hold := min(max(durationMillis(e["suspendTimeoutMillis"]), 0), maxHold)
		k := queueKey{t.name, q}
		b.held[k] = append(b.held[k], &heldPull{c: c, req: req, sub: sub, deadline: time.Now().Add(hold)})
		return nil
	}
	return resp
}

// pullLocked reads up to maxMsgNums matching messages from the requested
// offset and maps the outcome to a 4.9.4 broker's status codes.
func (b *Broker) pullLocked(t *topic, q int32, req *remoting.Command, sub *subscription) *remoting.Command {
	e := req.ExtFields
	msgs := t.queues[q]
	maxOff := int64(len(msgs))
	off := atoi64(e["queueOffset"])
	maxNums := atoi(e["maxMsgNums"])
	if maxNums <= 0 {
		maxNums = 32
	}
	status := func(code int, remark string, next int64) *remoting.Command {
		return &remoting.Command{Code: code, Remark: remark, ExtFields: map[string]string{
			"nextBeginOffset":      strconv.FormatInt(next, 10),
			"minOffset":            "0",
			"maxOffset":            strconv.FormatInt(maxOff, 10),
			"suggestWhichBrokerId": "0",
		}}
	}
	switch {
	case maxOff == 0 && off == 0:
		return status(remoting.CodePullNotFound, "NO_MESSAGE_IN_QUEUE", 0)
	case maxOff == 0:
		return status(remoting.CodePullOffsetMoved, "NO_MESSAGE_IN_QUEUE", 0)
	case off == maxOff:
		return status(remoting.CodePullNotFound, "OFFSET_OVERFLOW_ONE", off)
	case off > maxOff:
		return status(remoting.CodePullOffsetMoved, "OFFSET_OVERFLOW_BADLY", maxOff)
	case off < 0:
		return status(remoting.CodePullOffsetMoved, "OFFSET_TOO_SMALL", 0)
	}
	var body []byte
	found := 0
	next := off
	const maxBytes = 256 << 10 // like the broker's per-pull transfer cap
	for next < maxOff && found < maxNums {
		m := msgs[next]
		if found > 0 && len(body)+len(m.encoded) > maxBytes {
			break
		}
		next++
		if sub.matches(m) {
			body = append(body, m.encoded...)
			found++
		}
	}
	if found == 0 {
		return status(remoting.CodePullRetryImmediately, "NO_MATCHED_MESSAGE", next)
	}
	r := status(remoting.CodeSuccess, "FOUND", next)
	r.Body = body
	return r
}

// wakeHeldLocked answers the pulls held on k that the new message matches.
func (b *Broker) wakeHeldLocked(k queueKey, m *message) {
	list := b.held[k]
	if len(list) == 0 {
		return
	}
	keep := list[:0]
	for _, h := range list {
		if h.sub.matches(m) {
			b.answerHeldLocked(k, h)
		} else {
			keep = append(keep, h)
		}
	}
	clear(list[len(keep):])
	b.held[k] = keep
}

func (b *Broker) expireHeldLocked(now time.Time) {
	for k, list := range b.held {
		keep := list[:0]
		for _, h := range list {
			if now.Before(h.deadline) {
				keep = append(keep, h)
			} else {
				b.answerHeldLocked(k, h)
			}
		}
		clear(list[len(keep):])
		b.held[k] = keep
	}
}

// answerHeldLocked re-runs a held pull (without suspending or committing)
// and sends the answer from a goroutine so the lock is not held on I/O.
func (b *Broker) answerHeldLocked(k queueKey, h *heldPull) {
	t := b.topics[k.topic]
	resp := b.pullLocked(t, k.queue, h.req, h.sub)
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		b.reply(h.c, h.req, resp)
	}()
}
