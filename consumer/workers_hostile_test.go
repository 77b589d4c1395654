package consumer

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/seed157d4c4d/reliablemq/idempotency"
)

// fakeClient stands in for the started push client: Close only shuts it
// down.
type fakeClient struct{ rocketmq.PushConsumer }

func (fakeClient) Shutdown() error { return nil }

// fakeStarted returns a concurrent consumer of topic T for group g with h
// and opts, as if started: a test calls its handleBatch as the client's
// goroutine would.
func fakeStarted(t testing.TB, h Handler, opts ...Option) *Consumer {
	t.Helper()
	c, err := New([]string{"127.0.0.1:1"}, "g", "T", h, opts...)
	if err != nil {
		t.Fatal(err)
	}
	c.client, c.started = fakeClient{}, true
	return c
}

// keyed returns n deliveries of topic T: ids id0, id1, ..., keys k0, k1, ...
func keyed(n int) []*primitive.MessageExt {
	msgs := make([]*primitive.MessageExt, n)
	for i := range msgs {
		msgs[i] = &primitive.MessageExt{Message: primitive.Message{Topic: "T"}, MsgId: fmt.Sprint("id", i)}
		msgs[i].WithKeys([]string{fmt.Sprint("k", i)})
	}
	return msgs
}

// TestCloseDuringBatchesLeavesNoWorkerOrHandler guards against
// the pooled batch workers outliving Close or racing it: many batches
// (with repeated keys, slow handlers and panicking ones) run on a guarded
// consumer while Close begins. Every batch call returns, no handler runs
// after Close returned, no worker goroutine is left, and each
// acknowledged batch had every handler of its wave settled (run -race).
func TestCloseDuringBatchesLeavesNoWorkerOrHandler(t *testing.T) {
	g, err := idempotency.NewGuard("g", freeStore{})
	if err != nil {
		t.Fatal(err)
	}
	var closed atomic.Bool
	var after, ran atomic.Int32
	h := func(ctx context.Context, m *Message) error {
		ran.Add(1)
		if rand.IntN(8) == 0 {
			time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
		}
		if strings.HasSuffix(m.MsgID, "00") {
			panic("boom") // retried: its batch waits in the retry store until Close
		}
		if closed.Load() {
			after.Add(1)
		}
		return nil
	}
	c := fakeStarted(t, h, WithParker(nopParker{}), WithGuard(g), WithBatchSize(16),
		WithLogger(slog.New(slog.DiscardHandler)))
	var n atomic.Int64
	batch := func() []*primitive.MessageExt {
		msgs := make([]*primitive.MessageExt, 1+rand.IntN(16))
		for i := range msgs {
			id := n.Add(1)
			m := &primitive.MessageExt{Message: primitive.Message{Topic: "T", Body: []byte("b")}, MsgId: fmt.Sprint("id", id)}
			m.WithKeys([]string{fmt.Sprint("k", id%7)}) // keys repeat within a batch
			msgs[i] = m
		}
		return msgs
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 40 {
				c.consumeConcurrently(context.Background(), batch()...)
			}
		})
	}
	for ran.Load() < 100 {
		time.Sleep(time.Millisecond)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	closed.Store(true)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("a batch call never returned after Close")
	}
	if a := after.Load(); a > 0 {
		t.Errorf("%d handlers ran after Close returned", a)
	}
	buf := make([]byte, 1<<20)
	if stacks := string(buf[:runtime.Stack(buf, true)]); strings.Contains(stacks, "consumer.(*workers).loop") {
		t.Fatalf("a batch worker outlived Close:\n%s", stacks)
	}
}
