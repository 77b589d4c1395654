package orderly

import (
	"cmp"
	"hash/fnv"
	"slices"
	"sync"
	"time"

	"github.com/apache/rocketmq-client-go/v2/primitive"
)

// QueueIndex returns the queue index in [0, queues) that sharding key maps
// to: FNV-1a 32 of the key's bytes modulo the queue count, computed
// unsigned so it is never negative. It is stable across processes,
// restarts and platforms. On 64-bit platforms it equals the official
// client's NewHashQueueSelector on the same sorted queue list, so services
// using either pick the same queue; on 32-bit ones that selector converts
// the hash to a negative int for about half the keys and picks another
// queue for many of them. It returns -1 when queues <= 0.
func QueueIndex(key string, queues int) int {
	if queues <= 0 {
		return -1
	}
	h := fnv.New32a()
	h.Write([]byte(key)) // hash.Hash.Write never fails
	return int(h.Sum32() % uint32(queues))
}

// QueueCountChange describes a topic whose queue layout changed: queues
// added, or queues missing from the route for longer than
// [Selector.LossGrace]. Keys re-hash onto other queues after it, so
// messages of one key still waiting on the old queue may be consumed out of
// order with the ones sent after the change.
type QueueCountChange struct {
	Topic string
	// Old and New are the queue counts before and after; they are equal
	// when one broker's queues replaced another's in a single route update.
	Old, New int
}

// QueueUnavailable describes a keyed send held back: the queue its key
// maps to is on a broker missing from the route (down, or not yet
// routed). The send fails as transient; the outbox retries it.
type QueueUnavailable struct {
	Topic, ShardingKey, BrokerName string
	QueueID                        int
}

// DefaultLossGrace is [Selector.LossGrace]'s default.
const DefaultLossGrace = 10 * time.Minute

// Selector picks the queue for a message's sharding key. It sorts the
// queues by broker name and queue id first, so the choice does not depend on
// the order the route arrived in. Messages without a sharding key go round
// robin over the queues the route offers. It is safe for concurrent use.
//
// Keys hash over the topic's layout: the largest queue list seen. When a
// broker drops out of the route (it died, or lost its registration) the
// layout is kept: a key whose queue was on that broker is not re-hashed
// onto a live queue while its earlier messages wait on the lost one;
// Select returns nil for it, which the client reports as a failed send
// ("route info not found", transient), and OnUnavailable is called. Keys on
// live queues keep their queues. Only when the queues stay missing for
// LossGrace is the smaller layout adopted (and reported through OnChange),
// so a broker removed for good does not hold keys back forever. Queues
// that appear (a broker or queues added) are adopted at once and reported.
//
// A Selector knows only the routes its sends saw: its first send to a
// topic takes the route of that moment as the layout, unreported, so a
// producer started while a broker is out hashes over the smaller layout
// that producers started before keep holding back; and LossGrace counts
// from the first send that finds queues missing.
type Selector struct {
	// OnChange, when set, is called (outside any lock) for each change of
	// a topic's layout after its first selection, in the order the changes
	// happened: by one Select at a time, not always the one that saw it.
	OnChange func(QueueCountChange)
	// OnUnavailable, when set, is called (outside any lock) for each keyed
	// selection held back because its queue is missing from the route.
	OnUnavailable func(QueueUnavailable)
	// LossGrace is how long queues may be missing from the route before
	// the layout without them is adopted. Zero means [DefaultLossGrace].
	LossGrace time.Duration

	mu        sync.Mutex
	layouts   map[string]*layout
	next      uint32
	pending   []QueueCountChange // changes not reported yet, oldest first
	reporting bool               // a Select is reporting pending
}

type layout struct {
	queues []*primitive.MessageQueue // sorted
	// missingSince is when the route first lacked some of queues; zero
	// while it offers all of them.
	missingSince time.Time
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
	change, keyed := s.layoutLocked(msg.Topic, mqs)
	rr := s.next
	s.next++
	report := false
	if change != nil && s.OnChange != nil {
		s.pending = append(s.pending, *change)
		report, s.reporting = !s.reporting, true
	}
	s.mu.Unlock()
	if report {
		s.report()
	}
	if key == "" {
		return mqs[rr%uint32(len(mqs))]
	}
	want := keyed[QueueIndex(key, len(keyed))]
	if i, found := slices.BinarySearchFunc(mqs, want, compareQueues); found {
		return mqs[i]
	}
	if s.OnUnavailable != nil {
		s.OnUnavailable(QueueUnavailable{Topic: msg.Topic, ShardingKey: key, BrokerName: want.BrokerName, QueueID: want.QueueId})
	}
	return nil
}

// report calls OnChange for each pending change until none is left.
// Changes found meanwhile by other Selects (or by a send from OnChange)
// are queued behind, so the last report is the layout keys hash over.
// An OnChange that panics hands the reporting on: the next Select that
// finds a change reports what is left.
func (s *Selector) report() {
	done := false
	defer func() {
		if !done { // OnChange panicked
			s.mu.Lock()
			s.reporting = false
			s.mu.Unlock()
		}
	}()
	for {
		s.mu.Lock()
		if len(s.pending) == 0 {
			s.reporting, done = false, true
			s.mu.Unlock()
			return
		}
		c := s.pending[0]
		s.pending = s.pending[1:]
		s.mu.Unlock()
		s.OnChange(c)
	}
}

// layoutLocked updates topic's layout from the route's sorted queues and
// returns the change to report, if any, and the layout keys hash over.
func (s *Selector) layoutLocked(topic string, mqs []*primitive.MessageQueue) (*QueueCountChange, []*primitive.MessageQueue) {
	if s.layouts == nil {
		s.layouts = make(map[string]*layout)
	}
	l := s.layouts[topic]
	if l == nil {
		s.layouts[topic] = &layout{queues: mqs}
		return nil, mqs
	}
	grace := s.LossGrace
	if grace <= 0 {
		grace = DefaultLossGrace
	}
	adopt := false
	switch {
	case !subset(mqs, l.queues): // queues added: adopt at once
		adopt = true
	case len(mqs) == len(l.queues): // the whole layout is routed
		l.missingSince = time.Time{}
	case l.missingSince.IsZero():
		l.missingSince = time.Now()
	case time.Since(l.missingSince) >= grace:
		adopt = true
	}
	if !adopt {
		return nil, l.queues
	}
	change := &QueueCountChange{Topic: topic, Old: len(l.queues), New: len(mqs)}
	l.queues, l.missingSince = mqs, time.Time{}
	return change, mqs
}

// subset reports whether every queue of a (sorted) is in b (sorted).
func subset(a, b []*primitive.MessageQueue) bool {
	for _, q := range a {
		if _, found := slices.BinarySearchFunc(b, q, compareQueues); !found {
			return false
		}
	}
	return true
}

func compareQueues(a, b *primitive.MessageQueue) int {
	if c := cmp.Compare(a.BrokerName, b.BrokerName); c != 0 {
		return c
	}
	return cmp.Compare(a.QueueId, b.QueueId)
}
