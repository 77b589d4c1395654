package orderly_test

import (
	"fmt"
	"hash/fnv"
	"testing"

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
		if q := s.Select(msg, queues(8, "b"), ""); q.QueueId != orderly.QueueIndex("order-1", 8) {
			t.Fatalf("queue %d", q.QueueId)
		}
	}
	two := append(queues(4, "b"), queues(4, "a")...)
	q := s.Select(msg, two, "")
	if want := orderly.QueueIndex("order-1", 8); q.BrokerName != []string{"a", "b"}[want/4] || q.QueueId != want%4 {
		t.Fatalf("picked %s/%d from the sorted list, want index %d", q.BrokerName, q.QueueId, want)
	}
	s.Select(msg, queues(4, "b"), "")
	if len(changes) != 1 || changes[0] != (orderly.QueueCountChange{Topic: "t", Old: 8, New: 4}) {
		t.Fatalf("changes %+v, want one 8 -> 4", changes)
	}
	seen := map[int]bool{}
	plain := primitive.NewMessage("t", []byte("x"))
	for range 8 {
		seen[s.Select(plain, queues(4, "b"), "").QueueId] = true
	}
	if len(seen) != 4 {
		t.Fatalf("keyless messages used queues %v, want round robin over 4", seen)
	}
	if s.Select(msg, nil, "") != nil {
		t.Fatal("no queues must give nil")
	}
}
