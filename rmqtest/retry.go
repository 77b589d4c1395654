package rmqtest

import (
	"fmt"
	"strconv"

	"github.com/seed157d4c4d/reliablemq/internal/remoting"
)

// sendMsgBack handles CONSUMER_SEND_MSG_BACK: the consumed message is
// re-stored in %RETRY%<group> through the delay levels, or in
// %DLQ%<group> once it has been reconsumed maxReconsumeTimes times or the
// client asked for delay level -1.
func (b *Broker) sendMsgBack(req *remoting.Command) *remoting.Command {
	e := req.ExtFields
	group := e["group"]
	off := atoi64(e["offset"])
	delayLevel := atoi(e["delayLevel"])
	maxTimes := atoi(e["maxReconsumeTimes"])
	b.mu.Lock()
	defer b.mu.Unlock()
	stored := b.byPhys[off]
	if stored == nil {
		return response(remoting.CodeSystemError, fmt.Sprintf("look message by offset failed, %d", off))
	}
	retry := b.ensureTopicLocked(retryPrefix+group, 1, permRead|permWrite)
	if retry.perm&permWrite == 0 {
		return response(remoting.CodeNoPermission, "the topic["+retry.name+"] sending message is forbidden")
	}
	m := stored.clone()
	if _, has := m.props[remoting.PropRetryTopic]; !has {
		m.props[remoting.PropRetryTopic] = stored.Topic
	}
	if _, has := m.props[remoting.PropOriginMessageID]; !has {
		// The stored copy's own offset id, whatever originMsgId the client
		// sent (it sends the UNIQ_KEY), as a 4.9.4 broker does.
		m.props[remoting.PropOriginMessageID] = remoting.OffsetMsgID(stored.StoreHost, stored.PhysicalOffset)
	}
	m.props[remoting.PropWait] = "false"
	m.ReconsumeTimes = stored.ReconsumeTimes + 1
	if int(stored.ReconsumeTimes) >= maxTimes || delayLevel < 0 {
		dlq := b.ensureTopicLocked(dlqPrefix+group, 1, b.opts.dlqPerm)
		m.props[remoting.PropDelay] = "0"
		b.putLocked(dlq, 0, m)
		return ok(nil, nil)
	}
	if delayLevel == 0 {
		delayLevel = 3 + int(stored.ReconsumeTimes)
	}
	m.props[remoting.PropDelay] = strconv.Itoa(delayLevel)
	b.storeLocked(retry, 0, m)
	return ok(nil, nil)
}
