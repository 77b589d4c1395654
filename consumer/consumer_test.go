package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/deadletter"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/observe"
	"github.com/seed157d4c4d/reliablemq/producer"
	"github.com/seed157d4c4d/reliablemq/rmqtest"
)

func TestFailingHandlerIsRetriedAndAppliedOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 2)
	eff := newEffects()
	var calls atomic.Int32
	h := func(ctx context.Context, m *consumer.Message) error {
		if calls.Add(1) == 1 {
			return errors.New("db timeout")
		}
		eff.apply(consumer.Key(m), string(m.Body))
		return nil
	}
	c := f.start(consumer.New(f.env.NameServers(), f.group, f.topic, h,
		consumer.WithGuard(f.guard()), consumer.WithParker(f.dead), consumer.WithRetryDelay(time.Second)))
	f.send(producer.Message{Body: []byte("coupon"), Keys: []string{"order-1"}})
	// The handler applies the effect before it returns; the consumer counts
	// it handled only after (with the guard, once its key is recorded
	// done): wait for both.
	f.eventually("handled after a retry", func() bool { return eff.count("order-1") == 1 && c.Stats().Handled >= 1 })
	f.settle()
	if n := eff.count("order-1"); n != 1 {
		t.Fatalf("applied %d times", n)
	}
	st := c.Stats()
	if st.Retries != 1 || st.Handled != 1 || st.Parked != 0 || calls.Load() != 2 {
		t.Fatalf("stats %+v, calls %d; want one retry then success", st, calls.Load())
	}
}

func TestPanicIsRetriedNotCrashed(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	var calls atomic.Int32
	h := func(ctx context.Context, m *consumer.Message) error {
		if calls.Add(1) == 1 {
			panic("nil map")
		}
		return nil
	}
	c := f.start(consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithParker(f.dead),
		consumer.WithRetryDelay(time.Second)))
	f.send(producer.Message{Body: []byte("x"), Keys: []string{"k"}})
	f.eventually("handled after the panic", func() bool { return c.Stats().Handled == 1 })
	if st := c.Stats(); st.Retries != 1 || calls.Load() != 2 {
		t.Fatalf("stats %+v calls %d", st, calls.Load())
	}
}

// A hook that panics on a delivery (the program's bug) gets the message
// retried by the broker's schedule: the client would otherwise swallow the
// panic and hold the message until its 15-minute consume timeout.
func TestHookPanicIsRetriedNotHeld(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	var begun atomic.Int32
	hooks := observe.Hooks{Handle: func(ctx context.Context, m observe.Message) (context.Context, func(error)) {
		if begun.Add(1) == 1 {
			panic("tracer not initialised")
		}
		return ctx, nil
	}}
	c := f.start(consumer.New(f.env.NameServers(), f.group, f.topic, func(context.Context, *consumer.Message) error { return nil },
		consumer.WithParker(f.dead), consumer.WithRetryDelay(time.Second), consumer.WithHooks(hooks)))
	f.send(producer.Message{Body: []byte("x"), Keys: []string{"k"}})
	f.eventually("handled after the hook's panic", func() bool { return c.Stats().Handled == 1 })
	if st := c.Stats(); st.Retries != 1 || begun.Load() != 2 {
		t.Fatalf("stats %+v, hook begun %d times; want one retry, then handled", st, begun.Load())
	}
}

func TestRetryCapParksOnceAlertsOnceAndAcks(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	var calls, alerts atomic.Int32
	var alertedID atomic.Int64
	h := func(ctx context.Context, m *consumer.Message) error {
		calls.Add(1)
		return fmt.Errorf("attempt %d: upstream 503", m.Attempt)
	}
	c := f.start(consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithGuard(f.guard()),
		consumer.WithParker(f.dead), consumer.WithMaxAttempts(3), consumer.WithRetryDelay(time.Second),
		consumer.WithAlert(func(ctx context.Context, d *consumer.DeadLetter) {
			alertedID.Store(d.ID)
			alerts.Add(1)
		})))
	res := f.send(producer.Message{Body: []byte("poison"), Keys: []string{"order-9"}, Tag: "paid",
		Properties: map[string]string{"trace": "t-1"}})
	f.eventually("parked", func() bool { return len(f.parked()) == 1 })
	// The row is written before the consumer counts the park and calls the
	// alert: wait for those too.
	f.eventually("the park counted and alerted", func() bool { return c.Stats().Parked >= 1 && alerts.Load() >= 1 })
	f.settle()
	dls := f.parked()
	if len(dls) != 1 || alerts.Load() != 1 || calls.Load() != 3 || alertedID.Load() != dls[0].ID {
		t.Fatalf("%d dead letters, %d alerts (for id %d), %d calls; want 1, 1 (for the row's id), 3",
			len(dls), alerts.Load(), alertedID.Load(), calls.Load())
	}
	d := dls[0]
	if d.MsgID != res.MsgID || d.Attempts != 3 || d.Cause != consumer.CauseRetries || d.Status != deadletter.Parked ||
		d.Topic != f.topic || string(d.Body) != "poison" || d.Tag != "paid" || d.Properties["trace"] != "t-1" ||
		strings.Join(d.Keys, ",") != "order-9" || !strings.Contains(d.LastError, "attempt 3: upstream 503") {
		t.Fatalf("dead letter %+v", d)
	}
	if st := c.Stats(); st.Parked != 1 || st.Retries != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestPermanentErrorAndMissingKeyParkAtOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	var calls atomic.Int32
	h := func(ctx context.Context, m *consumer.Message) error {
		calls.Add(1)
		return consumer.Permanent(errors.New("unknown coupon type"))
	}
	f.start(consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithGuard(f.guard()), consumer.WithParker(f.dead)))
	f.send(producer.Message{Body: []byte("a"), Keys: []string{"k1"}})
	f.send(producer.Message{Body: []byte("no key")})
	f.eventually("both parked", func() bool { return len(f.parked()) == 2 })
	byBody := map[string]*deadletter.Entry{}
	for _, d := range f.parked() {
		byBody[string(d.Body)] = d
	}
	if d := byBody["a"]; d.Cause != consumer.CausePermanent || d.Attempts != 1 {
		t.Errorf("permanent: %+v", d)
	}
	if d := byBody["no key"]; d.Cause != consumer.CausePermanent || !strings.Contains(d.LastError, "no business key") {
		t.Errorf("no key: %+v", d)
	}
	if calls.Load() != 1 {
		t.Errorf("handler ran %d times; the keyless message must not run", calls.Load())
	}
}

func TestSameKeyToTwoConsumersAppliesOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 4)
	eff := newEffects()
	g := f.guard()
	h := func(ctx context.Context, m *consumer.Message) error {
		time.Sleep(20 * time.Millisecond)
		eff.apply(consumer.Key(m), string(m.Body))
		return nil
	}
	a := f.start(consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithGuard(g), consumer.WithParker(f.dead),
		consumer.WithRetryDelay(time.Second)))
	b := f.start(consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithGuard(g), consumer.WithParker(f.dead),
		consumer.WithRetryDelay(time.Second)))
	const orders = 30
	for i := range orders {
		for range 2 { // the producer-side duplicate: a resend of the same order
			f.send(producer.Message{Body: []byte("coupon"), Keys: []string{fmt.Sprint("order-", i)}})
		}
	}
	f.eventually("every order applied", func() bool { return eff.total() >= orders })
	// A rebalance between the two consumers can redeliver more; each extra
	// delivery is one more suppressed duplicate.
	f.eventually("every duplicate suppressed", func() bool {
		return a.Stats().Duplicates+b.Stats().Duplicates >= orders
	})
	f.settle()
	for i := range orders {
		if n := eff.count(fmt.Sprint("order-", i)); n != 1 {
			t.Errorf("order-%d applied %d times", i, n)
		}
	}
}

func TestGuardStoreDownRetriesNeverAcks(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	mini := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mini.Addr(), MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	store, _ := idempotency.NewRedisStore(rdb)
	g, err := idempotency.NewGuard(f.group, store)
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	var mu sync.Mutex
	var troubles []consumer.Trouble
	h := func(ctx context.Context, m *consumer.Message) error { calls.Add(1); return nil }
	c := f.start(consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithGuard(g), consumer.WithParker(f.dead),
		consumer.WithRetryDelay(time.Second), consumer.WithMaxAttempts(16),
		consumer.WithTroubleAlert(func(_ context.Context, tr consumer.Trouble) {
			mu.Lock()
			defer mu.Unlock()
			troubles = append(troubles, tr)
		})))
	mini.Close()
	f.send(producer.Message{Body: []byte("x"), Keys: []string{"k"}})
	f.eventually("store errors past the alert threshold", func() bool { return c.Stats().StoreErrors >= 7 })
	if calls.Load() != 0 || c.Stats().Handled != 0 {
		t.Fatalf("handler ran with the guard down")
	}
	mu.Lock()
	if len(troubles) != 1 || troubles[0].Op != consumer.OpClaim || troubles[0].Failures != 5 ||
		troubles[0].Key != "k" || troubles[0].Err == nil {
		t.Errorf("troubles %+v, want one claim trouble after 5 failures", troubles)
	}
	mu.Unlock()
	if err := mini.Restart(); err != nil {
		t.Fatal(err)
	}
	f.eventually("handled after the store is back", func() bool { return c.Stats().Handled == 1 })
	if calls.Load() != 1 || len(f.parked()) != 0 {
		t.Fatalf("calls %d, parked %d", calls.Load(), len(f.parked()))
	}
}

// flakyParker fails its first n parks.
type flakyParker struct {
	consumer.Parker
	fail atomic.Int32
}

func (p *flakyParker) Park(ctx context.Context, d *consumer.DeadLetter) (bool, error) {
	if p.fail.Add(-1) >= 0 {
		return false, errors.New("mysql: connection refused")
	}
	return p.Parker.Park(ctx, d)
}

func TestParkFailureIsARetryNotAnAck(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	p := &flakyParker{Parker: f.dead}
	p.fail.Store(2)
	var calls atomic.Int32
	h := func(ctx context.Context, m *consumer.Message) error { calls.Add(1); return errors.New("bad") }
	c := f.start(consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithParker(p),
		consumer.WithMaxAttempts(2), consumer.WithRetryDelay(time.Second)))
	f.send(producer.Message{Body: []byte("x"), Keys: []string{"k"}})
	// The row is written before the consumer counts it: wait for both.
	f.eventually("parked once the table is back", func() bool { return len(f.parked()) == 1 && c.Stats().Parked == 1 })
	if st := c.Stats(); st.StoreErrors != 2 || st.Parked != 1 || calls.Load() != 4 {
		t.Fatalf("stats %+v calls %d; want 2 failed parks, then parked on the 4th attempt", st, calls.Load())
	}
}

func TestReplayRunsOnceAndOnlyOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	eff := newEffects()
	var fixed atomic.Bool
	h := func(ctx context.Context, m *consumer.Message) error {
		if !fixed.Load() {
			return consumer.Permanent(errors.New("missing config"))
		}
		eff.apply(consumer.Key(m), string(m.Body))
		return nil
	}
	c := f.start(consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithGuard(f.guard()), consumer.WithParker(f.dead)))
	f.send(producer.Message{Body: []byte("x"), Keys: []string{"order-5"}, ShardingKey: "order-5"})
	// The row is written before the park forgets the key's claim (then
	// counts it): a replay sent before the key is forgotten finds it busy
	// and is retried at the delay of the guard's 1 min lease.
	f.eventually("parked and its key forgotten", func() bool { return len(f.parked()) == 1 && c.Stats().Parked >= 1 })
	id := f.parked()[0].ID
	fixed.Store(true)
	ctx := context.Background()
	if err := f.dead.Replay(ctx, id, f.prod, "config fixed"); err != nil {
		t.Fatal(err)
	}
	if err := f.dead.Replay(ctx, id, f.prod, "again"); !errors.Is(err, deadletter.ErrNotParked) {
		t.Fatalf("second replay: %v, want ErrNotParked", err)
	}
	if err := f.dead.Discard(ctx, id, "late"); !errors.Is(err, deadletter.ErrNotParked) {
		t.Fatalf("discard after replay: %v, want ErrNotParked", err)
	}
	f.eventually("replayed message handled", func() bool { return eff.count("order-5") == 1 })
	f.settle()
	d, err := f.dead.Get(ctx, id)
	if err != nil || d.Status != deadletter.Replayed || d.Reason != "config fixed" || eff.count("order-5") != 1 {
		t.Fatalf("after replay: %+v %v, effects %d", d, err, eff.count("order-5"))
	}
}

func TestCloseWaitsForHandlersThenCancelsThem(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	started := make(chan struct{})
	var returned atomic.Bool
	h := func(ctx context.Context, m *consumer.Message) error {
		close(started)
		<-ctx.Done()
		time.Sleep(50 * time.Millisecond) // a handler that takes a moment to stop
		returned.Store(true)
		return ctx.Err()
	}
	c, err := consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithParker(f.dead),
		consumer.WithShutdownTimeout(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	f.send(producer.Message{Body: []byte("x"), Keys: []string{"k"}})
	select {
	case <-started:
	case <-time.After(waitFor):
		t.Fatal("handler never ran")
	}
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			if err := c.Close(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if !returned.Load() {
		t.Fatal("Close returned while a handler was still running")
	}
	if err := c.Start(); !errors.Is(err, consumer.ErrClosed) {
		t.Fatalf("start after close: %v", err)
	}
}

func TestConfigurationIsValidated(t *testing.T) {
	t.Parallel()
	dead := &deadletter.Table{}
	h := func(context.Context, *consumer.Message) error { return nil }
	rdb := redis.NewClient(&redis.Options{})
	defer rdb.Close()
	rs, _ := idempotency.NewRedisStore(rdb)
	shortGuard, _ := idempotency.NewGuard("g", rs, idempotency.WithRetention(time.Minute))
	ns := []string{"127.0.0.1:9876"}
	cases := map[string]func() error{
		"no parker": func() error { _, err := consumer.New(ns, "g", "t", h); return err },
		"nil handler": func() error {
			_, err := consumer.New(ns, "g", "t", nil, consumer.WithParker(dead))
			return err
		},
		"attempts": func() error {
			_, err := consumer.New(ns, "g", "t", h, consumer.WithParker(dead), consumer.WithMaxAttempts(17))
			return err
		},
		"retention below redelivery span": func() error {
			_, err := consumer.New(ns, "g", "t", h, consumer.WithParker(dead), consumer.WithGuard(shortGuard))
			return err
		},
		"orderly without guard": func() error {
			_, err := consumer.NewOrderly(ns, "g", "t", h, consumer.ParkMessage, consumer.WithParker(dead))
			return err
		},
		"orderly with a guard that counts no attempts": func() error {
			g, err := idempotency.NewGuard("g", rs)
			if err != nil {
				return nil // fails the case: it must be the consumer refusing
			}
			_, err = consumer.NewOrderly(ns, "g", "t", h, consumer.ParkMessage, consumer.WithParker(dead),
				consumer.WithGuard(g.WithoutAttempts()))
			return err
		},
		"delay beyond levels": func() error {
			_, err := consumer.New(ns, "g", "t", h, consumer.WithParker(dead), consumer.WithRetryDelay(3*time.Hour))
			return err
		},
	}
	for name, fn := range cases {
		if err := fn(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if span := consumer.RedeliverySpan(4, 0, nil, time.Minute); span != 4*time.Minute+10*time.Second+30*time.Second+time.Minute {
		t.Errorf("span = %v", span)
	}
}

func TestCrashMidHandlerLeaseExpiryLetsTheRedeliveryRunOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	g := f.guard(idempotency.WithLease(3 * time.Second))
	// A consumer that crashed mid-handler: its claim is held, never done.
	// The lease runs from the database's clock when the claim is written,
	// before Claim returns: take the time before the call.
	held := time.Now()
	crashed, err := g.Claim(context.Background(), "order-3")
	if err != nil || crashed.Outcome != idempotency.Acquired {
		t.Fatalf("claim: %v %v", crashed, err)
	}
	eff := newEffects()
	var ranAt atomic.Int64
	h := func(ctx context.Context, m *consumer.Message) error {
		ranAt.Store(time.Now().UnixNano())
		eff.apply(consumer.Key(m), string(m.Body))
		return nil
	}
	c := f.start(consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithGuard(g), consumer.WithParker(f.dead)))
	f.send(producer.Message{Body: []byte("x"), Keys: []string{"order-3"}})
	f.eventually("handled after the lease", func() bool { return eff.count("order-3") == 1 })
	f.settle()
	if n := eff.count("order-3"); n != 1 {
		t.Fatalf("applied %d times", n)
	}
	if ran := time.Unix(0, ranAt.Load()); ran.Sub(held) < 3*time.Second {
		t.Fatalf("ran %v after the crashed claim, before its 3s lease ended", ran.Sub(held))
	}
	if st := c.Stats(); st.Busy == 0 || st.Parked != 0 {
		t.Fatalf("stats %+v; want busy retries and no park", st)
	}
	if err := crashed.Complete(context.Background()); !errors.Is(err, idempotency.ErrLostClaim) {
		t.Fatalf("the crashed owner completing late: %v, want ErrLostClaim", err)
	}
}

// flakyStore fails its first n claims, like a MySQL that is down.
type flakyStore struct {
	idempotency.Store
	fail atomic.Int32
}

func (s *flakyStore) Claim(ctx context.Context, group, key, token string, lease time.Duration) (idempotency.Outcome, int, error) {
	if s.fail.Add(-1) >= 0 {
		return 0, 0, errors.New("dial tcp 127.0.0.1:3306: connect: connection refused")
	}
	return s.Store.Claim(ctx, group, key, token, lease)
}

func TestMySQLGuardDownRetriesNeverAcks(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	ms, err := idempotency.NewMySQLStore(f.db)
	if err != nil {
		t.Fatal(err)
	}
	s := &flakyStore{Store: ms}
	s.fail.Store(3)
	g, err := idempotency.NewGuard(f.group, s)
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	h := func(ctx context.Context, m *consumer.Message) error { calls.Add(1); return nil }
	c := f.start(consumer.New(f.env.NameServers(), f.group, f.topic, h, consumer.WithGuard(g), consumer.WithParker(f.dead),
		consumer.WithRetryDelay(time.Second), consumer.WithMaxAttempts(2)))
	f.send(producer.Message{Body: []byte("x"), Keys: []string{"k"}})
	f.eventually("handled once the database is back", func() bool { return c.Stats().Handled == 1 })
	if st := c.Stats(); st.StoreErrors != 3 || calls.Load() != 1 || st.Parked != 0 {
		t.Fatalf("stats %+v calls %d; want 3 store errors retried (store failures never park), then 1 call", st, calls.Load())
	}
}

func TestRejectedSendBackDoesNotLoseTheRetry(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	b := f.env.RequireEmbedded(t)
	// The official client drops a message whose send-back the broker
	// refuses; the consumer must not depend on send-backs.
	b.Inject(rmqtest.ConsumerSendMsgBack, rmqtest.Fault{Times: 100, Code: rmqtest.CodeSystemError})
	var calls atomic.Int32
	var attempts []int
	var mu sync.Mutex
	c := f.start(consumer.New(f.env.NameServers(), f.group, f.topic, func(ctx context.Context, m *consumer.Message) error {
		mu.Lock()
		attempts = append(attempts, m.Attempt)
		mu.Unlock()
		if calls.Add(1) < 3 {
			return errors.New("not yet")
		}
		return nil
	}, consumer.WithParker(f.dead), consumer.WithRetryDelay(time.Second)))
	res := f.send(producer.Message{Body: []byte("x"), Keys: []string{"k"}})
	f.eventually("handled on the third attempt", func() bool { return c.Stats().Handled == 1 })
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(attempts) != "[1 2 3]" {
		t.Fatalf("attempts %v, want [1 2 3]", attempts)
	}
	copies := b.Messages("%RETRY%" + f.group)
	if len(copies) != 2 {
		t.Fatalf("%d retry copies, want 2", len(copies))
	}
	for _, m := range copies {
		if m.MsgID != res.MsgID || m.Properties["RETRY_TOPIC"] != f.topic {
			t.Fatalf("retry copy %+v: want the original msg id and RETRY_TOPIC", m)
		}
	}
}

func TestHandlerOverrunningItsDeadlineIsRetried(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	var calls atomic.Int32
	c := f.start(consumer.New(f.env.NameServers(), f.group, f.topic, func(ctx context.Context, m *consumer.Message) error {
		if calls.Add(1) == 1 {
			<-ctx.Done() // a stuck downstream call that honours ctx
			return ctx.Err()
		}
		return nil
	}, consumer.WithParker(f.dead), consumer.WithHandlerTimeout(100*time.Millisecond), consumer.WithRetryDelay(time.Second)))
	f.send(producer.Message{Body: []byte("x"), Keys: []string{"k"}})
	f.eventually("handled after the timed-out attempt", func() bool { return c.Stats().Handled == 1 })
	if st := c.Stats(); st.Retries != 1 || calls.Load() != 2 {
		t.Fatalf("stats %+v calls %d", st, calls.Load())
	}
}

func TestUnusualMessagesAreHandledVerbatim(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	got := make(chan *consumer.Message, 10)
	f.start(consumer.New(f.env.NameServers(), f.group, f.topic, func(ctx context.Context, m *consumer.Message) error {
		got <- m
		return nil
	}, consumer.WithParker(f.dead), consumer.WithGuard(f.guard())))
	key := "k'\";--" + strings.Repeat("é", 400) // invalid UTF-8 is refused by the producer
	body := append([]byte{0, 0xff, '\n'}, strings.Repeat("x", 1<<20)...)
	f.send(producer.Message{Body: body, Keys: []string{key}, Properties: map[string]string{"q": `'"; DROP TABLE x`}})
	select {
	case m := <-got:
		if consumer.Key(m) != key {
			t.Errorf("key altered: %q, want %q", consumer.Key(m)[:12], key[:12])
		}
		if string(m.Body) != string(body) {
			t.Errorf("body altered: %d bytes, first %q, want %q", len(m.Body), m.Body[:4], body[:4])
		}
		if m.Properties["q"] != `'"; DROP TABLE x` {
			t.Errorf("properties altered: %v", m.Properties)
		}
	case <-time.After(waitFor):
		t.Fatal("not delivered")
	}
}

// TestRefusedRetryStoreIsRetriedUntilStored has the broker refuse the
// retry copy seven times (a real broker stores a SEND_MESSAGE to %RETRY%
// whatever the topic's permission, so only rmqtest can): the failed
// message is neither acknowledged nor lost, the run of refusals is
// reported once, and the retry runs once a copy is stored. The consumer
// never falls back to the client's send-back, which drops a message the
// broker refuses.
func TestRefusedRetryStoreIsRetriedUntilStored(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	b := f.env.RequireEmbedded(t)
	var calls atomic.Int32
	var mu sync.Mutex
	var troubles []consumer.Trouble
	c := f.start(consumer.New(f.env.NameServers(), f.group, f.topic, func(ctx context.Context, m *consumer.Message) error {
		if calls.Add(1) == 1 {
			// Injected here, before the retry copy is sent: injected after
			// the test's send, a loaded machine let the copy through first.
			b.Inject(rmqtest.SendMessage, rmqtest.Fault{Times: 7, Code: rmqtest.CodeSystemError, Remark: "store busy"})
			b.Inject(rmqtest.ConsumerSendMsgBack, rmqtest.Fault{Times: 100, Code: rmqtest.CodeSystemError})
			return errors.New("first attempt fails")
		}
		return nil
	}, consumer.WithParker(f.dead), consumer.WithRetryDelay(time.Second),
		consumer.WithTroubleAlert(func(_ context.Context, tr consumer.Trouble) {
			mu.Lock()
			defer mu.Unlock()
			troubles = append(troubles, tr)
		})))
	f.send(producer.Message{Body: []byte("x"), Keys: []string{"k"}})
	f.eventually("handled once a retry copy is stored", func() bool { return c.Stats().Handled == 1 })
	if calls.Load() != 2 || len(f.parked()) != 0 || c.Stats().StoreErrors != 7 {
		t.Fatalf("calls %d, parked %d, store errors %d", calls.Load(), len(f.parked()), c.Stats().StoreErrors)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(troubles) != 1 || troubles[0].Op != consumer.OpRetryStore || troubles[0].Failures != 5 {
		t.Fatalf("troubles %+v, want one retry-store trouble", troubles)
	}
}

// TestHandlerCtxEndsWithTheLease: with a guard, a handler slower than the
// claim's lease sees its ctx end when the lease does (after which a
// redelivery could take the key over), fails, and is retried; each run
// carries the claim's fencing token.
func TestHandlerCtxEndsWithTheLease(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	const lease = 1500 * time.Millisecond
	var calls atomic.Int32
	var mu sync.Mutex
	var overran time.Duration
	var tokens []string
	c := f.start(consumer.New(f.env.NameServers(), f.group, f.topic, func(ctx context.Context, m *consumer.Message) error {
		mu.Lock()
		tokens = append(tokens, m.ClaimToken)
		mu.Unlock()
		if calls.Add(1) > 1 {
			return nil
		}
		start := time.Now()
		select {
		case <-ctx.Done():
			// The deadline the lease set, not when this goroutine woke up.
			d, _ := ctx.Deadline()
			mu.Lock()
			overran = d.Sub(start)
			mu.Unlock()
			return ctx.Err()
		case <-time.After(time.Minute):
			return errors.New("the handler's ctx outlived the lease")
		}
	}, consumer.WithGuard(f.guard(idempotency.WithLease(lease))), consumer.WithParker(f.dead), consumer.WithRetryDelay(time.Second)))
	f.send(producer.Message{Body: []byte("x"), Keys: []string{"slow"}})
	f.eventually("handled on the retry", func() bool { return c.Stats().Handled == 1 })
	mu.Lock()
	defer mu.Unlock()
	if overran <= 0 || overran > lease {
		t.Fatalf("first run's ctx deadline %v after it started, want within the %v lease", overran, lease)
	}
	if len(tokens) != 2 || tokens[0] == "" || tokens[0] == tokens[1] {
		t.Fatalf("claim tokens %q: want one per run, distinct", tokens)
	}
}
