package outbox_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
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
	if err := errors.Join(r.Transact(bg, placeOrder("o-2")), r.Flush(bg)); err != nil {
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

// Options are typed per constructor: WithTable and WithLogger fit both, the
// relay's policy options only NewRelay, credentials only NewTxMessenger.
var (
	_ outbox.Option   = outbox.WithTable("mq_log")
	_ outbox.TxOption = outbox.WithTable("mq_log")
	_ outbox.TxOption = outbox.WithLogger(nil)
	_ outbox.Option   = outbox.WithMaxAttempts(3)
	_ outbox.TxOption = outbox.WithCredentials(producer.Credentials{})
)

// TestLargestBodyAndEveryByteRoundTrip: rows are written with their values
// as hex literals; the producer's largest body (4 MiB) and every byte
// value, in the key, tag, sharding key, properties and body, come back
// as written, and within the server's default max_allowed_packet.
func TestLargestBodyAndEveryByteRoundTrip(t *testing.T) {
	t.Parallel()
	pub := newFake()
	db, r := setup(t, pub)
	var all []byte
	for i := range 256 {
		all = append(all, byte(i))
	}
	big := bytes.Repeat(all, (4<<20)/len(all))
	ids := map[string][]byte{"k-all": all, "k-big": big}
	for key, body := range ids {
		m := outbox.Message{Topic: "orders", Key: key + "-ключ'\"\\", Tag: "t'\\", ShardingKey: "s\x00'\\", Body: body,
			Properties: map[string]string{"p'\\": "v\x00\"'"}}
		if _, _, err := r.Enqueue(bg, db, m); err != nil {
			t.Fatalf("enqueue %s (%d bytes): %v", key, len(body), err)
		}
		rows, err := r.Find(bg, m.Key)
		if err != nil || len(rows) != 1 {
			t.Fatalf("find %s: %v %v", key, rows, err)
		}
		got := rows[0].Message
		if !bytes.Equal(got.Body, body) || got.Key != m.Key || got.Tag != m.Tag || got.ShardingKey != m.ShardingKey ||
			got.Properties["p'\\"] != "v\x00\"'" || got.Topic != "orders" {
			t.Fatalf("%s came back altered: key %q tag %q sharding %q props %q body %d bytes (equal %v)", key, got.Key, got.Tag,
				got.ShardingKey, got.Properties, len(got.Body), bytes.Equal(got.Body, body))
		}
	}
}

// TestBodyLargerThanHalfTheMaxPacketIsEnqueued: a hex literal doubles
// its value, so a 9 MiB body written as one would make an 18 MiB
// statement, over MariaDB's default max_allowed_packet (16 MiB): the
// server closes the connection and the caller's transaction with it. The
// row fits the packet, as it did as a prepared statement: it is enqueued
// and the caller's transaction goes on.
func TestBodyLargerThanHalfTheMaxPacketIsEnqueued(t *testing.T) {
	t.Parallel()
	pub := newFake()
	db, r := setup(t, pub)
	var packet int
	if err := db.Get(&packet, "SELECT @@max_allowed_packet"); err != nil {
		t.Fatal(err)
	}
	body := bytes.Repeat([]byte{0xff, 0x00, '\''}, (9<<20)/3)
	if 2*len(body) < packet {
		t.Skipf("max_allowed_packet %d holds the body twice", packet)
	}
	tx := db.MustBegin()
	defer tx.Rollback()
	if _, err := tx.Exec("INSERT INTO orders (id, amount) VALUES ('o-big', 10)"); err != nil {
		t.Fatal(err)
	}
	m := outbox.Message{Topic: "orders", Key: "k-big", Body: body, Properties: map[string]string{"p": "v"}}
	if _, _, err := r.Enqueue(bg, tx, m); err != nil {
		t.Fatalf("enqueue a %d-byte body: %v", len(body), err)
	}
	if _, err := tx.Exec("UPDATE orders SET amount = 11 WHERE id = 'o-big'"); err != nil {
		t.Fatalf("the caller's transaction after the enqueue: %v", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	rows, err := r.Find(bg, m.Key)
	if err != nil || len(rows) != 1 {
		t.Fatalf("find: %v %v", rows, err)
	}
	if got := rows[0].Message; !bytes.Equal(got.Body, body) || got.Properties["p"] != "v" {
		t.Fatalf("came back altered: body %d bytes (equal %v), props %q", len(got.Body), bytes.Equal(got.Body, body), got.Properties)
	}
}

// TestEveryRowOfABatchIsMarkedWithItsOwnMessageID: the batched mark gives
// each row its own message id, whatever the batch's size (the statement
// splits the rows by id in a tree of CASE expressions) and with rows of
// the batch left unsent between them.
func TestEveryRowOfABatchIsMarkedWithItsOwnMessageID(t *testing.T) {
	t.Parallel()
	pub := newFake()
	pub.fail = func(m producer.Message) error {
		if strings.HasSuffix(m.Keys[0], "7") {
			return errors.New("refused")
		}
		return nil
	}
	db, r := setup(t, pub, outbox.WithConcurrency(8))
	enqueued := 0
	for _, batch := range []int{1, 2, 8, 9, 17, 37, 501} {
		for i := range batch {
			m := outbox.Message{Topic: "orders", Key: fmt.Sprintf("b%d-%d", batch, i), Body: []byte("x")}
			if _, _, err := r.Enqueue(bg, db, m); err != nil {
				t.Fatal(err)
			}
		}
		enqueued += batch
		if _, err := r.DispatchDue(bg, batch); err != nil {
			t.Fatal(err)
		}
	}
	var rows []struct {
		Key   string `db:"biz_key"`
		MsgID string `db:"msg_id"`
	}
	if err := db.Select(&rows, "SELECT biz_key, msg_id FROM mq_log WHERE status = 1"); err != nil {
		t.Fatal(err)
	}
	unsent := count(t, db, "SELECT COUNT(*) FROM mq_log WHERE status = 0")
	if len(rows)+unsent != enqueued || unsent == 0 || len(rows) < enqueued*8/10 {
		t.Fatalf("%d rows sent and %d unsent of %d", len(rows), unsent, enqueued)
	}
	for _, row := range rows {
		if row.MsgID != "id-"+row.Key {
			t.Fatalf("row %s marked with message id %q", row.Key, row.MsgID)
		}
	}
}
