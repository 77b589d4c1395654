package orderly

import (
	"cmp"
	"hash/fnv"
	"slices"
	"sync"

	"github.com/apache/rocketmq-client-go/v2/primitive"
)

// QueueIndex returns the queue index in [0, queues) that sharding key maps
// to: FNV-1a 32 of the key's bytes modulo the queue count, computed
// unsigned so it is never negative. It is stable across processes,
// restarts and platforms, and equals the official client's
// NewHashQueueSelector on the same sorted queue list, so services using
// either pick the same queue. It returns -1 when queues <= 0.
func QueueIndex(key string, queues int) int {
	if queues <= 0 {
		return -1
	}
	h := fnv.New32a()
	h.Write([]byte(key)) // hash.Hash.Write never fails
	return int(h.Sum32() % uint32(queues))
}

// QueueCountChange describes a topic whose writable queue count changed
// between two selections. Keys re-hash onto other queues after it, so
// messages of one key that are still in flight on the old queue may be
// consumed out of order with the ones sent after the change.
type QueueCountChange struct {
	Topic    string
	Old, New int
}

// Selector picks the queue for a message's sharding key. It sorts the
// queues by broker name and queue id first, so the choice does not depend on
// the order the route arrived in. Messages without a sharding key go round
// robin. It is safe for concurrent use.
//
// OnChange, when set, is called (outside any lock) each time a topic's
// queue count differs from the one seen on the previous selection.
type Selector struct {
	OnChange func(QueueCountChange)

	mu     sync.Mutex
	counts map[string]int
	next   uint32
}

// Select implements the official client's producer.QueueSelector.
func (s *Selector) Select(msg *primitive.Message, mqs []*primitive.MessageQueue, _ string) *primitive.MessageQueue {
	if len(mqs) == 0 {
		return nil
	}
	if !slices.IsSortedFunc(mqs, compareQueues) {
		mqs = slices.SortedFunc(slices.Values(mqs), compareQueues)
	}
	key := msg.GetShardingKey()
	s.mu.Lock()
	if s.counts == nil {
		s.counts = make(map[string]int)
	}
	old, seen := s.counts[msg.Topic]
	s.counts[msg.Topic] = len(mqs)
	rr := s.next
	s.next++
	s.mu.Unlock()
	if seen && old != len(mqs) && s.OnChange != nil {
		s.OnChange(QueueCountChange{Topic: msg.Topic, Old: old, New: len(mqs)})
	}
	if key == "" {
		return mqs[rr%uint32(len(mqs))]
	}
	return mqs[QueueIndex(key, len(mqs))]
}

func compareQueues(a, b *primitive.MessageQueue) int {
	if c := cmp.Compare(a.BrokerName, b.BrokerName); c != 0 {
		return c
	}
	return cmp.Compare(a.QueueId, b.QueueId)
}
