package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/outbox"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// fakePublisher records sends and fails them on demand.
type fakePublisher struct {
	mu       sync.Mutex
	sent     []producer.Message
	perKey   map[string]int
	inflight map[string]bool
	overlap  []string
	fail     func(m producer.Message) error
}

func newFake() *fakePublisher {
	return &fakePublisher{perKey: map[string]int{}, inflight: map[string]bool{}}
}

func (p *fakePublisher) Send(ctx context.Context, m producer.Message) (producer.Result, error) {
	key := m.Keys[0]
	p.mu.Lock()
	if p.inflight[key] {
		p.overlap = append(p.overlap, key)
	}
	p.inflight[key] = true
	fail := p.fail
	p.mu.Unlock()
	time.Sleep(100 * time.Microsecond)
	var err error
	if fail != nil {
		err = fail(m)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.inflight, key)
	if err != nil {
		return producer.Result{}, err
	}
	p.sent = append(p.sent, m)
	p.perKey[key]++
	return producer.Result{MsgID: "id-" + key}, nil
}

func (p *fakePublisher) count(key string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.perKey[key]
}

func (p *fakePublisher) order() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var keys []string
	for _, m := range p.sent {
		keys = append(keys, m.Keys[0])
	}
	return keys
}

func setup(t *testing.T, pub outbox.Publisher, opts ...outbox.Option) (*sqlx.DB, *outbox.Relay) {
	t.Helper()
	db := testenv.MySQL(t)
	db.MustExec("CREATE TABLE orders (id VARCHAR(64) PRIMARY KEY, amount INT NOT NULL)")
	r, err := outbox.NewRelay(db, pub, opts...)
	if err != nil {
		t.Fatal(err)
	}
	dbs.Store(r, db)
	return db, r
}

func count(t *testing.T, db *sqlx.DB, q string, args ...any) int {
	t.Helper()
	var n int
	if err := db.Get(&n, q, args...); err != nil {
		t.Fatal(err)
	}
	return n
}

func placeOrder(id string) func(context.Context, *outbox.Tx) error {
	return func(ctx context.Context, tx *outbox.Tx) error {
		if _, err := tx.ExecContext(ctx, "INSERT INTO orders (id, amount) VALUES (?, 10)", id); err != nil {
			return err
		}
		_, err := tx.Enqueue(ctx, outbox.Message{Topic: "orders", Key: id, Body: []byte(`{"order":"` + id + `"}`)})
		return err
	}
}

var bg = context.Background()

func TestTransactCommitsBusinessAndOutboxTogetherThenSends(t *testing.T) {
	t.Parallel()
	pub := newFake()
	db, r := setup(t, pub)
	boom := errors.New("stock check failed")
	err := r.Transact(bg, func(ctx context.Context, tx *outbox.Tx) error {
		if err := placeOrder("o-1")(ctx, tx); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	if count(t, db, "SELECT COUNT(*) FROM orders") != 0 || count(t, db, "SELECT COUNT(*) FROM mq_log") != 0 || len(pub.order()) != 0 {
		t.Fatal("a rolled-back transaction left rows or sent a message")
	}
	if err := r.Transact(bg, placeOrder("o-2")); err != nil {
		t.Fatal(err)
	}
	if count(t, db, "SELECT COUNT(*) FROM orders") != 1 || pub.count("o-2") != 1 {
		t.Fatalf("committed order not sent once: %v", pub.order())
	}
	rows, err := r.List(bg, outbox.Sent, 0, 10)
	if err != nil || len(rows) != 1 || rows[0].Key != "o-2" || rows[0].MsgID != "id-o-2" || rows[0].Attempts != 1 || rows[0].SentAt == nil {
		t.Fatalf("sent rows %+v, %v", rows, err)
	}
	func() {
		defer func() { _ = recover() }()
		_ = r.Transact(bg, func(ctx context.Context, tx *outbox.Tx) error {
			_ = placeOrder("o-3")(ctx, tx)
			panic("handler bug")
		})
	}()
	if count(t, db, "SELECT COUNT(*) FROM orders WHERE id = 'o-3'") != 0 {
		t.Fatal("a panicking transaction committed")
	}
}

func TestEnqueueIsUniquePerTopicAndKey(t *testing.T) {
	t.Parallel()
	_, r := setup(t, newFake())
	m := outbox.Message{Topic: "orders", Key: "o-1", Body: []byte("a")}
	id1, created1, err1 := r.Enqueue(bg, r2db(t, r), m)
	id2, created2, err2 := r.Enqueue(bg, r2db(t, r), m)
	if err1 != nil || err2 != nil || !created1 || created2 || id1 != id2 {
		t.Fatalf("enqueue twice: %d %v %v / %d %v %v", id1, created1, err1, id2, created2, err2)
	}
	m.Topic = "refunds"
	if _, created, err := r.Enqueue(bg, r2db(t, r), m); err != nil || !created {
		t.Fatalf("same key on another topic: %v %v", created, err)
	}
	for _, bad := range []outbox.Message{{Topic: "orders", Body: []byte("x")}, {Topic: "orders", Key: "a b", Body: []byte("x")},
		{Topic: "bad topic", Key: "k", Body: []byte("x")}, {Topic: "orders", Key: "k"}} {
		if _, _, err := r.Enqueue(bg, r2db(t, r), bad); !errors.Is(err, outbox.ErrInvalidMessage) {
			t.Errorf("enqueue %+v: %v", bad, err)
		}
	}
}

var dbs sync.Map // relay -> db, for tests that enqueue outside a transaction

func r2db(t *testing.T, r *outbox.Relay) outbox.Execer {
	v, ok := dbs.Load(r)
	if !ok {
		t.Fatal("no db for relay")
	}
	return v.(outbox.Execer)
}

func TestFailedSendIsRetriedWithBackoffThenDeadWithOneAlert(t *testing.T) {
	t.Parallel()
	pub := newFake()
	pub.fail = func(producer.Message) error {
		return &producer.SendError{Outcome: producer.Transient, Err: errors.New("broker down")}
	}
	var alerts atomic.Int32
	db, r := setup(t, pub, outbox.WithMaxAttempts(3), outbox.WithBackoff(time.Millisecond, 2*time.Millisecond),
		outbox.WithAlert(func(context.Context, *outbox.Row) { alerts.Add(1) }))
	if err := r.Transact(bg, placeOrder("o-1")); err != nil {
		t.Fatal(err)
	}
	rows, _ := r.List(bg, outbox.Pending, 0, 10)
	if len(rows) != 1 || rows[0].Attempts != 1 || rows[0].LastError == "" {
		t.Fatalf("after a failed dispatch: %+v", rows)
	}
	for i := 0; i < 20 && count(t, db, "SELECT COUNT(*) FROM mq_log WHERE status = 3") == 0; i++ {
		time.Sleep(5 * time.Millisecond)
		if _, err := r.DispatchDue(bg, 10); err != nil {
			t.Fatal(err)
		}
	}
	dead, _ := r.List(bg, outbox.Dead, 0, 10)
	if len(dead) != 1 || dead[0].Attempts != 3 || alerts.Load() != 1 {
		t.Fatalf("dead %+v, alerts %d; want one dead row after 3 attempts and one alert", dead, alerts.Load())
	}
	if rep, _ := r.DispatchDue(bg, 10); rep.Claimed != 0 {
		t.Fatal("a dead row was claimed")
	}
	pub.fail = nil
	if err := r.Replay(bg, dead[0].ID); err != nil {
		t.Fatal(err)
	}
	if err := r.Replay(bg, dead[0].ID); !errors.Is(err, outbox.ErrNotDead) {
		t.Fatalf("second replay: %v", err)
	}
	if rep, err := r.DispatchDue(bg, 10); err != nil || rep.Sent != 1 || pub.count("o-1") != 1 {
		t.Fatalf("after replay: %+v %v", rep, err)
	}
	if err := r.Replay(bg, 424242); !errors.Is(err, outbox.ErrNotFound) {
		t.Fatalf("replay missing: %v", err)
	}
}

func TestPermanentSendErrorIsDeadAtOnce(t *testing.T) {
	t.Parallel()
	pub := newFake()
	pub.fail = func(producer.Message) error {
		return &producer.SendError{Outcome: producer.Permanent, Err: errors.New("no permission")}
	}
	_, r := setup(t, pub)
	if err := r.Transact(bg, placeOrder("o-1")); err != nil {
		t.Fatal(err)
	}
	if dead, _ := r.List(bg, outbox.Dead, 0, 10); len(dead) != 1 || dead[0].Attempts != 1 {
		t.Fatalf("dead %+v", dead)
	}
}

func TestOrderedKeyWaitsForItsFailingRowOthersFlow(t *testing.T) {
	t.Parallel()
	pub := newFake()
	var failures atomic.Int32
	pub.fail = func(m producer.Message) error {
		if m.Keys[0] == "a-0" && failures.Add(1) <= 2 {
			return &producer.SendError{Outcome: producer.OutcomeUnknown, Err: errors.New("timeout")}
		}
		return nil
	}
	db, r := setup(t, pub, outbox.WithBackoff(time.Millisecond, time.Millisecond))
	for step := range 3 {
		for _, key := range []string{"a", "b"} {
			m := outbox.Message{Topic: "orders", Key: fmt.Sprint(key, "-", step), Body: []byte("x"), ShardingKey: key}
			if _, _, err := r.Enqueue(bg, db, m); err != nil {
				t.Fatal(err)
			}
		}
	}
	rep, err := r.DispatchDue(bg, 100)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Sent != 3 || rep.Failed != 1 || rep.Blocked != 2 || pub.count("a-1") != 0 {
		t.Fatalf("first pass %+v, sent %v; want b flowing and a waiting", rep, pub.order())
	}
	deadline := time.Now().Add(20 * time.Second)
	for count(t, db, "SELECT COUNT(*) FROM mq_log WHERE status = 0") > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond) // blocked rows wait a second
		if _, err := r.DispatchDue(bg, 100); err != nil {
			t.Fatal(err)
		}
	}
	var aOrder, bOrder []string
	for _, k := range pub.order() {
		if k[0] == 'a' {
			aOrder = append(aOrder, k)
		} else {
			bOrder = append(bOrder, k)
		}
	}
	if fmt.Sprint(aOrder) != "[a-0 a-1 a-2]" || fmt.Sprint(bOrder) != "[b-0 b-1 b-2]" {
		t.Fatalf("sent a %v b %v; want each key in order, once", aOrder, bOrder)
	}
}

func TestConfirmAndUnconfirmedResend(t *testing.T) {
	t.Parallel()
	pub := newFake()
	db, r := setup(t, pub, outbox.WithMaxAttempts(3))
	for _, id := range []string{"o-1", "o-2"} {
		if err := r.Transact(bg, placeOrder(id)); err != nil {
			t.Fatal(err)
		}
	}
	if ok, err := r.Confirm(bg, db, "orders", "o-1"); err != nil || !ok {
		t.Fatalf("confirm: %v %v", ok, err)
	}
	if ok, _ := r.Confirm(bg, db, "orders", "o-1"); ok {
		t.Fatal("confirmed twice")
	}
	time.Sleep(20 * time.Millisecond)
	for range 4 {
		if _, err := r.ResendUnconfirmed(bg, 10*time.Millisecond, 10); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if pub.count("o-1") != 1 || pub.count("o-2") != 3 {
		t.Fatalf("sends o-1 %d (confirmed: once), o-2 %d (unconfirmed: resent up to 3 sends in all)", pub.count("o-1"), pub.count("o-2"))
	}
	row, _ := r.Get(bg, 2)
	if row == nil || row.Status != outbox.Sent {
		t.Fatalf("given-up row %+v must stay sent", row)
	}
}

func TestPurgeAndBacklog(t *testing.T) {
	t.Parallel()
	pub := newFake()
	pub.fail = func(m producer.Message) error {
		if m.Keys[0] == "stuck" {
			return &producer.SendError{Outcome: producer.Transient, Err: errors.New("down")}
		}
		return nil
	}
	db, r := setup(t, pub)
	for _, id := range []string{"o-1", "o-2", "stuck"} {
		if err := r.Transact(bg, placeOrder(id)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Confirm(bg, db, "orders", "o-1"); err != nil {
		t.Fatal(err)
	}
	b, err := r.Backlog(bg)
	if err != nil || b.Pending != 1 || b.OldestPending <= 0 {
		t.Fatalf("backlog %+v %v", b, err)
	}
	time.Sleep(30 * time.Millisecond)
	if n, err := r.Purge(bg, 10*time.Millisecond, false, 1); err != nil || n != 1 {
		t.Fatalf("purge confirmed: %d %v", n, err)
	}
	if n, err := r.Purge(bg, 10*time.Millisecond, true, 1); err != nil || n != 1 {
		t.Fatalf("purge sent: %d %v", n, err)
	}
	if count(t, db, "SELECT COUNT(*) FROM mq_log") != 1 {
		t.Fatal("purge removed a pending row")
	}
}

func TestRelayConfigurationIsValidated(t *testing.T) {
	t.Parallel()
	db := &sqlx.DB{}
	for name, opts := range map[string][]outbox.Option{
		"table":    {outbox.WithTable("mq_log; DROP")},
		"lease":    {outbox.WithLease(time.Millisecond)},
		"attempts": {outbox.WithMaxAttempts(0)},
		"backoff":  {outbox.WithBackoff(time.Minute, time.Second)},
	} {
		if _, err := outbox.NewRelay(db, newFake(), opts...); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := outbox.NewRelay(nil, newFake()); err == nil {
		t.Error("nil db accepted")
	}
}
