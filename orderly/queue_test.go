package orderly_test

import (
	"fmt"
	"hash/fnv"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/seed157d4c4d/reliablemq/orderly"
)

func TestQueueIndexIsStableAndNeverNegative(t *testing.T) {
	t.Parallel()
	// Pinned values: a change here reorders every user's in-flight keys.
	for key, want := range map[string]int{"order-1": 5, "order-2": 4, "": 5, "ключ": 1} {
		if got := orderly.QueueIndex(key, 8); got != want {
			t.Errorf("QueueIndex(%q, 8) = %d, want %d", key, got, want)
		}
	}
	for i := range 100000 {
		key := fmt.Sprint("k", i)
		got := orderly.QueueIndex(key, 7)
		h := fnv.New32a()
		h.Write([]byte(key))
		if got < 0 || got >= 7 || got != int(h.Sum32()%7) {
			t.Fatalf("QueueIndex(%q, 7) = %d", key, got)
		}
	}
	if orderly.QueueIndex("k", 0) != -1 {
		t.Error("no queues must give -1")
	}
}

func queues(n int, broker string) []*primitive.MessageQueue {
	var qs []*primitive.MessageQueue
	for i := n - 1; i >= 0; i-- { // deliberately unsorted
		qs = append(qs, &primitive.MessageQueue{Topic: "t", BrokerName: broker, QueueId: i})
	}
	return qs
}

func TestSelectorRoutesKeysAndReportsQueueCountChanges(t *testing.T) {
	t.Parallel()
	var changes []orderly.QueueCountChange
	s := &orderly.Selector{OnChange: func(c orderly.QueueCountChange) { changes = append(changes, c) }}
	msg := primitive.NewMessage("t", []byte("x")).WithShardingKey("order-1")
	for range 3 {
		if q := s.Select(msg, queues(4, "b"), ""); q.QueueId != orderly.QueueIndex("order-1", 4) {
			t.Fatalf("queue %d", q.QueueId)
		}
	}
	two := append(queues(4, "b"), queues(4, "a")...) // broker a joins: adopted at once
	q := s.Select(msg, two, "")
	if want := orderly.QueueIndex("order-1", 8); q.BrokerName != []string{"a", "b"}[want/4] || q.QueueId != want%4 {
		t.Fatalf("picked %s/%d from the sorted list, want index %d", q.BrokerName, q.QueueId, want)
	}
	if len(changes) != 1 || changes[0] != (orderly.QueueCountChange{Topic: "t", Old: 4, New: 8}) {
		t.Fatalf("changes %+v, want one 4 -> 8", changes)
	}
	seen := map[int]bool{}
	plain := primitive.NewMessage("t", []byte("x"))
	for range 8 {
		seen[s.Select(plain, queues(4, "b"), "").QueueId] = true
	}
	if len(seen) != 4 {
		t.Fatalf("keyless messages used queues %v, want round robin over the 4 routed", seen)
	}
	if s.Select(msg, nil, "") != nil {
		t.Fatal("no queues must give nil")
	}
}

// TestSelectorHoldsKeysOfALostBroker: when broker b leaves the route, keys
// whose queue lived on b are held back (nil: a transient send failure),
// never re-hashed onto a's queues while their earlier messages wait on b;
// keys on a keep their queue; b's return restores everything. Only a loss
// longer than LossGrace adopts the smaller layout.
func TestSelectorHoldsKeysOfALostBroker(t *testing.T) {
	t.Parallel()
	both := append(queues(4, "a"), queues(4, "b")...)
	var onA, onB string
	for i := 0; onA == "" || onB == ""; i++ {
		k := fmt.Sprintf("order-%d", i)
		if orderly.QueueIndex(k, 8) < 4 {
			onA = k
		} else {
			onB = k
		}
	}
	keyed := func(k string) *primitive.Message { return primitive.NewMessage("t", nil).WithShardingKey(k) }
	var changes []orderly.QueueCountChange
	var held []orderly.QueueUnavailable
	s := &orderly.Selector{LossGrace: time.Hour,
		OnChange:      func(c orderly.QueueCountChange) { changes = append(changes, c) },
		OnUnavailable: func(u orderly.QueueUnavailable) { held = append(held, u) }}
	before := s.Select(keyed(onA), both, "")
	for range 3 {
		if q := s.Select(keyed(onB), queues(4, "a"), ""); q != nil {
			t.Fatalf("key %s of lost broker b re-hashed onto %s/%d", onB, q.BrokerName, q.QueueId)
		}
		if q := s.Select(keyed(onA), queues(4, "a"), ""); q.BrokerName != before.BrokerName || q.QueueId != before.QueueId {
			t.Fatalf("key on a moved from %d to %s/%d", before.QueueId, q.BrokerName, q.QueueId)
		}
		if q := s.Select(primitive.NewMessage("t", nil), queues(4, "a"), ""); q == nil || q.BrokerName != "a" {
			t.Fatalf("keyless message: %v", q)
		}
	}
	if len(held) != 3 || held[0].BrokerName != "b" || held[0].ShardingKey != onB || len(changes) != 0 {
		t.Fatalf("held %+v, changes %+v", held, changes)
	}
	if q := s.Select(keyed(onB), both, ""); q == nil || q.BrokerName != "b" {
		t.Fatalf("key of b after b's return: %v", q)
	}

	quick := &orderly.Selector{LossGrace: time.Nanosecond,
		OnChange: func(c orderly.QueueCountChange) { changes = append(changes, c) }}
	quick.Select(keyed(onB), both, "")
	quick.Select(keyed(onB), queues(4, "a"), "") // the loss begins
	time.Sleep(time.Millisecond)
	if q := quick.Select(keyed(onB), queues(4, "a"), ""); q == nil || q.BrokerName != "a" {
		t.Fatalf("after the grace the key must re-hash onto a, got %v", q)
	}
	if len(changes) != 1 || changes[0] != (orderly.QueueCountChange{Topic: "t", Old: 8, New: 4}) {
		t.Fatalf("changes %+v, want one 8 -> 4", changes)
	}
}
