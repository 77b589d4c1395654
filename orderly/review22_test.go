package orderly_test

import (
	"testing"

	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/seed157d4c4d/reliablemq/orderly"
)

// TestReview22SelectorReportsAfterOnChangePanics: an OnChange that panics
// once (a nil map in the caller's hook, a metrics registry that panics on
// a duplicate) must not silence every later change. The Select that
// reports holds the reporting flag; a panic out of OnChange left it set,
// so no Select ever reported again and the pending queue grew with every
// change for the life of the process.
func TestReview22SelectorReportsAfterOnChangePanics(t *testing.T) {
	t.Parallel()
	var got []orderly.QueueCountChange
	panicked := false
	s := &orderly.Selector{OnChange: func(c orderly.QueueCountChange) {
		if !panicked {
			panicked = true
			panic("hook bug")
		}
		got = append(got, c)
	}}
	msg := primitive.NewMessage("t", []byte("b"))
	msg.WithShardingKey("k")
	sel := func(queues int) {
		defer func() { _ = recover() }() // the caller survives the hook's panic
		s.Select(msg, route21("t", "broker-a", queues), "")
	}
	sel(4) // the first layout, unreported
	sel(8) // reported: OnChange panics
	if !panicked {
		t.Fatal("OnChange was not called for 4 -> 8")
	}
	sel(12)
	if len(got) == 0 || got[len(got)-1] != (orderly.QueueCountChange{Topic: "t", Old: 8, New: 12}) {
		t.Fatalf("after one panicking OnChange, the change 8 -> 12 was reported as %v; want it reported", got)
	}
}
