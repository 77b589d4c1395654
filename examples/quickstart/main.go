// Command quickstart runs reliablemq's whole story on embedded defaults and
// proves it from the stores: orders are written with their outbox rows,
// acks are lost and the broker goes down while they are placed, consumers
// with both idempotency guards suppress the duplicates, a poison message is
// parked for a human, an order's shipping steps are consumed in order
// although one fails twice, and the final count shows nothing lost and
// nothing applied twice.
//
// RocketMQ is rmqtest (in-process) unless RMQ_NAMESRV (and RMQ_BROKER, for
// topic creation) name a real cluster; then faults are not injected. Redis
// is miniredis unless REDIS_ADDR is set. MySQL is MYSQL_DSN, by default
// root@tcp(127.0.0.1:3306)/; the program creates and uses the database
// reliablemq_quickstart there.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/redis/go-redis/v9"
	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/deadletter"
	"github.com/seed157d4c4d/reliablemq/examples/internal/exampleenv"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/outbox"
	"github.com/seed157d4c4d/reliablemq/producer"
	"github.com/seed157d4c4d/reliablemq/reconcile"
	"github.com/seed157d4c4d/reliablemq/rmqtest"
)

func main() {
	// The story injects failures on purpose: its report counts them, so
	// the library's warnings about each retry are left out; what needs a
	// human (a parked message) still shows at Error.
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

const (
	normalOrders = 200 // placed while acks get lost
	outageOrders = 30  // placed while the broker is down
	shipOrders   = 20  // orders whose 3 shipping steps must stay in order
	dbName       = "reliablemq_quickstart"
)

var steps = []string{"packed", "shipped", "delivered"}

type world struct {
	env     *exampleenv.Env
	out     io.Writer
	names   []string
	broker  *rmqtest.Broker // nil on a real cluster
	db      *sqlx.DB
	rdb     redis.UniversalClient
	relay   *outbox.Relay
	prod    *producer.Producer
	dead    *deadletter.Table
	suffix  string
	cleanup []func()
}

func (w *world) close() {
	for i := len(w.cleanup) - 1; i >= 0; i-- {
		w.cleanup[i]()
	}
}

func (w *world) say(format string, args ...any) { fmt.Fprintf(w.out, format+"\n", args...) }

func run(ctx context.Context, out io.Writer) error {
	start := time.Now()
	w := &world{out: out, suffix: fmt.Sprint(time.Now().UnixNano() % 1e9)}
	defer w.close()
	if err := w.setup(ctx); err != nil {
		return err
	}
	ordersTopic, stepsTopic := "Orders_"+w.suffix, "OrderSteps_"+w.suffix
	for _, t := range []string{ordersTopic, stepsTopic, "%RETRY%coupons_" + w.suffix,
		"%RETRY%notifications_" + w.suffix, "%RETRY%shipping_" + w.suffix} {
		if err := w.createTopic(ctx, t); err != nil {
			return err
		}
	}

	// 1. Orders placed while some acks are lost: each order row and its
	// outbox row commit together, and the message is sent right after.
	if w.broker != nil {
		w.broker.Inject(rmqtest.SendMessage, rmqtest.Fault{DropReply: true, Times: 5})
		w.say("1. placing %d orders; the broker drops 5 acks (stored, but the sender times out)", normalOrders)
	} else {
		w.say("1. placing %d orders (real broker: no faults injected)", normalOrders)
	}
	if err := w.placeOrders(ctx, ordersTopic, 0, normalOrders); err != nil {
		return err
	}
	// 2. The broker goes down mid-burst: orders still commit, their rows
	// stay pending.
	if w.broker != nil {
		w.say("2. broker outage: %d more orders placed while it is down", outageOrders)
		if err := w.broker.Down(); err != nil {
			return err
		}
	} else {
		w.say("2. %d more orders (real broker: no outage injected)", outageOrders)
	}
	if err := w.placeOrders(ctx, ordersTopic, normalOrders, outageOrders); err != nil {
		return err
	}
	_ = w.relay.Flush(ctx) // the Sent marks of the rows sent so far (a failed one is logged; reconcile sends its rows)
	pending := w.count("SELECT COUNT(*) FROM mq_log WHERE status = 0")
	w.say("   %d outbox rows pending (unsent or outcome unknown)", pending)
	if w.broker != nil {
		if err := w.broker.Up(); err != nil {
			return err
		}
	}

	// 3. The reconcile job sends what is pending; consumers start.
	var resent atomic.Int64
	job, err := reconcile.New(w.relay, reconcile.WithInterval(200*time.Millisecond),
		reconcile.WithReportHook(func(_ context.Context, r reconcile.Report, _ error) { resent.Add(int64(r.Sent)) }))
	if err != nil {
		return err
	}
	jctx, stopJob := context.WithCancel(ctx)
	var jobDone sync.WaitGroup
	jobDone.Go(func() { _ = job.Run(jctx) }) // returns nil when jctx ends
	defer func() { stopJob(); jobDone.Wait() }()
	w.say("3. broker back; reconcile job running; consumers starting")
	cs, err := w.startConsumers(ordersTopic, stepsTopic)
	if err != nil {
		return err
	}
	defer cs.close()

	// 4. A poison message: a coupon type nobody knows.
	w.say("4. a poison order (unknown coupon type)")
	if err := w.placeOrder(ctx, ordersTopic, "o-poison", "mystery"); err != nil {
		return err
	}
	// 5. Ordered shipping steps; one step of o-7 fails twice first.
	w.say("5. %d orders x %d shipping steps through the ordered outbox; o-7 'shipped' fails twice", shipOrders, len(steps))
	for _, step := range steps {
		for i := range shipOrders {
			id := fmt.Sprint("o-", i)
			err := w.relay.Transact(ctx, func(ctx context.Context, tx *outbox.Tx) error {
				_, err := tx.Enqueue(ctx, outbox.Message{Topic: stepsTopic, Key: id + "-" + step, Body: []byte(step), ShardingKey: id})
				return err
			})
			if err != nil {
				return err
			}
		}
	}

	w.say("   waiting for consumers ...")
	if err := w.waitAll(ctx, cs); err != nil {
		return err
	}
	stopJob()
	jobDone.Wait()
	return w.report(cs, ordersTopic, resent.Load(), time.Since(start))
}

func (w *world) setup(ctx context.Context) error {
	env, err := exampleenv.Setup(ctx, dbName)
	if err != nil {
		return err
	}
	w.env = env
	w.cleanup = append(w.cleanup, env.Close)
	w.names, w.broker, w.db, w.rdb = env.NameServers, env.Broker, env.DB, env.Redis
	w.db.SetMaxOpenConns(32)
	for _, q := range []string{
		"CREATE TABLE orders (id VARCHAR(64) PRIMARY KEY, coupon VARCHAR(32) NOT NULL)",
		"CREATE TABLE coupons (order_id VARCHAR(64) NOT NULL, coupon VARCHAR(32) NOT NULL)",
		"CREATE TABLE shipments (seq BIGINT AUTO_INCREMENT PRIMARY KEY, order_id VARCHAR(64) NOT NULL, step VARCHAR(16) NOT NULL)",
	} {
		if _, err := w.db.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	w.say("MySQL:    database %s (migrations applied)", dbName)
	if addr := os.Getenv("REDIS_ADDR"); addr != "" {
		w.say("Redis:    %s", addr)
	} else {
		w.say("Redis:    miniredis (in-process)")
	}
	if w.broker == nil {
		w.say("RocketMQ: %s (real cluster: fault injection skipped)", w.names[0])
	} else {
		w.say("RocketMQ: rmqtest (in-process) at %s", w.names[0])
	}
	if w.prod, err = producer.New(w.names, producer.WithSendTimeout(500*time.Millisecond)); err != nil {
		return err
	}
	w.cleanup = append(w.cleanup, func() { w.prod.Close() })
	if w.relay, err = outbox.NewRelay(w.db, w.prod, outbox.WithBackoff(50*time.Millisecond, 500*time.Millisecond)); err != nil {
		return err
	}
	w.dead, err = deadletter.NewTable(w.db)
	return err
}

func (w *world) createTopic(ctx context.Context, topic string) error {
	return w.env.CreateTopic(ctx, topic, 4)
}

func (w *world) placeOrder(ctx context.Context, topic, id, coupon string) error {
	return w.relay.Transact(ctx, func(ctx context.Context, tx *outbox.Tx) error {
		if _, err := tx.ExecContext(ctx, "INSERT INTO orders (id, coupon) VALUES (?, ?)", id, coupon); err != nil {
			return err
		}
		body, _ := json.Marshal(map[string]string{"order": id, "coupon": coupon})
		_, err := tx.Enqueue(ctx, outbox.Message{Topic: topic, Key: id, Body: body})
		return err
	})
}

func (w *world) placeOrders(ctx context.Context, topic string, from, n int) error {
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 8)
	for i := from; i < from+n; i++ {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := w.placeOrder(ctx, topic, fmt.Sprint("o-", i), "welcome"); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs // nil when none
}

type consumers struct {
	coupons, notifications, shipping *consumer.Consumer
	notified                         sync.Map // order -> *atomic.Int32
	failures                         atomic.Int32
}

func (c *consumers) close() {
	for _, x := range []*consumer.Consumer{c.coupons, c.notifications, c.shipping} {
		if x != nil {
			_ = x.Close() // the run's outcome is already decided
		}
	}
}

func (w *world) startConsumers(ordersTopic, stepsTopic string) (*consumers, error) {
	cs := &consumers{}
	// Coupons: the MySQL transactional guard, the coupon row and the
	// dedup row commit together.
	couponGroup := "coupons_" + w.suffix
	txGuard, err := idempotency.NewTxGuard(w.db, couponGroup)
	if err != nil {
		return nil, err
	}
	cs.coupons, err = consumer.New(w.names, couponGroup, ordersTopic, func(ctx context.Context, m *consumer.Message) error {
		var o struct{ Order, Coupon string }
		if err := json.Unmarshal(m.Body, &o); err != nil {
			return consumer.Permanent(err)
		}
		if o.Coupon != "welcome" {
			return consumer.Permanent(fmt.Errorf("unknown coupon type %q", o.Coupon))
		}
		_, err := txGuard.Do(ctx, consumer.Key(m), func(ctx context.Context, tx *sqlx.Tx) error {
			_, err := tx.ExecContext(ctx, "INSERT INTO coupons (order_id, coupon) VALUES (?, ?)", o.Order, o.Coupon)
			return err
		})
		return err
	}, consumer.WithParker(w.dead), consumer.WithRetryDelay(time.Second))
	if err != nil {
		return nil, err
	}
	// Notifications: the Redis guard around an effect outside any database.
	notifyGroup := "notifications_" + w.suffix
	store, err := idempotency.NewRedisStore(w.rdb, idempotency.WithPrefix("quickstart:"+w.suffix+":"))
	if err != nil {
		return nil, err
	}
	redisGuard, err := idempotency.NewGuard(notifyGroup, store)
	if err != nil {
		return nil, err
	}
	cs.notifications, err = consumer.New(w.names, notifyGroup, ordersTopic, func(ctx context.Context, m *consumer.Message) error {
		n, _ := cs.notified.LoadOrStore(consumer.Key(m), new(atomic.Int32))
		n.(*atomic.Int32).Add(1) // "send the e-mail"
		return nil
	}, consumer.WithGuard(redisGuard), consumer.WithParker(w.dead), consumer.WithRetryDelay(time.Second))
	if err != nil {
		return nil, err
	}
	// Shipping: ordered per order id; a failure suspends the queue.
	shipGroup := "shipping_" + w.suffix
	claims, err := idempotency.NewMySQLStore(w.db)
	if err != nil {
		return nil, err
	}
	shipGuard, err := idempotency.NewGuard(shipGroup, claims)
	if err != nil {
		return nil, err
	}
	cs.shipping, err = consumer.NewOrderly(w.names, shipGroup, stepsTopic, func(ctx context.Context, m *consumer.Message) error {
		if m.ShardingKey == "o-7" && string(m.Body) == "shipped" && cs.failures.Add(1) <= 2 {
			return errors.New("carrier API timeout")
		}
		_, err := w.db.ExecContext(ctx, "INSERT INTO shipments (order_id, step) VALUES (?, ?)", m.ShardingKey, string(m.Body))
		return err
	}, consumer.ParkKey, consumer.WithGuard(shipGuard), consumer.WithParker(w.dead),
		consumer.WithRetryDelay(200*time.Millisecond), consumer.WithConcurrency(4))
	if err != nil {
		return nil, err
	}
	for _, c := range []*consumer.Consumer{cs.coupons, cs.notifications, cs.shipping} {
		if err := c.Start(); err != nil {
			return nil, err
		}
	}
	return cs, nil
}

func (w *world) count(q string, args ...any) int {
	var n int
	if err := w.db.Get(&n, q, args...); err != nil {
		return -1
	}
	return n
}

func (cs *consumers) notifiedOrders() int {
	n := 0
	cs.notified.Range(func(_, _ any) bool { n++; return true })
	return n
}

// waitAll waits until every effect is in, moving rmqtest's clock so
// retries come due.
func (w *world) waitAll(ctx context.Context, cs *consumers) error {
	orders := normalOrders + outageOrders
	deadline := time.Now().Add(2 * time.Minute)
	last := time.Now()
	for {
		coupons := w.count("SELECT COUNT(DISTINCT order_id) FROM coupons")
		shipped := w.count("SELECT COUNT(*) FROM shipments")
		parked := w.count("SELECT COUNT(*) FROM mq_dead_letter")
		pending := w.count("SELECT COUNT(*) FROM mq_log WHERE status = 0")
		if coupons == orders && cs.notifiedOrders() == orders+1 && shipped == shipOrders*len(steps) && parked == 1 && pending == 0 {
			return nil
		}
		if time.Since(last) > 3*time.Second {
			last = time.Now()
			w.say("   ... coupons %d/%d, notifications %d/%d, shipments %d/%d, parked %d, outbox pending %d",
				coupons, orders, cs.notifiedOrders(), orders+1, shipped, shipOrders*len(steps), parked, pending)
		}
		if time.Now().After(deadline) {
			return errors.New("consumers did not finish in 2 minutes")
		}
		if w.broker != nil {
			w.broker.Advance(time.Second)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (w *world) report(cs *consumers, ordersTopic string, resent int64, took time.Duration) error {
	committed := w.count("SELECT COUNT(*) FROM orders")
	rows := w.count("SELECT COUNT(*) FROM mq_log")
	onWire := "n/a (real broker)"
	if w.broker != nil {
		onWire = fmt.Sprint(len(w.broker.Messages(ordersTopic)) - (committed))
	}
	suppressed := cs.coupons.Stats().Duplicates + cs.notifications.Stats().Duplicates + cs.shipping.Stats().Duplicates
	retried := cs.coupons.Stats().Retries + cs.notifications.Stats().Retries + cs.shipping.Stats().Retries
	parked := w.count("SELECT COUNT(*) FROM mq_dead_letter")
	// lost: a committed order with a known coupon type and no coupon, or
	// no notification; double-applied: any effect twice.
	lostCoupons := w.count("SELECT COUNT(*) FROM orders o WHERE coupon = 'welcome' AND NOT EXISTS (SELECT 1 FROM coupons c WHERE c.order_id = o.id)")
	doubleCoupons := w.count("SELECT COUNT(*) FROM (SELECT order_id FROM coupons GROUP BY order_id HAVING COUNT(*) > 1) d")
	lostNotes, doubleNotes := committed-cs.notifiedOrders(), 0
	cs.notified.Range(func(_, v any) bool {
		if v.(*atomic.Int32).Load() > 1 {
			doubleNotes++
		}
		return true
	})
	outOfOrder := 0
	for i := range shipOrders {
		var got []string
		if err := w.db.Select(&got, "SELECT step FROM shipments WHERE order_id = ? ORDER BY seq", fmt.Sprint("o-", i)); err != nil {
			return err
		}
		if fmt.Sprint(got) != fmt.Sprint(steps) {
			outOfOrder++
		}
	}
	w.say("")
	w.say("  orders committed                 %6d", committed)
	w.say("  outbox rows (orders + steps)     %6d", rows)
	w.say("  sent later by reconcile          %6d", resent)
	w.say("  duplicates on the wire           %6s", onWire)
	w.say("  duplicates suppressed by guards  %6d", suppressed)
	w.say("  retried (ordered step)           %6d", retried)
	w.say("  parked for a human               %6d", parked)
	w.say("  ordered keys checked             %6d (out of order: %d)", shipOrders, outOfOrder)
	w.say("  lost                             %6d", lostCoupons+lostNotes)
	w.say("  double-applied                   %6d", doubleCoupons+doubleNotes)
	w.say("  took                             %6s", took.Round(100*time.Millisecond))
	if lostCoupons+lostNotes != 0 || doubleCoupons+doubleNotes != 0 || outOfOrder != 0 || parked != 1 {
		return errors.New("an invariant broke: see the report")
	}
	return nil
}
