package rmqtest

import (
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/remoting"
)

// Message is a stored message as a test sees it.
type Message struct {
	Topic       string
	QueueID     int
	QueueOffset int64
	// MsgID is what the consumer sees as MsgId: the UNIQ_KEY property, or
	// the OffsetMsgID when there is none (batch members).
	MsgID          string
	OffsetMsgID    string
	Keys           []string
	Tags           string
	Properties     map[string]string
	Body           []byte
	ReconsumeTimes int
	SysFlag        int
	BornTime       time.Time
	StoreTime      time.Time
}

func (m *message) export() Message {
	off := remoting.OffsetMsgID(m.StoreHost, m.PhysicalOffset)
	id := m.props[remoting.PropUniqKey]
	if id == "" {
		id = off
	}
	return Message{
		Topic:          m.Topic,
		QueueID:        int(m.QueueID),
		QueueOffset:    m.QueueOffset,
		MsgID:          id,
		OffsetMsgID:    off,
		Keys:           remoting.SplitKeys(m.props[remoting.PropKeys]),
		Tags:           m.tags(),
		Properties:     maps.Clone(m.props),
		Body:           append([]byte(nil), m.Body...),
		ReconsumeTimes: int(m.ReconsumeTimes),
		SysFlag:        int(m.SysFlag),
		BornTime:       time.UnixMilli(m.BornTimestamp),
		StoreTime:      time.UnixMilli(m.StoreTimestamp),
	}
}

// Messages returns every message stored in topic, queue by queue in offset
// order. Delayed messages not yet due and undecided half messages are not
// in their topic yet.
func (b *Broker) Messages(topic string) []Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.topics[topic]
	if t == nil {
		return nil
	}
	var out []Message
	for _, q := range t.queues {
		for _, m := range q {
			out = append(out, m.export())
		}
	}
	return out
}

// ConsumerOffset is the committed offset of group on topic/queue (the next
// offset to consume), and whether the group has committed one.
func (b *Broker) ConsumerOffset(group, topic string, queueID int) (int64, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	off, found := b.offsets[group][queueKey{topic, int32(queueID)}]
	return off, found
}

// CreateTopic creates topic with the given number of read and write queues
// and perm 6 (read and write), or resizes an existing one.
func (b *Broker) CreateTopic(topic string, queues int) error {
	if msg := validTopic(topic); msg != "" {
		return errors.New("rmqtest: " + msg)
	}
	if queues <= 0 || queues > 1024 {
		return fmt.Errorf("rmqtest: %d queues, want 1..1024", queues)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	b.upsertTopicLocked(topic, queues, queues, permRead|permWrite)
	return nil
}

// TopicPerm is the topic's permission bits (4 read, 2 write, 1 inherit)
// and whether the topic exists.
func (b *Broker) TopicPerm(topic string) (int, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if t := b.topics[topic]; t != nil {
		return t.perm, true
	}
	return 0, false
}

// Consumers lists the client ids connected in group.
func (b *Broker) Consumers(group string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var ids []string
	if g := b.groups[group]; g != nil {
		for _, m := range g.members {
			ids = append(ids, m.clientID)
		}
	}
	return ids
}

// Producers returns how many live connections have registered producer
// group (by heartbeat). Transaction check-backs go to one of them, so a
// test that advances the clock to a check should first wait for one.
func (b *Broker) Producers(group string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.producers[group])
}

// HalfMessages returns how many transactional half messages await a
// commit or rollback.
func (b *Broker) HalfMessages() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.halfs)
}
