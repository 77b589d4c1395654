package rmqtest

import (
	"math"
	"strconv"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/remoting"
)

const (
	defaultTopic  = "TBW102"
	scheduleTopic = "SCHEDULE_TOPIC_XXXX"
	halfTopic     = "RMQ_SYS_TRANS_HALF_TOPIC"
	retryPrefix   = "%RETRY%"
	dlqPrefix     = "%DLQ%"

	permInherit = 1
	permWrite   = 2
	permRead    = 4
)

type queueKey struct {
	topic string
	queue int32
}

type topic struct {
	name   string
	read   int
	write  int
	perm   int
	queues [][]*message
}

func newTopic(name string, read, write, perm int) *topic {
	t := &topic{name: name, perm: perm}
	t.resize(read, write)
	return t
}

func (t *topic) resize(read, write int) {
	t.read, t.write = read, write
	for len(t.queues) < max(read, write) {
		t.queues = append(t.queues, nil)
	}
}

// message is one stored record with its decoded properties and cached
// encoding.
type message struct {
	remoting.StoredMessage
	props    map[string]string
	tagsCode int64
	encoded  []byte
	dueAt    time.Time // schedule topic only
}

func (m *message) tags() string { return m.props[remoting.PropTags] }

// clone copies the message for a re-store (retry, delay, commit), with its
// own property map.
func (m *message) clone() *message {
	c := &message{StoredMessage: m.StoredMessage, props: make(map[string]string, len(m.props)+4)}
	for k, v := range m.props {
		c.props[k] = v
	}
	return c
}

func (b *Broker) ensureTopicLocked(name string, queues, perm int) *topic {
	t := b.topics[name]
	if t == nil {
		t = newTopic(name, queues, queues, perm)
		b.topics[name] = t
	}
	return t
}

// putLocked stores m in topic/queue: it assigns the queue offset, the
// commit log offset and the store fields, indexes the keys and wakes held
// pulls. The caller has checked that the queue exists.
func (b *Broker) putLocked(t *topic, queue int32, m *message) {
	m.Topic = t.name
	m.QueueID = queue
	m.QueueOffset = int64(len(t.queues[queue]))
	m.PhysicalOffset = b.nextPhys
	m.StoreTimestamp = b.Now().UnixMilli()
	m.StoreHost = b.brHost
	m.Properties = remoting.EncodeProperties(m.props)
	m.tagsCode = remoting.TagsCode(m.tags())
	m.encoded = m.AppendEncoded(make([]byte, 0, m.EncodedSize()))
	b.nextPhys += int64(len(m.encoded))
	t.queues[queue] = append(t.queues[queue], m)
	b.byPhys[m.PhysicalOffset] = m
	keys := remoting.SplitKeys(m.props[remoting.PropKeys])
	if u := m.props[remoting.PropUniqKey]; u != "" {
		keys = append(keys, u)
	}
	for _, k := range keys {
		h := indexHash(t.name, k)
		if l := b.keyIndex[h]; len(l) == 0 || l[len(l)-1] != m {
			b.keyIndex[h] = append(l, m)
		}
	}
	b.wakeHeldLocked(queueKey{t.name, queue}, m)
}

// storeLocked routes a message that arrived for topic/queue: delayed
// messages go to the schedule topic, everything else straight in.
func (b *Broker) storeLocked(t *topic, queue int32, m *message) {
	level, _ := strconv.Atoi(m.props[remoting.PropDelay])
	if level > 0 && m.SysFlag&remoting.SysFlagTransactionMask == 0 {
		if level > len(b.opts.delayLevels) {
			level = len(b.opts.delayLevels)
			m.props[remoting.PropDelay] = strconv.Itoa(level)
		}
		m.props[remoting.PropRealTopic] = t.name
		m.props[remoting.PropRealQueueID] = strconv.Itoa(int(queue))
		st := b.ensureTopicLocked(scheduleTopic, len(b.opts.delayLevels), permRead|permWrite)
		b.putLocked(st, int32(level-1), m)
		m.dueAt = time.UnixMilli(m.StoreTimestamp).Add(b.opts.delayLevels[level-1])
		b.schedule[level-1] = append(b.schedule[level-1], m)
		return
	}
	b.putLocked(t, queue, m)
}

// deliverDueLocked moves delayed messages whose time has come to their
// real topic and queue. The delivered copy keeps DELAY, REAL_TOPIC and
// REAL_QID, as a 4.9.4 broker's does.
func (b *Broker) deliverDueLocked() {
	now := b.Now()
	for level, list := range b.schedule {
		n := 0
		for n < len(list) && !list[n].dueAt.After(now) {
			m := list[n]
			c := m.clone()
			qid, _ := strconv.Atoi(m.props[remoting.PropRealQueueID])
			t := b.ensureTopicLocked(m.props[remoting.PropRealTopic], 1, permRead|permWrite)
			if qid < 0 || qid >= len(t.queues) {
				qid = 0
			}
			b.putLocked(t, int32(qid), c)
			n++
		}
		b.schedule[level] = list[n:]
	}
}

// indexHash is the broker's index slot key for a message key: the
// absolute Java hashCode of "topic#key". The broker compares only this
// hash when it answers QUERY_MESSAGE, so keys whose hashes collide are
// answered together; the client filters by key.
func indexHash(topic, key string) int64 {
	h := int32(remoting.TagsCode(topic + "#" + key))
	if h == math.MinInt32 {
		return 0
	}
	if h < 0 {
		h = -h
	}
	return int64(h)
}
