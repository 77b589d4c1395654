package consumer

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	rmqconsumer "github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/seed157d4c4d/reliablemq/idempotency"
)

// freeStore is a BatchStore that costs no CPU: every key is new and
// every completion holds, each call after rtt (a round trip, so that
// concurrent batches combine). What is left of a guarded batch's CPU is
// the wrapper's own.
type freeStore struct{ rtt time.Duration }

func (freeStore) Claim(context.Context, string, string, string, time.Duration) (idempotency.Outcome, int, error) {
	return idempotency.Acquired, 1, nil
}

func (freeStore) Complete(context.Context, string, string, string, time.Duration) error { return nil }

func (freeStore) Release(context.Context, string, string, string, bool) error { return nil }

func (s freeStore) ClaimBatch(_ context.Context, _ string, items []idempotency.KeyToken, _ time.Duration) []idempotency.ClaimResult {
	time.Sleep(s.rtt)
	out := make([]idempotency.ClaimResult, len(items))
	for i := range out {
		out[i] = idempotency.ClaimResult{Outcome: idempotency.Acquired, Attempts: 1}
	}
	return out
}

func (s freeStore) CompleteBatch(_ context.Context, _ string, items []idempotency.KeyToken, _ time.Duration) []error {
	time.Sleep(s.rtt)
	return make([]error, len(items))
}

// BenchmarkOverhead measures the wrapper's own work per message, as the
// client hands batches to it from parallel goroutines.
func BenchmarkOverhead(b *testing.B) {
	for _, tc := range []struct {
		name  string
		batch int
		guard bool
		raw   bool // the client's listener alone: what the others add to
	}{{"raw", 1, false, true}, {"none", 1, false, false}, {"guard_batch32", 32, true, false}} {
		b.Run(tc.name, func(b *testing.B) {
			opts := []Option{WithParker(nopParker{})}
			if tc.guard {
				g, err := idempotency.NewGuard("g", freeStore{rtt: 100 * time.Microsecond})
				if err != nil {
					b.Fatal(err)
				}
				opts = append(opts, WithGuard(g), WithBatchSize(tc.batch))
			}
			c, err := New([]string{"127.0.0.1:1"}, "g", "T", func(context.Context, *Message) error { return nil }, opts...)
			if err != nil {
				b.Fatal(err)
			}
			listen := c.consumeConcurrently
			if tc.raw {
				listen = func(_ context.Context, msgs ...*primitive.MessageExt) (rmqconsumer.ConsumeResult, error) {
					for range msgs {
						handled.Add(1)
					}
					return rmqconsumer.ConsumeSuccess, nil
				}
			}
			var seq sync.Mutex
			n := 0
			next := func() []*primitive.MessageExt {
				seq.Lock()
				defer seq.Unlock()
				msgs := make([]*primitive.MessageExt, tc.batch)
				for i := range msgs {
					n++
					m := &primitive.MessageExt{Message: primitive.Message{Topic: "T", Body: []byte("body")}, MsgId: fmt.Sprint("id", n)}
					// What a delivery from a broker carries besides.
					m.WithProperties(map[string]string{"UNIQ_KEY": m.MsgId, "WAIT": "true", "MIN_OFFSET": "0",
						"MAX_OFFSET": "20000", "CONSUME_START_TIME": "1764600000000", "CLUSTER": "DefaultCluster"})
					m.WithKeys([]string{fmt.Sprint("k", n)})
					msgs[i] = m
				}
				return msgs
			}
			b.ReportAllocs()
			cpu0 := processCPU()
			defer func() { b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N*tc.batch), "cpu-ns/msg") }()
			b.SetParallelism(10) // the client's 20 consume goroutines
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					msgs := next()
					// The client calls from a new goroutine per batch.
					done := make(chan struct{})
					go func() {
						defer close(done)
						if r, _ := clientFrames(ctx, listen, msgs); r != 0 {
							b.Error("not acknowledged")
						}
					}()
					<-done
				}
			})
		})
	}
}

var handled atomic.Int64

// clientFrames calls listen below as much stack as the client's
// goroutine uses before its listener (a frame of about 800 bytes), so
// that a listener's stack grows where it would in the client.
//
//go:noinline
func clientFrames(ctx context.Context, listen func(context.Context, ...*primitive.MessageExt) (rmqconsumer.ConsumeResult, error), msgs []*primitive.MessageExt) (rmqconsumer.ConsumeResult, error) {
	var pad [800]byte
	r, err := listen(ctx, msgs...)
	padSink = pad[len(msgs)]
	return r, err
}

var padSink byte

type nopParker struct{}

func (nopParker) Park(context.Context, *DeadLetter) (bool, error) { return true, nil }

// processCPU is this process's CPU time so far (user and system).
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
