package orderly_test

import (
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2/primitive"
	rmqproducer "github.com/apache/rocketmq-client-go/v2/producer"
	"github.com/seed157d4c4d/reliablemq/orderly"
)

// route21 is a route as the client hands it over: brokers in the order
// given, each broker's queues in descending id (unsorted on purpose).
func route21(topic string, brokers ...any) []*primitive.MessageQueue {
	var qs []*primitive.MessageQueue
	for i := 0; i < len(brokers); i += 2 {
		name, n := brokers[i].(string), brokers[i+1].(int)
		for q := n - 1; q >= 0; q-- {
			qs = append(qs, &primitive.MessageQueue{Topic: topic, BrokerName: name, QueueId: q})
		}
	}
	return qs
}

// hostileKeys21 are sharding keys an attacker (or a careless caller) would
// use: case variants, whitespace, NUL, invalid UTF-8, a key of 32 KiB.
func hostileKeys21() []string {
	keys := []string{"order-1", "Order-1", "ORDER-1", "order-1 ", " order-1", "\t", " ", "\x00", "a\x00b",
		"\xff\xfe", "\xc3\x28", "é", "e\u0301", "𝄞", strings.Repeat("k", 32<<10)}
	for i := range 500 {
		keys = append(keys, "k"+strconv.Itoa(i))
	}
	return keys
}

// TestHostile21SelectorAgreesWithTheOfficialHashSelector pins the promise
// that a service using the official client's NewHashQueueSelector and one
// using this package pick the same queue for a key (on 64-bit platforms:
// see QueueIndex), also for a topic whose queue count differs per broker,
// with the route handed over in any order, and for keys that are not
// UTF-8, contain NUL, differ only in case or are 32 KiB long.
func TestHostile21SelectorAgreesWithTheOfficialHashSelector(t *testing.T) {
	t.Parallel()
	if strconv.IntSize == 32 {
		t.Skip("the official selector converts the hash to a 32-bit int and goes negative for half the keys; QueueIndex documents it")
	}
	route := route21("t", "broker-c", 3, "broker-a", 4, "broker-b", 1)
	sorted := slices.Clone(route)
	slices.SortFunc(sorted, func(a, b *primitive.MessageQueue) int {
		if c := strings.Compare(a.BrokerName, b.BrokerName); c != 0 {
			return c
		}
		return a.QueueId - b.QueueId
	})
	official := rmqproducer.NewHashQueueSelector()
	s := &orderly.Selector{}
	for _, key := range hostileKeys21() {
		msg := primitive.NewMessage("t", nil).WithShardingKey(key)
		got := s.Select(msg, slices.Clone(route), "")
		want := official.Select(msg, sorted, "")
		if got == nil || got.BrokerName != want.BrokerName || got.QueueId != want.QueueId {
			t.Errorf("key %q: selector picked %v, official hash selector %s/%d", key, got, want.BrokerName, want.QueueId)
		}
		h := fnv.New32a()
		h.Write([]byte(key))
		if i := orderly.QueueIndex(key, len(route)); sorted[i] != want || i != int(h.Sum32()%uint32(len(route))) {
			t.Errorf("key %q: QueueIndex %d, official %s/%d", key, i, want.BrokerName, want.QueueId)
		}
	}
}

// TestHostile21SelectorHoldsUnderConcurrentFlapsWithinTheGrace: many
// goroutines select while broker-b's queues leave and come back (a route
// that flaps, each sender with its own view of it). Within the grace no
// key may ever leave its queue of the full layout: a key of broker-b is
// held back (nil) while its view lacks broker-b, every other pick is the
// key's queue over all 6 queues, and no layout change is reported. Keyless
// messages only ever go to queues of the view they were selected with.
func TestHostile21SelectorHoldsUnderConcurrentFlapsWithinTheGrace(t *testing.T) {
	t.Parallel()
	full := route21("t", "broker-a", 4, "broker-b", 2)
	lost := route21("t", "broker-a", 4)
	var changes, held atomic.Int32
	s := &orderly.Selector{LossGrace: time.Hour,
		OnChange:      func(orderly.QueueCountChange) { changes.Add(1) },
		OnUnavailable: func(orderly.QueueUnavailable) { held.Add(1) }}
	s.Select(primitive.NewMessage("t", nil), full, "") // the layout: 6 queues
	keys := hostileKeys21()[:100]
	layout := slices.Clone(full)
	slices.SortFunc(layout, func(a, b *primitive.MessageQueue) int {
		if c := strings.Compare(a.BrokerName, b.BrokerName); c != 0 {
			return c
		}
		return a.QueueId - b.QueueId
	})
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	var wantHeld atomic.Int32
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 400 {
				view := full
				if (g+i)%3 != 0 {
					view = lost
				}
				key := keys[(g*31+i)%len(keys)]
				if i%5 == 0 {
					q := s.Select(primitive.NewMessage("t", nil), view, "")
					if q == nil || !slices.ContainsFunc(view, func(v *primitive.MessageQueue) bool { return *v == *q }) {
						errs <- fmt.Sprintf("keyless message went to %v, not a queue of its view", q)
						return
					}
					continue
				}
				want := layout[orderly.QueueIndex(key, len(layout))]
				q := s.Select(primitive.NewMessage("t", nil).WithShardingKey(key), view, "")
				switch {
				case q == nil && len(view) == len(lost) && want.BrokerName == "broker-b":
					wantHeld.Add(1)
				case q == nil || q.BrokerName != want.BrokerName || q.QueueId != want.QueueId:
					errs <- fmt.Sprintf("key %q (queue %s/%d) went to %v with a view of %d queues",
						key, want.BrokerName, want.QueueId, q, len(view))
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if changes.Load() != 0 || held.Load() != wantHeld.Load() || wantHeld.Load() == 0 {
		t.Errorf("%d layout changes reported, %d holds reported for %d held picks; want none, and one per held pick",
			changes.Load(), held.Load(), wantHeld.Load())
	}
}

// TestHostile21SelectorReportsLayoutChangesInTheOrderTheyHappen: Select
// applies a layout change under its lock but reports it after unlocking,
// so two changes made by two sends close together can reach OnChange
// (and WithQueueCountChange) in the reverse order. Here the topic grows
// from 4 queues to 8 (broker-b joins) and then to 12 (broker-c joins); the
// first report is still on its way (the goroutine that made it is
// preempted between the unlock and the call, forced here by holding its
// callback) when the second change is made and reported. The reports then
// read 8 -> 12, then 4 -> 8: whoever follows them (an alert that pauses
// the producers of ordered topics until the layout settles, a dashboard)
// believes the topic has 8 queues while keys hash over 12, and has
// never been told of a change from 8 to 12 as the last word.
func TestHostile21SelectorReportsLayoutChangesInTheOrderTheyHappen(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var reports []orderly.QueueCountChange
	firstStarted, releaseFirst := make(chan struct{}), make(chan struct{})
	s := &orderly.Selector{OnChange: func(c orderly.QueueCountChange) {
		if c.Old == 4 { // the first change: its goroutine is slow to report it
			close(firstStarted)
			<-releaseFirst
		}
		mu.Lock()
		reports = append(reports, c)
		mu.Unlock()
	}}
	key := primitive.NewMessage("t", nil).WithShardingKey("order-1")
	s.Select(key, route21("t", "broker-a", 4), "")
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Select(key, route21("t", "broker-a", 4, "broker-b", 4), "")
	}()
	<-firstStarted
	s.Select(key, route21("t", "broker-a", 4, "broker-b", 4, "broker-c", 4), "")
	close(releaseFirst)
	<-done
	mu.Lock()
	defer mu.Unlock()
	want := []orderly.QueueCountChange{{Topic: "t", Old: 4, New: 8}, {Topic: "t", Old: 8, New: 12}}
	if !slices.Equal(reports, want) {
		t.Errorf("reports %+v, want %+v: the last report must describe the layout keys hash over now", reports, want)
	}
}
