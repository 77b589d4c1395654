package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/observe"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// The relay's rules as scenarios over a store. Each runs on the fake store
// always (no database: the policy's tests) and on mysqlStore when MySQL is
// available (the store's conformance suite: it must keep the same rules).

// harness builds relays over one store and moves its time.
type harness struct {
	fake *fakeStore // nil on MySQL
	db   *sqlx.DB   // nil on the fake store
}

// onStores runs scenario against the fake store and against MySQL.
func onStores(t *testing.T, scenario func(t *testing.T, h *harness)) {
	t.Helper()
	t.Run("fake", func(t *testing.T) {
		t.Parallel()
		scenario(t, &harness{fake: newFakeStore(time.Minute)})
	})
	t.Run("mysql", func(t *testing.T) {
		t.Parallel()
		scenario(t, &harness{db: testenv.MySQL(t)})
	})
}

func (h *harness) relay(t *testing.T, pub Publisher, opts ...Option) *Relay {
	t.Helper()
	c, err := newConfig(append([]Option{WithLogger(slog.New(slog.DiscardHandler))}, opts...))
	if err != nil {
		t.Fatal(err)
	}
	if h.fake != nil {
		h.fake.lease = c.lease
		r := newRelay(h.fake, pub, c)
		r.now = h.fake.clock
		return r
	}
	return newRelay(newMySQLStore(h.db, c.table, c.lease), pub, c)
}

// wait lets d pass: the fake clock moves; on MySQL, time passes.
func (h *harness) wait(d time.Duration) {
	if h.fake != nil {
		h.fake.advance(d)
		return
	}
	time.Sleep(d)
}

// ex is what Enqueue writes through outside a transaction.
func (h *harness) ex() Execer {
	if h.db != nil {
		return h.db
	}
	return nil
}

// pub records sends and fails them on demand.
type pub struct {
	mu     sync.Mutex
	sent   []producer.Message
	fail   func(producer.Message) error
	onSend func(producer.Message)
}

func (p *pub) Send(_ context.Context, m producer.Message) (producer.Result, error) {
	p.mu.Lock()
	fail, onSend := p.fail, p.onSend
	p.mu.Unlock()
	if onSend != nil {
		onSend(m)
	}
	if fail != nil {
		if err := fail(m); err != nil && !producer.IsNotDurable(err) {
			return producer.Result{}, err
		} else if err != nil {
			p.record(m)
			return producer.Result{MsgID: "id-" + m.Keys[0]}, err
		}
	}
	p.record(m)
	return producer.Result{MsgID: "id-" + m.Keys[0]}, nil
}

func (p *pub) record(m producer.Message) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sent = append(p.sent, m)
}

func (p *pub) keys() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, m := range p.sent {
		out = append(out, m.Keys[0])
	}
	return out
}

func (p *pub) count(key string) int {
	n := 0
	for _, k := range p.keys() {
		if k == key {
			n++
		}
	}
	return n
}

func sendErr(o producer.Outcome, text string) error {
	return &producer.SendError{Outcome: o, Err: errors.New(text)}
}

func enqueue(t *testing.T, h *harness, r *Relay, m Message) int64 {
	t.Helper()
	if m.Body == nil {
		m.Body = []byte("body of " + m.Key)
	}
	if m.Topic == "" {
		m.Topic = "orders"
	}
	id, created, err := r.Enqueue(context.Background(), h.ex(), m)
	if err != nil || !created {
		t.Fatalf("enqueue %s: created %v, %v", m.Key, created, err)
	}
	return id
}

func dispatch(t *testing.T, r *Relay) BatchReport {
	t.Helper()
	rep, err := r.DispatchDue(context.Background(), 100)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func rowsOfStatus(t *testing.T, r *Relay, s Status) []*Row {
	t.Helper()
	rows, err := r.List(context.Background(), s, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

func TestKeyIsSentInOrderAndAFailingRowBlocksOnlyItsKey(t *testing.T) {
	t.Parallel()
	onStores(t, func(t *testing.T, h *harness) {
		p := &pub{}
		var failures atomic.Int32
		p.fail = func(m producer.Message) error {
			if m.Keys[0] == "a-0" && failures.Add(1) <= 2 {
				return sendErr(producer.OutcomeUnknown, "timeout")
			}
			return nil
		}
		r := h.relay(t, p, WithBackoff(time.Millisecond, time.Millisecond))
		for step := range 3 {
			for _, key := range []string{"a", "b"} {
				enqueue(t, h, r, Message{Key: fmt.Sprint(key, "-", step), ShardingKey: key})
			}
		}
		rep := dispatch(t, r)
		if rep.Sent != 3 || rep.Failed != 1 || rep.Blocked != 2 || p.count("a-1") != 0 {
			t.Fatalf("first pass %+v, sent %v; want b flowing and a waiting", rep, p.keys())
		}
		for i := 0; i < 10 && len(rowsOfStatus(t, r, Pending)) > 0; i++ {
			h.wait(blockedRetry + 10*time.Millisecond)
			dispatch(t, r)
		}
		var a, b []string
		for _, k := range p.keys() {
			if k[0] == 'a' {
				a = append(a, k)
			} else {
				b = append(b, k)
			}
		}
		if fmt.Sprint(a) != "[a-0 a-1 a-2]" || fmt.Sprint(b) != "[b-0 b-1 b-2]" {
			t.Fatalf("sent a %v b %v; want each key in order, once", a, b)
		}
	})
}

func TestBackoffDoublesWithJitterUpToItsCap(t *testing.T) {
	t.Parallel()
	onStores(t, func(t *testing.T, h *harness) {
		p := &pub{fail: func(producer.Message) error { return sendErr(producer.Transient, "broker down") }}
		first, maxWait := 8*time.Millisecond, 30*time.Millisecond
		r := h.relay(t, p, WithBackoff(first, maxWait), WithMaxAttempts(6))
		id := enqueue(t, h, r, Message{Key: "k"})
		want := []time.Duration{8, 16, 30, 30, 30}
		for attempt, w := range want {
			w *= time.Millisecond
			if rep := dispatch(t, r); rep.Failed != 1 {
				t.Fatalf("attempt %d: %+v", attempt+1, rep)
			}
			row, err := r.Get(context.Background(), id)
			if err != nil {
				t.Fatal(err)
			}
			if got := row.NextAttemptAt.Sub(row.UpdatedAt); got < w/2 || got > w {
				t.Fatalf("wait after attempt %d is %v, want within [%v, %v]", attempt+1, got, w/2, w)
			}
			if row.Attempts != attempt+1 || row.Status != Pending || !strings.Contains(row.LastError, "broker down") {
				t.Fatalf("after attempt %d: %+v", attempt+1, row)
			}
			h.wait(w)
		}
	})
}

func TestBackoffJitterStaysWithinHalfAndAllOfTheWait(t *testing.T) {
	t.Parallel()
	r := (&harness{fake: newFakeStore(time.Minute)}).relay(t, &pub{}, WithBackoff(time.Second, 10*time.Second))
	for attempts, d := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 4: 8 * time.Second,
		5: 10 * time.Second, 1000: 10 * time.Second} {
		seen := map[time.Duration]bool{}
		for range 200 {
			got := r.backoff(attempts)
			if got < d/2 || got > d {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", attempts, got, d/2, d)
			}
			seen[got] = true
		}
		if len(seen) < 2 {
			t.Fatalf("backoff(%d) has no jitter: %v", attempts, seen)
		}
	}
}

func TestMaxAttemptsMakeARowDeadWithOneAlertAndReplayRevivesIt(t *testing.T) {
	t.Parallel()
	onStores(t, func(t *testing.T, h *harness) {
		ctx := context.Background()
		p := &pub{fail: func(producer.Message) error { return sendErr(producer.Transient, "broker down") }}
		var alerts []*Row
		var mu sync.Mutex
		r := h.relay(t, p, WithMaxAttempts(3), WithBackoff(time.Millisecond, 2*time.Millisecond),
			WithAlert(func(_ context.Context, row *Row) { mu.Lock(); alerts = append(alerts, row); mu.Unlock() }))
		id := enqueue(t, h, r, Message{Key: "k"})
		for range 6 {
			dispatch(t, r)
			h.wait(5 * time.Millisecond)
		}
		dead := rowsOfStatus(t, r, Dead)
		if len(dead) != 1 || dead[0].Attempts != 3 || len(alerts) != 1 || alerts[0].Status != Dead || alerts[0].ID != id {
			t.Fatalf("dead %+v, alerts %+v; want one dead row after 3 attempts and one alert", dead, alerts)
		}
		if p.count("k") != 0 {
			t.Fatal("a failed send was recorded as sent")
		}
		if b, err := r.Backlog(ctx); err != nil || b.DeadRows != 1 || b.Pending != 0 {
			t.Fatalf("backlog %+v %v", b, err)
		}
		if rep := dispatch(t, r); rep.Claimed != 0 {
			t.Fatal("a dead row was claimed")
		}
		p.mu.Lock()
		p.fail = nil
		p.mu.Unlock()
		if err := r.Replay(ctx, id); err != nil {
			t.Fatal(err)
		}
		if err := r.Replay(ctx, id); !errors.Is(err, ErrNotDead) {
			t.Fatalf("second replay: %v", err)
		}
		if err := r.Replay(ctx, id+1000); !errors.Is(err, ErrNotFound) {
			t.Fatalf("replay of a missing row: %v", err)
		}
		if rep := dispatch(t, r); rep.Sent != 1 || p.count("k") != 1 {
			t.Fatalf("after replay: %+v", rep)
		}
		if row, _ := r.Get(ctx, id); row == nil || row.Status != Sent || row.Attempts != 1 || len(alerts) != 1 {
			t.Fatalf("replayed row %+v, alerts %d", row, len(alerts))
		}
	})
}

func TestPermanentErrorIsDeadAtOnceAndHoldsItsKey(t *testing.T) {
	t.Parallel()
	onStores(t, func(t *testing.T, h *harness) {
		p := &pub{fail: func(m producer.Message) error {
			if m.Keys[0] == "a-0" {
				return sendErr(producer.Permanent, "no permission")
			}
			return nil
		}}
		alerts := 0
		r := h.relay(t, p, WithAlert(func(context.Context, *Row) { alerts++ }))
		enqueue(t, h, r, Message{Key: "a-0", ShardingKey: "a"})
		enqueue(t, h, r, Message{Key: "a-1", ShardingKey: "a"})
		enqueue(t, h, r, Message{Key: "b-0", ShardingKey: "b"})
		rep := dispatch(t, r)
		if rep.Dead != 1 || rep.Sent != 1 || rep.Blocked != 1 || alerts != 1 {
			t.Fatalf("report %+v, alerts %d", rep, alerts)
		}
		if dead := rowsOfStatus(t, r, Dead); len(dead) != 1 || dead[0].Key != "a-0" || dead[0].Attempts != 1 {
			t.Fatalf("dead %+v", dead)
		}
		// A Dead row keeps holding its key until replayed.
		h.wait(blockedRetry + 10*time.Millisecond)
		if rep := dispatch(t, r); rep.Blocked != 1 || p.count("a-1") != 0 {
			t.Fatalf("second pass %+v, sent %v: a-1 went past a dead a-0", rep, p.keys())
		}
	})
}

func TestNotDurableCountsAsSent(t *testing.T) {
	t.Parallel()
	onStores(t, func(t *testing.T, h *harness) {
		p := &pub{fail: func(producer.Message) error { return sendErr(producer.NotDurable, "flush slave timeout") }}
		r := h.relay(t, p)
		enqueue(t, h, r, Message{Key: "u"})
		enqueue(t, h, r, Message{Key: "a-0", ShardingKey: "a"})
		enqueue(t, h, r, Message{Key: "a-1", ShardingKey: "a"})
		if rep := dispatch(t, r); rep.Sent != 3 || rep.Failed != 0 {
			t.Fatalf("report %+v; a stored but not durable message is sent", rep)
		}
		if sent := rowsOfStatus(t, r, Sent); len(sent) != 3 {
			t.Fatalf("sent rows %+v", sent)
		}
	})
}

func TestUnconfirmedRowsAreResentThenGivenUp(t *testing.T) {
	t.Parallel()
	onStores(t, func(t *testing.T, h *harness) {
		ctx := context.Background()
		p := &pub{}
		alerts := 0
		r := h.relay(t, p, WithMaxAttempts(3), WithAlert(func(context.Context, *Row) { alerts++ }))
		for _, k := range []string{"o-1", "o-2"} {
			err := r.Transact(ctx, func(ctx context.Context, tx *Tx) error {
				_, err := tx.Enqueue(ctx, Message{Topic: "orders", Key: k, Body: []byte(k)})
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		if err := r.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if ok, err := r.Confirm(ctx, h.ex(), "orders", "o-1"); err != nil || !ok {
			t.Fatalf("confirm: %v %v", ok, err)
		}
		if ok, _ := r.Confirm(ctx, h.ex(), "orders", "o-1"); ok {
			t.Fatal("confirmed twice")
		}
		h.wait(20 * time.Millisecond)
		for range 4 {
			if _, err := r.ResendUnconfirmed(ctx, 10*time.Millisecond, 10); err != nil {
				t.Fatal(err)
			}
			h.wait(20 * time.Millisecond)
		}
		if p.count("o-1") != 1 || p.count("o-2") != 3 || alerts != 1 {
			t.Fatalf("sends o-1 %d (confirmed: once), o-2 %d (resent up to 3 sends in all), alerts %d (want 1)",
				p.count("o-1"), p.count("o-2"), alerts)
		}
		sent := rowsOfStatus(t, r, Sent)
		if len(sent) != 1 || sent[0].Key != "o-2" || sent[0].Attempts != 3 || !strings.Contains(sent[0].LastError, "after 3 sends") {
			t.Fatalf("given-up row %+v must stay Sent", sent)
		}
	})
}

func TestLostClaimsAreCounted(t *testing.T) {
	t.Parallel()
	onStores(t, func(t *testing.T, h *harness) {
		p := &pub{}
		slow := h.relay(t, p, WithLease(time.Second), WithConcurrency(1))
		other := h.relay(t, p, WithLease(time.Second))
		enqueue(t, h, slow, Message{Key: "u"})
		enqueue(t, h, slow, Message{Key: "a-0", ShardingKey: "a"})
		var first atomic.Bool
		var otherRep BatchReport
		var otherErr error
		p.onSend = func(producer.Message) {
			if first.CompareAndSwap(false, true) {
				// The slow relay's first send outlives its lease: the other
				// relay claims both rows and sends them, and the slow one,
				// its claim over, does not send the second.
				h.wait(1100 * time.Millisecond)
				otherRep, otherErr = other.DispatchDue(context.Background(), 100)
			}
		}
		rep := dispatch(t, slow)
		if otherErr != nil {
			t.Fatal(otherErr)
		}
		if otherRep.Sent != 2 || rep.Sent != 0 || rep.LostClaims != 1 || p.count("a-0") != 1 {
			t.Fatalf("slow relay %+v, other %+v, a-0 sent %d times; want both rows sent by the other, once each, and one lost claim",
				rep, otherRep, p.count("a-0"))
		}
		for _, row := range rowsOfStatus(t, slow, Sent) {
			if row.Attempts != 1 {
				t.Fatalf("row %+v: a lost claim's mark was recorded", row)
			}
		}
	})
}

func TestTransactSendsAfterCommitAndLeavesFailedSendsPending(t *testing.T) {
	t.Parallel()
	onStores(t, func(t *testing.T, h *harness) {
		ctx := context.Background()
		p := &pub{}
		r := h.relay(t, p, WithBackoff(time.Millisecond, time.Millisecond))
		enq := func(keys ...string) func(context.Context, *Tx) error {
			return func(ctx context.Context, tx *Tx) error {
				for _, k := range keys {
					if _, err := tx.Enqueue(ctx, Message{Topic: "orders", Key: k, Body: []byte(k)}); err != nil {
						return err
					}
				}
				return nil
			}
		}
		boom := errors.New("stock check failed")
		if err := r.Transact(ctx, func(ctx context.Context, tx *Tx) error { _ = enq("rolled-back")(ctx, tx); return boom }); !errors.Is(err, boom) {
			t.Fatalf("fn error: %v", err)
		}
		func() {
			defer func() { _ = recover() }()
			_ = r.Transact(ctx, func(ctx context.Context, tx *Tx) error { _ = enq("panicked")(ctx, tx); panic("handler bug") })
		}()
		// Rows Transact wrote are claimed by it: a dispatch running while it
		// sends does not take them.
		var racing BatchReport
		var racingErr error
		p.onSend = func(m producer.Message) {
			if m.Keys[0] == "o-1" {
				racing, racingErr = r.DispatchDue(ctx, 100)
			}
		}
		if err := errors.Join(r.Transact(ctx, enq("o-1", "o-2")), r.Flush(ctx)); err != nil {
			t.Fatal(err)
		}
		if racingErr != nil || racing.Claimed != 0 {
			t.Fatalf("a dispatch during Transact's send claimed %+v (%v)", racing, racingErr)
		}
		if p.count("o-1") != 1 || p.count("o-2") != 1 || p.count("rolled-back")+p.count("panicked") != 0 {
			t.Fatalf("sent %v", p.keys())
		}
		sent := rowsOfStatus(t, r, Sent)
		if len(sent) != 2 || sent[0].MsgID != "id-o-1" || sent[0].Attempts != 1 || sent[0].SentAt == nil {
			t.Fatalf("sent rows %+v", sent)
		}
		if pending := rowsOfStatus(t, r, Pending); len(pending) != 0 {
			t.Fatalf("rolled back rows visible: %+v", pending)
		}
		// A send that fails after the commit does not fail Transact: the
		// row stays Pending and the reconcile job sends it.
		p.mu.Lock()
		p.onSend = nil
		p.fail = func(producer.Message) error { return sendErr(producer.Transient, "broker down") }
		p.mu.Unlock()
		if err := r.Transact(ctx, enq("o-3")); err != nil {
			t.Fatalf("a failed send failed Transact: %v", err)
		}
		pending := rowsOfStatus(t, r, Pending)
		if len(pending) != 1 || pending[0].Key != "o-3" || pending[0].Attempts != 1 || pending[0].LastError == "" {
			t.Fatalf("pending %+v", pending)
		}
		p.mu.Lock()
		p.fail = nil
		p.mu.Unlock()
		h.wait(5 * time.Millisecond)
		if rep := dispatch(t, r); rep.Sent != 1 || p.count("o-3") != 1 {
			t.Fatalf("reconcile after a failed send: %+v", rep)
		}
	})
}

func TestEnqueueIsOncePerTopicAndKey(t *testing.T) {
	t.Parallel()
	onStores(t, func(t *testing.T, h *harness) {
		ctx := context.Background()
		r := h.relay(t, &pub{})
		m := Message{Topic: "orders", Key: "o-1", Body: []byte("first")}
		id1, c1, err1 := r.Enqueue(ctx, h.ex(), m)
		m.Body = []byte("second")
		id2, c2, err2 := r.Enqueue(ctx, h.ex(), m)
		if err1 != nil || err2 != nil || !c1 || c2 || id1 != id2 {
			t.Fatalf("enqueue twice: %d %v %v / %d %v %v", id1, c1, err1, id2, c2, err2)
		}
		err := r.Transact(ctx, func(ctx context.Context, tx *Tx) error {
			id, err := tx.Enqueue(ctx, m)
			if !errors.Is(err, ErrDuplicate) || id != id1 {
				t.Errorf("duplicate Tx.Enqueue: %d %v, want row %d and ErrDuplicate", id, err, id1)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if row, err := r.Get(ctx, id1); err != nil || string(row.Body) != "first" {
			t.Fatalf("row %+v %v; the first message wins", row, err)
		}
		m.Topic = "refunds"
		if _, created, err := r.Enqueue(ctx, h.ex(), m); err != nil || !created {
			t.Fatalf("same key on another topic: %v %v", created, err)
		}
	})
}

func TestFindReturnsAKeysRowsInEveryTopic(t *testing.T) {
	t.Parallel()
	onStores(t, func(t *testing.T, h *harness) {
		ctx := context.Background()
		r := h.relay(t, &pub{})
		for _, m := range []Message{{Topic: "orders", Key: "o-1"}, {Topic: "refunds", Key: "o-1"},
			{Topic: "orders", Key: "o-10"}, {Topic: "orders", Key: "O-1"}} {
			m.Body = []byte("b")
			if _, _, err := r.Enqueue(ctx, h.ex(), m); err != nil {
				t.Fatal(err)
			}
		}
		rows, err := r.Find(ctx, "o-1")
		if err != nil || len(rows) != 2 || rows[0].Topic != "orders" || rows[1].Topic != "refunds" || rows[0].Key != "o-1" {
			t.Fatalf("find o-1: %v rows, %v", len(rows), err)
		}
		if none, err := r.Find(ctx, "nothing"); err != nil || len(none) != 0 {
			t.Fatalf("find a missing key: %v %v", none, err)
		}
	})
}

func TestInvalidMessagesAreRefusedBeforeTheStore(t *testing.T) {
	t.Parallel()
	s := newFakeStore(time.Minute)
	r := (&harness{fake: s}).relay(t, &pub{})
	for name, m := range map[string]Message{
		"no key":        {Topic: "orders", Body: []byte("x")},
		"space in key":  {Topic: "orders", Key: "a b", Body: []byte("x")},
		"bad topic":     {Topic: "bad topic", Key: "k", Body: []byte("x")},
		"long topic":    {Topic: strings.Repeat("t", 128), Key: "k", Body: []byte("x")},
		"no body":       {Topic: "orders", Key: "k"},
		"negative":      {Topic: "orders", Key: "k", Body: []byte("x"), Delay: -time.Second},
		"reserved prop": {Topic: "orders", Key: "k", Body: []byte("x"), Properties: map[string]string{"KEYS": "x"}},
		"bad tag":       {Topic: "orders", Key: "k", Body: []byte("x"), Tag: "t\x01"},
	} {
		if _, _, err := r.Enqueue(context.Background(), nil, m); !errors.Is(err, ErrInvalidMessage) {
			t.Errorf("%s: %v, want ErrInvalidMessage", name, err)
		}
	}
	if len(s.rows) != 0 {
		t.Fatalf("%d invalid rows stored", len(s.rows))
	}
}

func TestPurgeRemovesFinalRowsOnlyAndBacklogCounts(t *testing.T) {
	t.Parallel()
	onStores(t, func(t *testing.T, h *harness) {
		ctx := context.Background()
		p := &pub{fail: func(m producer.Message) error {
			if m.Keys[0] == "stuck" {
				return sendErr(producer.Transient, "down")
			}
			return nil
		}}
		r := h.relay(t, p)
		for _, k := range []string{"o-1", "o-2", "stuck"} {
			enqueue(t, h, r, Message{Key: k})
		}
		dispatch(t, r)
		if _, err := r.Confirm(ctx, h.ex(), "orders", "o-1"); err != nil {
			t.Fatal(err)
		}
		h.wait(20 * time.Millisecond)
		b, err := r.Backlog(ctx)
		if err != nil || b.Pending != 1 || b.OldestPending <= 0 || b.DeadRows != 0 {
			t.Fatalf("backlog %+v %v", b, err)
		}
		h.wait(20 * time.Millisecond)
		if n, err := r.Purge(ctx, 10*time.Millisecond, false, 1); err != nil || n != 1 {
			t.Fatalf("purge confirmed: %d %v", n, err)
		}
		if n, err := r.Purge(ctx, 10*time.Millisecond, true, 1); err != nil || n != 1 {
			t.Fatalf("purge sent: %d %v", n, err)
		}
		if pending := rowsOfStatus(t, r, Pending); len(pending) != 1 || pending[0].Key != "stuck" {
			t.Fatalf("purge removed a pending row: %+v", pending)
		}
		if _, err := r.Purge(ctx, time.Hour, true, 0); err == nil {
			t.Fatal("purge batch 0 accepted")
		}
	})
}

// TestHooksCarryTheTraceIntoTheRowAndReportRetriesAndDeadRows: the trace
// context of the enqueuing ctx is stored with the row, so a later send
// (reconcile's, with no trace) carries it; failures are reported.
func TestHooksCarryTheTraceIntoTheRowAndReportRetriesAndDeadRows(t *testing.T) {
	t.Parallel()
	onStores(t, func(t *testing.T, h *harness) {
		type traceKey struct{}
		var mu sync.Mutex
		var kinds []string
		hooks := observe.Hooks{
			Event: func(_ context.Context, e observe.Event) {
				mu.Lock()
				defer mu.Unlock()
				kinds = append(kinds, string(e.Kind)+":"+e.Reason)
			},
			Inject: func(ctx context.Context, props map[string]string) {
				if v, ok := ctx.Value(traceKey{}).(string); ok {
					props["traceparent"] = v
				}
			},
		}
		p := &pub{fail: func(m producer.Message) error { return sendErr(producer.Transient, "broker down") }}
		r := h.relay(t, p, WithHooks(hooks), WithMaxAttempts(2), WithBackoff(time.Millisecond, time.Millisecond))
		ctx := context.WithValue(context.Background(), traceKey{}, "00-enqueue-trace")
		if _, _, err := r.Enqueue(ctx, h.ex(), Message{Topic: "orders", Key: "k", Body: []byte("b")}); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			dispatch(t, r) // a background ctx, as reconcile's
			h.wait(5 * time.Millisecond)
		}
		rows, err := r.Find(context.Background(), "k")
		if err != nil || len(rows) != 1 || rows[0].Properties["traceparent"] != "00-enqueue-trace" {
			t.Fatalf("row %+v, %v; want the enqueuing ctx's trace stored", rows, err)
		}
		mu.Lock()
		defer mu.Unlock()
		if got := strings.Join(kinds, " "); got != "row_retry: row_dead:attempts" {
			t.Fatalf("events %q, want a retry then the dead row", got)
		}
	})
}
