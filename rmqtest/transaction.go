package rmqtest

import (
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/remoting"
)

// halfState tracks an undecided half message: its newest copy in the half
// topic and when it is next checked back.
type halfState struct {
	msg       *message
	group     string
	checks    int
	nextCheck time.Time
}

func (b *Broker) putHalfLocked(t *topic, queue int32, m *message, group string) {
	m.props[remoting.PropRealTopic] = t.name
	m.props[remoting.PropRealQueueID] = strconv.Itoa(int(queue))
	m.SysFlag &^= remoting.SysFlagTransactionMask
	ht := b.ensureTopicLocked(halfTopic, 1, permRead|permWrite)
	b.putLocked(ht, 0, m)
	b.halfs[m.PhysicalOffset] = &halfState{
		msg:       m,
		group:     group,
		nextCheck: time.UnixMilli(m.StoreTimestamp).Add(b.opts.transactionTimeout),
	}
}

func (b *Broker) endTransaction(req *remoting.Command) *remoting.Command {
	e := req.ExtFields
	decision := atoi(e["commitOrRollback"])
	if decision == 0 {
		return nil // a 4.9.4 broker sends no reply to "unknown"
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	// As a 4.9.4 broker does, the prepared message is looked up by its
	// commit log offset each time, and nothing remembers that it was
	// decided: a second commit, a commit after a rollback, or a commit of
	// a copy a check-back has since renewed each store one more copy.
	off := atoi64(e["commitLogOffset"])
	m := b.byPhys[off]
	switch {
	case m == nil:
		return response(remoting.CodeSystemError, "Find prepared transaction message failed")
	case m.props[remoting.PropProducerGroup] != e["producerGroup"]:
		return response(remoting.CodeSystemError, "The producer group wrong")
	case m.QueueOffset != atoi64(e["tranStateTableOffset"]):
		return response(remoting.CodeSystemError, "The transaction state table offset wrong")
	}
	delete(b.halfs, off) // this copy is not checked back again
	if decision != remoting.SysFlagTransactionCommit {
		return &remoting.Command{Code: remoting.CodeSuccess, Remark: "not set any response code"}
	}
	if m.props[remoting.PropRealTopic] == "" {
		return response(remoting.CodeSystemError, "the message has no real topic")
	}
	c := m.clone()
	c.SysFlag = m.SysFlag&^remoting.SysFlagTransactionMask | remoting.SysFlagTransactionCommit
	c.PreparedTransactionOffset = m.PhysicalOffset
	t := b.ensureTopicLocked(c.props[remoting.PropRealTopic], 1, permRead|permWrite)
	qid := atoi(c.props[remoting.PropRealQueueID])
	if qid < 0 || qid >= len(t.queues) {
		qid = 0
	}
	b.storeLocked(t, int32(qid), c)
	return ok(nil, nil)
}

// checkTransactionsLocked sends CHECK_TRANSACTION_STATE for each half
// message whose check is due, to one live connection of its producer
// group, after storing a renewed copy as the real broker does. After the
// last allowed check the message is rolled back.
func (b *Broker) checkTransactionsLocked() {
	now := b.Now()
	for off, h := range b.halfs {
		if now.Before(h.nextCheck) {
			continue
		}
		delete(b.halfs, off)
		if h.checks >= b.opts.transactionMaxCheck {
			continue // rolled back
		}
		renewed := h.msg.clone()
		h.checks++
		renewed.props[remoting.PropTransactionCheckTimes] = strconv.Itoa(h.checks)
		b.putLocked(b.topics[halfTopic], 0, renewed)
		h.msg = renewed
		h.nextCheck = now.Add(b.opts.transactionInterval)
		b.halfs[renewed.PhysicalOffset] = h
		// The group's connections in turn, as a 4.9.4 broker picks them
		// (ProducerManager.getAvailableChannel counts round them).
		conns := slices.SortedFunc(maps.Keys(b.producers[h.group]), func(x, y *conn) int { return x.remote.Compare(y.remote) })
		if len(conns) == 0 {
			continue
		}
		b.checkTurn++
		target := conns[b.checkTurn%len(conns)]
		view := *renewed
		view.Topic = renewed.props[remoting.PropRealTopic]
		view.QueueID = int32(atoi(renewed.props[remoting.PropRealQueueID]))
		view.Properties = remoting.EncodeProperties(renewed.props)
		body := view.AppendEncoded(nil)
		uniq := renewed.props[remoting.PropUniqKey]
		ext := map[string]string{
			"commitLogOffset":      strconv.FormatInt(renewed.PhysicalOffset, 10),
			"msgId":                uniq,
			"offsetMsgId":          remoting.OffsetMsgID(renewed.StoreHost, renewed.PhysicalOffset),
			"tranStateTableOffset": strconv.FormatInt(renewed.QueueOffset, 10),
			"transactionId":        uniq,
		}
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			b.send(target, remoting.ReqCheckTransactionState, ext, body)
		}()
	}
}
