package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/deadletter"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// testNamespace returns a fresh namespace name.
func testNamespace(t *testing.T) string {
	n := testenv.Name(t, "ns")
	return "ns" + n[len(n)-8:]
}

// TestNamespaceRoundTrip: a producer and a consumer in one namespace
// exchange a message through the broker's namespaced topic; the consumer's
// own retry copy goes through the namespaced retry topic and comes back
// under the bare topic; a parked message records the namespaced group and
// the bare topic. A consumer of the same group and topic names outside the
// namespace sees nothing.
func TestNamespaceRoundTrip(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	ns := testNamespace(t)
	f.env.CreateTopic(t, ns+"%"+f.topic, 2)
	f.env.CreateTopic(t, "%RETRY%"+ns+"%"+f.group, 1)
	prod, err := producer.New(f.env.NameServers(), producer.WithNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prod.Close() })

	var mu sync.Mutex
	seen := map[string][]string{} // key -> "topic@attempt" per delivery
	h := func(ctx context.Context, m *consumer.Message) error {
		key := consumer.Key(m)
		mu.Lock()
		seen[key] = append(seen[key], fmt.Sprintf("%s@%d", m.Topic, m.Attempt))
		mu.Unlock()
		switch {
		case key == "retry" && m.Attempt == 1:
			return errors.New("upstream 503")
		case key == "park":
			return consumer.Permanent(errors.New("bad coupon"))
		}
		return nil
	}
	f.start(consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithGuard(f.guard()),
		consumer.WithParker(f.dead), consumer.WithNamespace(ns), consumer.WithRetryDelay(time.Second)))
	var outside int
	var outsideMu sync.Mutex
	f.start(consumer.New(f.env.NameServers(), f.group, f.topic, func(context.Context, *consumer.Message) error {
		outsideMu.Lock()
		outside++
		outsideMu.Unlock()
		return nil
	}, consumer.WithParker(&memoryParker{})))

	for _, key := range []string{"ok", "retry", "park"} {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		res, err := prod.Send(ctx, producer.Message{Topic: f.topic, Body: []byte(key), Keys: []string{key}})
		cancel()
		if err != nil {
			t.Fatalf("send %s: %v", key, err)
		}
		if res.MsgID == "" {
			t.Fatalf("send %s: no message id", key)
		}
	}
	parked := func() []*deadletter.Entry {
		l, err := f.dead.List(context.Background(), deadletter.Filter{Group: ns + "%" + f.group})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	f.eventually("ok handled, retry handled on its second attempt, park parked", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen["ok"]) == 1 && len(seen["retry"]) == 2 && len(parked()) == 1
	})
	f.settle()
	mu.Lock()
	defer mu.Unlock()
	want := map[string][]string{"ok": {f.topic + "@1"}, "retry": {f.topic + "@1", f.topic + "@2"}, "park": {f.topic + "@1"}}
	for key, w := range want {
		if fmt.Sprint(seen[key]) != fmt.Sprint(w) {
			t.Errorf("deliveries of %s: %v, want %v (the bare topic, attempts counted)", key, seen[key], w)
		}
	}
	if d := parked(); len(d) != 1 || d[0].Topic != f.topic || d[0].Group != ns+"%"+f.group || string(d[0].Body) != "park" {
		t.Errorf("parked %+v; want one entry with the bare topic and the namespaced group", d)
	}
	if l := f.parked(); len(l) != 0 {
		t.Errorf("%d entries under the bare group name", len(l))
	}
	outsideMu.Lock()
	defer outsideMu.Unlock()
	if outside != 0 {
		t.Errorf("a consumer outside the namespace got %d messages", outside)
	}
}

func TestNamespaceIsValidated(t *testing.T) {
	for _, ns := range []string{"a%b", "a b", "a|b"} {
		if _, err := consumer.New([]string{"127.0.0.1:9876"}, "g", "t", func(context.Context, *consumer.Message) error { return nil },
			consumer.WithParker(&memoryParker{}), consumer.WithNamespace(ns)); err == nil {
			t.Errorf("consumer namespace %q accepted", ns)
		}
		if _, err := producer.New([]string{"127.0.0.1:9876"}, producer.WithNamespace(ns)); err == nil {
			t.Errorf("producer namespace %q accepted", ns)
		}
	}
}
