package bench

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apache/rocketmq-client-go/v2"
	rmqconsumer "github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/observe"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// consumePair: consumer.New (guarded by "none", "redis" or "mysql")
// against a raw push consumer, each in its own group, over the same
// cfg.DrainRows messages loaded beforehand. Rates run from the first
// message to the last. Latencies come from a phase of their own at a
// fixed load (see consumeLatency).
//
// The guarded sides take batches of [consumeBatch] (consumer.WithBatchSize):
// a guard's round trips per message would cap them, one round trip per
// batch does not. The unguarded side runs with the defaults, one message
// at a time, as the raw consumer does.
func (e *env) consumePair(guard string) pair {
	subject := "consumer.New"
	if guard != "none" {
		subject = fmt.Sprint("consumer.New, batch ", consumeBatch)
	}
	p := pair{name: "consume, guard " + guard, baseline: "raw push consumer", subject: subject,
		target: map[string]float64{"none": 0.9, "redis": 0.5, "mysql": 0.3}[guard],
		run:    func(ctx context.Context) (sample, sample, error) { return e.runConsume(ctx, guard) }}
	if guard == "none" {
		p.floor, p.floorName, p.floorWhole = e.rawReading, "raw, reading", true
	} else {
		p.floor = func(ctx context.Context) (sample, error) { return e.guardAlone(ctx, guard) }
		p.floorName = "store alone"
	}
	return p
}

// consumeBatch is the guarded consume pairs' batch size: the client's
// pull size, so each pull is one batch.
const consumeBatch = 32

func (e *env) runConsume(ctx context.Context, guard string) (sample, sample, error) {
	topic, err := e.topic(ctx, "BenchConsume")
	if err != nil {
		return sample{}, sample{}, err
	}
	if err := e.load(ctx, topic, e.cfg.DrainRows); err != nil {
		return sample{}, sample{}, err
	}
	// Unique per run: guards keep done markers for days, across runs.
	seq := fmt.Sprint(time.Now().UnixNano(), "_", e.seq.Add(1))
	group := fmt.Sprint("bench_", guard, "_", seq)
	opts, err := e.consumerOptions(guard, group, seq)
	if err != nil {
		return sample{}, sample{}, err
	}
	base, subject, err := e.sides(func() (sample, error) {
		return e.consumeRate(func(count func()) (func(), error) { return e.startRaw(topic, seq, count) })
	}, func() (sample, error) {
		return e.consumeRate(func(count func()) (func(), error) {
			c, err := consumer.New(e.names, group, topic, func(context.Context, *consumer.Message) error {
				count()
				return nil
			}, opts...)
			if err != nil {
				return nil, err
			}
			if err := c.Start(); err != nil {
				return nil, err
			}
			return func() { c.Close() }, nil
		})
	}, nil)
	if err != nil {
		return sample{}, sample{}, err
	}
	// The latency phases, in the repeat's order too; the rates stay.
	lb, ls, err := e.sides(func() (s sample, err error) {
		s.p50, s.p99, err = e.consumeLatency(ctx, func(topic, seq string, handled func(keys string)) (func(), error) {
			return e.startRawWith(topic, seq, func(_ context.Context, msgs ...*primitive.MessageExt) (rmqconsumer.ConsumeResult, error) {
				for _, m := range msgs {
					handled(m.GetKeys())
				}
				return rmqconsumer.ConsumeSuccess, nil
			})
		})
		return s, err
	}, func() (s sample, err error) {
		s.p50, s.p99, err = e.consumeLatency(ctx, func(topic, seq string, handled func(keys string)) (func(), error) {
			group := fmt.Sprint("bench_latency_", guard, "_", seq)
			opts, err := e.consumerOptions(guard, group, seq)
			if err != nil {
				return nil, err
			}
			opts = append(opts, consumer.WithHooks(observe.Hooks{Event: func(_ context.Context, ev observe.Event) {
				if ev.Kind == observe.Handled {
					handled(ev.Key)
				}
			}}))
			c, err := consumer.New(e.names, group, topic, func(context.Context, *consumer.Message) error { return nil }, opts...)
			if err != nil {
				return nil, err
			}
			if err := c.Start(); err != nil {
				return nil, err
			}
			return func() { c.Close() }, nil
		})
		return s, err
	}, nil)
	base.p50, base.p99, subject.p50, subject.p99 = lb.p50, lb.p99, ls.p50, ls.p99
	return base, subject, err
}

// latencyRate is the load of a consume pair's latency phase, in messages
// a second: well below every side's rate, so a message waits for no
// backlog, only for what handling it takes.
const latencyRate = 1000

// consumeLatency measures one side of a consume pair per message: from
// just before its send to its handling (the raw listener's call; the
// wrapper's Handled event, which with a guard comes once the key's
// completion is recorded), over max(50, cfg.Ops/8) messages sent on a
// fixed schedule of latencyRate a second to a topic of its own. start
// starts the side on topic and calls handled with each message's keys.
// Messages keyed "warm" are sent first, until one is handled, so the
// clock starts once the side holds its queues.
func (e *env) consumeLatency(ctx context.Context, start func(topic, seq string, handled func(keys string)) (stop func(), err error)) (p50, p99 time.Duration, err error) {
	topic, err := e.topic(ctx, "BenchLatency")
	if err != nil {
		return 0, 0, err
	}
	n := max(50, e.cfg.Ops/8)
	var lat recorder
	var got atomic.Int64
	var warmOnce sync.Once
	warm, done := make(chan struct{}), make(chan struct{})
	seq := fmt.Sprint(time.Now().UnixNano(), "_", e.seq.Add(1))
	stop, err := start(topic, seq, func(keys string) {
		if keys == "warm" {
			warmOnce.Do(func() { close(warm) })
			return
		}
		sent, err := strconv.ParseInt(strings.TrimPrefix(keys, "lat-"), 10, 64)
		if err != nil {
			return
		}
		lat.add(time.Duration(time.Now().UnixNano() - sent))
		if got.Add(1) == int64(n) {
			close(done)
		}
	})
	if err != nil {
		return 0, 0, err
	}
	defer stop()
	send := func(key string) error {
		_, err := e.prod.Send(ctx, producer.Message{Topic: topic, Body: e.body, Keys: []string{key}})
		return err
	}
	giveUp := time.After(time.Minute)
	for warming := true; warming; {
		if err := send("warm"); err != nil {
			return 0, 0, err
		}
		select {
		case <-warm:
			warming = false
		case <-time.After(200 * time.Millisecond):
		case <-giveUp:
			return 0, 0, fmt.Errorf("latency: the consumer of %s handled nothing in a minute", topic)
		}
	}
	// On schedule: a send that is late does not push the next one back.
	begin, every := time.Now(), time.Second/latencyRate
	for i := range n {
		if wait := time.Until(begin.Add(time.Duration(i) * every)); wait > 0 {
			time.Sleep(wait)
		}
		if err := send(fmt.Sprint("lat-", time.Now().UnixNano())); err != nil {
			return 0, 0, err
		}
	}
	select {
	case <-done:
	case <-time.After(time.Minute):
		return 0, 0, fmt.Errorf("latency: handled %d of %d", got.Load(), n)
	}
	p50, p99 = lat.percentiles()
	return p50, p99, nil
}

// load sends n messages to topic in batches of 64.
func (e *env) load(ctx context.Context, topic string, n int) error {
	batch := make([]producer.Message, 0, 64)
	for i := range n {
		batch = append(batch, producer.Message{Topic: topic, Body: e.body, Keys: []string{fmt.Sprint("k-", i)}})
		if len(batch) == cap(batch) || i == n-1 {
			if _, err := e.prod.SendBatch(ctx, batch); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	return nil
}

// consumeRate starts a consumer that calls count per message and returns
// its rate from the first message to the last of cfg.DrainRows.
func (e *env) consumeRate(start func(count func()) (stop func(), err error)) (sample, error) {
	n := e.cfg.DrainRows
	var got, first, last atomic.Int64
	done := make(chan struct{})
	cpu := e.meter.now()
	stop, err := start(func() {
		now := time.Now().UnixNano()
		first.CompareAndSwap(0, now)
		if got.Add(1) == int64(n) {
			last.Store(now)
			close(done)
		}
	})
	if err != nil {
		return sample{}, err
	}
	defer stop()
	select {
	case <-done:
	case <-time.After(3 * time.Minute):
		return sample{}, fmt.Errorf("consumed %d of %d", got.Load(), n)
	}
	return sample{rate: float64(n) / time.Duration(last.Load()-first.Load()).Seconds(), cpu: e.meter.perOp(cpu, n)}, nil
}

// rawReading consumes cfg.DrainRows messages of a topic of its own with
// the raw push consumer, as the unguarded pair's baseline does, but reads
// each message's properties (as any consumer that hands a handler its
// message must) and counts it below a frame of 512 bytes (less than the
// wrapper's frames between the client and its handler): the work an
// unguarded wrapper cannot avoid beyond the baseline's. Most of the
// frame's cost is not its own: the client runs each batch on a new
// goroutine, whose first stack it fills before the listener; a listener
// needing more grows the stack, by copying, per batch.
func (e *env) rawReading(ctx context.Context) (sample, error) {
	topic, err := e.topic(ctx, "BenchConsumeFloor")
	if err != nil {
		return sample{}, err
	}
	if err := e.load(ctx, topic, e.cfg.DrainRows); err != nil {
		return sample{}, err
	}
	seq := fmt.Sprint(time.Now().UnixNano(), "_", e.seq.Add(1))
	return e.consumeRate(func(count func()) (func(), error) {
		return e.startRawWith(topic, seq, func(_ context.Context, msgs ...*primitive.MessageExt) (rmqconsumer.ConsumeResult, error) {
			for _, m := range msgs {
				belowAFrame(m.GetProperties(), count)
			}
			return rmqconsumer.ConsumeSuccess, nil
		})
	})
}

// belowAFrame calls count below a frame of 512 bytes: the frame is
// written before the call and read after it, so it is there during it.
//
//go:noinline
func belowAFrame(props map[string]string, count func()) {
	var frame [512]byte
	i := len(props) % len(frame)
	frame[i] = 1
	count()
	if frame[(i+1)%len(frame)] != 0 { // never: only frame[i] is set
		panic("bench: frame overwritten")
	}
}

// startRaw starts the official push consumer on topic from its first offset.
func (e *env) startRaw(topic, seq string, count func()) (func(), error) {
	return e.startRawWith(topic, seq, func(_ context.Context, msgs ...*primitive.MessageExt) (rmqconsumer.ConsumeResult, error) {
		for range msgs {
			count()
		}
		return rmqconsumer.ConsumeSuccess, nil
	})
}

// startRawWith starts the official push consumer on topic from its first
// offset with listener.
func (e *env) startRawWith(topic, seq string, listener func(context.Context, ...*primitive.MessageExt) (rmqconsumer.ConsumeResult, error)) (func(), error) {
	c, err := rocketmq.NewPushConsumer(rmqconsumer.WithNameServer(e.names),
		rmqconsumer.WithGroupName(fmt.Sprint("bench_raw_", seq)), rmqconsumer.WithInstance(fmt.Sprint("bench-raw-c-", seq)),
		rmqconsumer.WithConsumeFromWhere(rmqconsumer.ConsumeFromFirstOffset))
	if err != nil {
		return nil, err
	}
	err = c.Subscribe(topic, rmqconsumer.MessageSelector{}, listener)
	if err != nil {
		return nil, err
	}
	if err := c.Start(); err != nil {
		return nil, err
	}
	return func() { c.Shutdown() }, nil
}

// consumerOptions returns the wrapper's options for guard: dead letters
// discarded, and the guard's store keyed apart per run.
func (e *env) consumerOptions(guard, group, seq string) ([]consumer.Option, error) {
	opts := []consumer.Option{consumer.WithParker(discardParker{})}
	if guard == "none" {
		return opts, nil
	}
	g, err := e.newGuard(guard, group, seq)
	if err != nil {
		return nil, err
	}
	return append(opts, consumer.WithGuard(g), consumer.WithBatchSize(consumeBatch)), nil
}

// newGuard returns a guard of group on the "redis" or "mysql" store, keyed
// apart per run by seq.
func (e *env) newGuard(guard, group, seq string) (*idempotency.Guard, error) {
	var store idempotency.Store
	var err error
	switch guard {
	case "redis":
		store, err = idempotency.NewRedisStore(e.rdb, idempotency.WithPrefix(fmt.Sprint("reliablemq_bench:", seq, ":")))
	case "mysql":
		store, err = idempotency.NewMySQLStore(e.db)
	default:
		return nil, fmt.Errorf("unknown guard %q", guard)
	}
	if err != nil {
		return nil, err
	}
	return idempotency.NewGuard(group, store)
}

// Batches of the guard's own calls alone, as large as the consumer
// combines them at most (consumer.maxClaimWaves waves of consumeBatch
// keys; consumer.maxCompletions completions), on floorWorkers goroutines.
const (
	floorClaims      = 16 * consumeBatch
	floorCompletions = 512
	floorWorkers     = 4
)

// guardAlone claims and completes cfg.DrainRows fresh keys with guard's
// store and nothing else: the work a guarded consumer cannot avoid beyond
// the raw consumer's, in the largest batches the consumer makes, and
// without attempt counts, as the consumer claims.
func (e *env) guardAlone(ctx context.Context, guard string) (sample, error) {
	seq := fmt.Sprint(time.Now().UnixNano(), "_", e.seq.Add(1))
	g, err := e.newGuard(guard, "bench_alone_"+seq, seq)
	if err != nil {
		return sample{}, err
	}
	g = g.WithoutAttempts()
	n := e.cfg.DrainRows
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprint("k-", i)
	}
	var next atomic.Int64
	var failed atomic.Pointer[error] // the first failure
	cpu, start := e.meter.now(), time.Now()
	var wg sync.WaitGroup
	for range floorWorkers {
		wg.Go(func() {
			for {
				lo := int(next.Add(floorClaims)) - floorClaims
				if lo >= n || failed.Load() != nil {
					return
				}
				claims, errs := g.ClaimBatch(ctx, keys[lo:min(lo+floorClaims, n)])
				for i, err := range errs {
					if err == nil && claims[i].Outcome != idempotency.Acquired {
						err = fmt.Errorf("key %s: outcome %v", keys[lo+i], claims[i].Outcome)
					}
					if err != nil {
						failed.CompareAndSwap(nil, &err)
						return
					}
				}
				for c := 0; c < len(claims); c += floorCompletions {
					for _, err := range g.CompleteBatch(ctx, claims[c:min(c+floorCompletions, len(claims))]) {
						if err != nil {
							failed.CompareAndSwap(nil, &err)
							return
						}
					}
				}
			}
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		return sample{}, fmt.Errorf("guard alone: %w", *err)
	}
	return sample{rate: float64(n) / time.Since(start).Seconds(), cpu: e.meter.perOp(cpu, n)}, nil
}

// discardParker drops dead letters; nothing in the bench fails.
type discardParker struct{}

func (discardParker) Park(context.Context, *consumer.DeadLetter) (bool, error) { return true, nil }
