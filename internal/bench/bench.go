// Package bench measures what each reliability layer costs, as ratios
// against the raw client and the databases' own limits, each pair measured
// side by side in one run and repeated, the median ratio reported. It backs
// `reliablemq bench`.
package bench

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/apache/rocketmq-client-go/v2"
	rmqconsumer "github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	rmqproducer "github.com/apache/rocketmq-client-go/v2/producer"
	"github.com/go-sql-driver/mysql"
	"github.com/jmoiron/sqlx"
	"github.com/redis/go-redis/v9"
	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/clientlog"
	"github.com/seed157d4c4d/reliablemq/internal/remoting"
	"github.com/seed157d4c4d/reliablemq/migrations"
	"github.com/seed157d4c4d/reliablemq/outbox"
	"github.com/seed157d4c4d/reliablemq/producer"
	"github.com/seed157d4c4d/reliablemq/reconcile"
	"github.com/seed157d4c4d/reliablemq/rmqtest"
)

// Config sizes a run.
type Config struct {
	// Ops is the operations per side per repeat (default 4000).
	Ops int
	// DrainRows is the outbox rows the reconcile drain sends, and the
	// messages each consume pair consumes (default 20000: a push consumer
	// delivers in bursts, so short runs measure the bursts).
	DrainRows int
	// Repeats is how many times each pair runs; the median ratio is kept
	// (default 3).
	Repeats int
	// Progress, when set, receives a line per measurement.
	Progress io.Writer
}

// Result is one pair.
type Result struct {
	Name     string  `json:"name"`
	Baseline string  `json:"baseline"`
	Subject  string  `json:"subject"`
	BaseRate float64 `json:"baseline_per_s"`
	Rate     float64 `json:"subject_per_s"`
	Ratio    float64 `json:"median_ratio"`
	Target   float64 `json:"target,omitempty"`
	Pass     *bool   `json:"pass,omitempty"`
}

type env struct {
	names  []string
	broker *rmqtest.Broker
	db     *sqlx.DB
	rdb    redis.UniversalClient
	prod   *producer.Producer
	raw    rocketmq.Producer
	closer []func()
	cfg    Config
	seq    atomic.Int64
	body   []byte
}

const workers = 16

// Run runs every pair and returns the results.
func Run(ctx context.Context, cfg Config) ([]Result, error) {
	if cfg.Ops <= 0 {
		cfg.Ops = 4000
	}
	if cfg.DrainRows <= 0 {
		cfg.DrainRows = 20000
	}
	if cfg.Repeats <= 0 {
		cfg.Repeats = 3
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	e := &env{cfg: cfg, body: []byte(strings.Repeat("x", 256))}
	defer func() {
		for i := len(e.closer) - 1; i >= 0; i-- {
			e.closer[i]()
		}
	}()
	if err := e.setup(ctx); err != nil {
		return nil, err
	}
	var results []Result
	for _, p := range e.pairs() {
		r, err := e.measure(ctx, p)
		if err != nil {
			return results, fmt.Errorf("%s: %w", p.name, err)
		}
		results = append(results, r)
	}
	return results, nil
}

func (e *env) setup(ctx context.Context) error {
	clientlog.Contain()
	dsn := os.Getenv("MYSQL_DSN")
	if dsn == "" {
		dsn = "root@tcp(127.0.0.1:3306)/"
	}
	mc, err := mysql.ParseDSN(dsn)
	if err != nil {
		return fmt.Errorf("MYSQL_DSN: %w", err)
	}
	mc.ParseTime, mc.DBName = true, ""
	root, err := sql.Open("mysql", mc.FormatDSN())
	if err != nil {
		return err
	}
	defer root.Close()
	for _, q := range []string{"DROP DATABASE IF EXISTS reliablemq_bench", "CREATE DATABASE reliablemq_bench"} {
		if _, err := root.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("mysql at %s: %w", mc.Addr, err)
		}
	}
	mc.DBName = "reliablemq_bench"
	if e.db, err = sqlx.Open("mysql", mc.FormatDSN()); err != nil {
		return err
	}
	e.db.SetMaxOpenConns(workers + 8)
	e.db.SetMaxIdleConns(workers + 8)
	e.closer = append(e.closer, func() { e.db.Close() })
	if err := migrations.Up(ctx, e.db.DB); err != nil {
		return err
	}
	for _, q := range []string{
		"CREATE TABLE scratch (id BIGINT PRIMARY KEY, v VARCHAR(16) NOT NULL)",
		"CREATE TABLE business (id VARCHAR(64) PRIMARY KEY, amount INT NOT NULL)",
	} {
		if _, err := e.db.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	if addr := os.Getenv("REDIS_ADDR"); addr != "" {
		e.rdb = redis.NewClient(&redis.Options{Addr: addr, PoolSize: workers * 2})
	} else {
		m, err := miniredis.Run()
		if err != nil {
			return err
		}
		e.closer = append(e.closer, m.Close)
		e.rdb = redis.NewClient(&redis.Options{Addr: m.Addr(), PoolSize: workers * 2})
	}
	e.closer = append(e.closer, func() { e.rdb.Close() })
	if ns := os.Getenv("RMQ_NAMESRV"); ns != "" {
		e.names = strings.Split(ns, ";")
	} else {
		b, err := rmqtest.Start()
		if err != nil {
			return err
		}
		e.closer = append(e.closer, func() { b.Close() })
		e.broker, e.names = b, []string{b.NamesrvAddr()}
	}
	if e.prod, err = producer.New(e.names); err != nil {
		return err
	}
	e.closer = append(e.closer, func() { e.prod.Close() })
	if e.raw, err = rocketmq.NewProducer(rmqproducer.WithNameServer(e.names), rmqproducer.WithGroupName("bench_raw"),
		rmqproducer.WithInstanceName(fmt.Sprint("bench-raw-", time.Now().UnixNano()))); err != nil {
		return err
	}
	if err := e.raw.Start(); err != nil {
		return err
	}
	e.closer = append(e.closer, func() { e.raw.Shutdown() })
	return nil
}

// topic creates a fresh topic (and nothing else) and returns its name.
func (e *env) topic(ctx context.Context, prefix string) (string, error) {
	name := fmt.Sprintf("%s_%d", prefix, e.seq.Add(1)+time.Now().UnixNano()%1e9)
	if e.broker != nil {
		return name, e.broker.CreateTopic(name, 8)
	}
	brokers := os.Getenv("RMQ_BROKER")
	if brokers == "" {
		return "", fmt.Errorf("set RMQ_BROKER with RMQ_NAMESRV (topic creation)")
	}
	return name, remoting.CreateTopic(ctx, remoting.Auth{}, e.names, remoting.SplitAddrs(brokers), name, 8)
}

// parallel runs op n times over w goroutines and returns ops/s.
func parallel(n, w int, op func() error) (float64, error) {
	var left atomic.Int64
	left.Store(int64(n))
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for range w {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				if err := op(); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, err
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

type pair struct {
	name, baseline, subject string
	target                  float64
	// run measures both sides once and returns their rates.
	run func(ctx context.Context) (base, subject float64, err error)
}

func (e *env) measure(ctx context.Context, p pair) (Result, error) {
	var ratios, bases, subjects []float64
	for i := range e.cfg.Repeats {
		b, s, err := p.run(ctx)
		if err != nil {
			return Result{}, err
		}
		fmt.Fprintf(e.cfg.Progress, "  %-34s run %d: %10.0f vs %10.0f /s  (%.2fx)\n", p.name, i+1, s, b, s/b)
		ratios, bases, subjects = append(ratios, s/b), append(bases, b), append(subjects, s)
	}
	r := Result{Name: p.name, Baseline: p.baseline, Subject: p.subject,
		BaseRate: median(bases), Rate: median(subjects), Ratio: median(ratios), Target: p.target}
	if p.target > 0 {
		pass := r.Ratio >= p.target
		r.Pass = &pass
	}
	return r, nil
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func (e *env) pairs() []pair {
	n := e.cfg.Ops
	sendPair := func(w int) pair {
		return pair{name: fmt.Sprintf("producer send, %d goroutine(s)", w), baseline: "raw client SendSync",
			subject: "producer.Send", target: 0.95,
			run: func(ctx context.Context) (float64, float64, error) {
				topic, err := e.topic(ctx, "BenchSend")
				if err != nil {
					return 0, 0, err
				}
				raw := func() error {
					_, err := e.raw.SendSync(ctx, primitive.NewMessage(topic, e.body).WithKeys([]string{"k"}))
					return err
				}
				wrapped := func() error {
					_, err := e.prod.Send(ctx, producer.Message{Topic: topic, Body: e.body, Keys: []string{"k"}})
					return err
				}
				if err := raw(); err != nil { // routes and connections warm
					return 0, 0, err
				}
				if err := wrapped(); err != nil {
					return 0, 0, err
				}
				b, err := parallel(n, w, raw)
				if err != nil {
					return 0, 0, err
				}
				s, err := parallel(n, w, wrapped)
				return b, s, err
			}}
	}
	ps := []pair{sendPair(1), sendPair(workers)}
	for _, guard := range []string{"none", "redis", "mysql"} {
		ps = append(ps, pair{name: "consume, guard " + guard, baseline: "raw push consumer", subject: "consumer.New",
			target: map[string]float64{"redis": 0.5}[guard],
			run:    func(ctx context.Context) (float64, float64, error) { return e.consumePair(ctx, guard) }})
	}
	ps = append(ps,
		pair{name: "MySQL guard", baseline: "DB bound: INSERT+COMMIT/2", subject: "Guard.Do (claim+complete)", target: 0.8,
			run: func(ctx context.Context) (float64, float64, error) {
				store, _ := idempotency.NewMySQLStore(e.db)
				g, err := idempotency.NewGuard(fmt.Sprint("bench-", e.seq.Add(1)), store)
				if err != nil {
					return 0, 0, err
				}
				b, err := parallel(n, workers, func() error {
					_, err := e.db.ExecContext(ctx, "INSERT INTO scratch (id, v) VALUES (?, 'x')", e.seq.Add(1))
					return err
				})
				if err != nil {
					return 0, 0, err
				}
				s, err := parallel(n, workers, func() error {
					_, err := g.Do(ctx, fmt.Sprint("k-", e.seq.Add(1)), func(context.Context) error { return nil })
					return err
				})
				return b / 2, s, err
			}},
		pair{name: "transactional guard", baseline: "business tx alone", subject: "TxGuard.Do", target: 0.85,
			run: func(ctx context.Context) (float64, float64, error) {
				g, err := idempotency.NewTxGuard(e.db, fmt.Sprint("bench-tx-", e.seq.Add(1)))
				if err != nil {
					return 0, 0, err
				}
				business := func(ctx context.Context, tx *sqlx.Tx) error {
					_, err := tx.ExecContext(ctx, "INSERT INTO business (id, amount) VALUES (?, 1)", fmt.Sprint("b-", e.seq.Add(1)))
					return err
				}
				b, err := parallel(n, workers, func() error {
					tx, err := e.db.BeginTxx(ctx, nil)
					if err != nil {
						return err
					}
					if err := business(ctx, tx); err != nil {
						tx.Rollback()
						return err
					}
					return tx.Commit()
				})
				if err != nil {
					return 0, 0, err
				}
				s, err := parallel(n, workers, func() error {
					_, err := g.Do(ctx, fmt.Sprint("t-", e.seq.Add(1)), business)
					return err
				})
				return b, s, err
			}},
		pair{name: "outbox Transact", baseline: "insert+commit, then send", subject: "Relay.Transact", target: 0.8,
			run: func(ctx context.Context) (float64, float64, error) { return e.transactPair(ctx) }},
		pair{name: fmt.Sprintf("reconcile drain of %d rows", e.cfg.DrainRows), baseline: "raw send", subject: "Job.RunOnce",
			target: 0.7, run: func(ctx context.Context) (float64, float64, error) { return e.drainPair(ctx) }},
		pair{name: "Redis guard vs Redis's bound", baseline: "SET NX", subject: "Guard.Do (claim+complete)",
			run: func(ctx context.Context) (float64, float64, error) {
				store, _ := idempotency.NewRedisStore(e.rdb, idempotency.WithPrefix(fmt.Sprint("bench:", time.Now().UnixNano(), ":")))
				g, err := idempotency.NewGuard("bench-redis", store)
				if err != nil {
					return 0, 0, err
				}
				b, err := parallel(n, workers, func() error {
					return e.rdb.SetNX(ctx, fmt.Sprint("bench:nx:", time.Now().UnixNano(), ":", e.seq.Add(1)), "1", time.Minute).Err()
				})
				if err != nil {
					return 0, 0, err
				}
				s, err := parallel(n, workers, func() error {
					_, err := g.Do(ctx, fmt.Sprint("k-", e.seq.Add(1)), func(context.Context) error { return nil })
					return err
				})
				return b, s, err
			}},
		pair{name: "context: Redis SET NX vs MySQL commit", baseline: "MySQL INSERT+COMMIT", subject: "Redis SET NX",
			run: func(ctx context.Context) (float64, float64, error) {
				b, err := parallel(n, workers, func() error {
					_, err := e.db.ExecContext(ctx, "INSERT INTO scratch (id, v) VALUES (?, 'x')", e.seq.Add(1))
					return err
				})
				if err != nil {
					return 0, 0, err
				}
				s, err := parallel(n, workers, func() error {
					return e.rdb.SetNX(ctx, fmt.Sprint("bench:nx:", e.seq.Add(1)), "1", time.Minute).Err()
				})
				return b, s, err
			}},
	)
	if e.broker == nil {
		ps = append(ps, pair{name: "real broker vs rmqtest (raw send)", baseline: "rmqtest", subject: "RMQ_NAMESRV broker",
			run: func(ctx context.Context) (float64, float64, error) { return e.brokerPair(ctx) }})
	}
	return ps
}

// brokerPair compares raw sends to the real broker with raw sends to an
// in-process rmqtest, 16 goroutines each.
func (e *env) brokerPair(ctx context.Context) (float64, float64, error) {
	b, err := rmqtest.Start()
	if err != nil {
		return 0, 0, err
	}
	defer b.Close()
	if err := b.CreateTopic("BenchEmbedded", 8); err != nil {
		return 0, 0, err
	}
	p, err := rocketmq.NewProducer(rmqproducer.WithNameServer([]string{b.NamesrvAddr()}), rmqproducer.WithGroupName("bench_embedded"),
		rmqproducer.WithInstanceName(fmt.Sprint("bench-embedded-", time.Now().UnixNano())))
	if err != nil {
		return 0, 0, err
	}
	if err := p.Start(); err != nil {
		return 0, 0, err
	}
	defer p.Shutdown()
	topic, err := e.topic(ctx, "BenchReal")
	if err != nil {
		return 0, 0, err
	}
	send := func(p rocketmq.Producer, topic string) func() error {
		return func() error {
			_, err := p.SendSync(ctx, primitive.NewMessage(topic, e.body))
			return err
		}
	}
	for _, f := range []func() error{send(p, "BenchEmbedded"), send(e.raw, topic)} {
		if err := f(); err != nil {
			return 0, 0, err
		}
	}
	base, err := parallel(e.cfg.Ops, workers, send(p, "BenchEmbedded"))
	if err != nil {
		return 0, 0, err
	}
	real, err := parallel(e.cfg.Ops, workers, send(e.raw, topic))
	return base, real, err
}

// consumePair loads messages, then consumes them with a raw push consumer
// and with the wrapper (guarded as asked), each in its own group; rates
// run from the first message to the last.
func (e *env) consumePair(ctx context.Context, guard string) (float64, float64, error) {
	n := e.cfg.DrainRows
	topic, err := e.topic(ctx, "BenchConsume")
	if err != nil {
		return 0, 0, err
	}
	batch := make([]producer.Message, 0, 64)
	for i := range n {
		batch = append(batch, producer.Message{Topic: topic, Body: e.body, Keys: []string{fmt.Sprint("k-", i)}})
		if len(batch) == cap(batch) || i == n-1 {
			if _, err := e.prod.SendBatch(ctx, batch); err != nil {
				return 0, 0, err
			}
			batch = batch[:0]
		}
	}
	timed := func(start func(count func()) (stop func(), err error)) (float64, error) {
		var got, first, last atomic.Int64
		done := make(chan struct{})
		stop, err := start(func() {
			now := time.Now().UnixNano()
			first.CompareAndSwap(0, now)
			if got.Add(1) == int64(n) {
				last.Store(now)
				close(done)
			}
		})
		if err != nil {
			return 0, err
		}
		defer stop()
		select {
		case <-done:
		case <-time.After(3 * time.Minute):
			return 0, fmt.Errorf("consumed %d of %d", got.Load(), n)
		}
		return float64(n) / time.Duration(last.Load()-first.Load()).Seconds(), nil
	}
	// Unique per run: guards keep done markers for days, across runs.
	seq := fmt.Sprint(time.Now().UnixNano(), "_", e.seq.Add(1))
	base, err := timed(func(count func()) (func(), error) {
		c, err := rocketmq.NewPushConsumer(rmqconsumer.WithNameServer(e.names),
			rmqconsumer.WithGroupName(fmt.Sprint("bench_raw_", seq)), rmqconsumer.WithInstance(fmt.Sprint("bench-raw-c-", seq)),
			rmqconsumer.WithConsumeFromWhere(rmqconsumer.ConsumeFromFirstOffset))
		if err != nil {
			return nil, err
		}
		err = c.Subscribe(topic, rmqconsumer.MessageSelector{}, func(_ context.Context, msgs ...*primitive.MessageExt) (rmqconsumer.ConsumeResult, error) {
			for range msgs {
				count()
			}
			return rmqconsumer.ConsumeSuccess, nil
		})
		if err != nil {
			return nil, err
		}
		if err := c.Start(); err != nil {
			return nil, err
		}
		return func() { c.Shutdown() }, nil
	})
	if err != nil {
		return 0, 0, err
	}
	group := fmt.Sprint("bench_", guard, "_", seq)
	opts := []consumer.Option{consumer.WithParker(discardParker{})}
	switch guard {
	case "redis":
		store, _ := idempotency.NewRedisStore(e.rdb, idempotency.WithPrefix(fmt.Sprint("bench:", seq, ":")))
		g, err := idempotency.NewGuard(group, store)
		if err != nil {
			return 0, 0, err
		}
		opts = append(opts, consumer.WithGuard(g))
	case "mysql":
		store, _ := idempotency.NewMySQLStore(e.db)
		g, err := idempotency.NewGuard(group, store)
		if err != nil {
			return 0, 0, err
		}
		opts = append(opts, consumer.WithGuard(g))
	}
	subject, err := timed(func(count func()) (func(), error) {
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
	return base, subject, err
}

type discardParker struct{}

func (discardParker) Park(context.Context, *consumer.DeadLetter) (bool, error) { return true, nil }

func (e *env) transactPair(ctx context.Context) (float64, float64, error) {
	n := e.cfg.Ops
	topic, err := e.topic(ctx, "BenchOutbox")
	if err != nil {
		return 0, 0, err
	}
	relay, err := outbox.NewRelay(e.db, e.prod)
	if err != nil {
		return 0, 0, err
	}
	insert := func(ctx context.Context, ex outbox.Execer, id string) error {
		_, err := ex.ExecContext(ctx, "INSERT INTO business (id, amount) VALUES (?, 1)", id)
		return err
	}
	base, err := parallel(n, workers, func() error {
		id := fmt.Sprint("p-", e.seq.Add(1))
		tx, err := e.db.BeginTxx(ctx, nil)
		if err != nil {
			return err
		}
		if err := insert(ctx, tx, id); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
		_, err = e.prod.Send(ctx, producer.Message{Topic: topic, Body: e.body, Keys: []string{id}})
		return err
	})
	if err != nil {
		return 0, 0, err
	}
	subject, err := parallel(n, workers, func() error {
		id := fmt.Sprint("t-", e.seq.Add(1))
		return relay.Transact(ctx, func(ctx context.Context, tx *outbox.Tx) error {
			if err := insert(ctx, tx, id); err != nil {
				return err
			}
			_, err := tx.Enqueue(ctx, outbox.Message{Topic: topic, Key: id, Body: e.body})
			return err
		})
	})
	return base, subject, err
}

func (e *env) drainPair(ctx context.Context) (float64, float64, error) {
	rows := e.cfg.DrainRows
	topic, err := e.topic(ctx, "BenchDrain")
	if err != nil {
		return 0, 0, err
	}
	relay, err := outbox.NewRelay(e.db, e.prod, outbox.WithConcurrency(workers))
	if err != nil {
		return 0, 0, err
	}
	job, err := reconcile.New(relay)
	if err != nil {
		return 0, 0, err
	}
	seq := fmt.Sprint(time.Now().UnixNano(), "_", e.seq.Add(1))
	for done := 0; done < rows; {
		tx, err := e.db.BeginTxx(ctx, nil)
		if err != nil {
			return 0, 0, err
		}
		for i := 0; i < 1000 && done < rows; i, done = i+1, done+1 {
			if _, _, err := relay.Enqueue(ctx, tx, outbox.Message{Topic: topic, Key: fmt.Sprint("d-", seq, "-", done), Body: e.body}); err != nil {
				tx.Rollback()
				return 0, 0, err
			}
		}
		if err := tx.Commit(); err != nil {
			return 0, 0, err
		}
	}
	base, err := parallel(rows, workers, func() error {
		_, err := e.prod.Send(ctx, producer.Message{Topic: topic, Body: e.body, Keys: []string{"raw"}})
		return err
	})
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	rep, err := job.RunOnce(ctx)
	if err != nil {
		return 0, 0, err
	}
	if rep.Sent != rows {
		return 0, 0, fmt.Errorf("drained %d of %d rows", rep.Sent, rows)
	}
	return base, float64(rows) / time.Since(start).Seconds(), nil
}

// PrintTable writes the results as a table.
func PrintTable(w io.Writer, results []Result) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PAIR\tBASELINE /s\tSUBJECT /s\tRATIO\tTARGET\t")
	for _, r := range results {
		target, verdict := "-", ""
		if r.Pass != nil {
			target = fmt.Sprintf(">= %.2f", r.Target)
			verdict = map[bool]string{true: "pass", false: "MISS"}[*r.Pass]
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.2f\t%s\t%s\n", r.Name, r.BaseRate, r.Rate, r.Ratio, target, verdict)
	}
	return tw.Flush()
}

// WriteJSON writes the results as JSON.
func WriteJSON(w io.Writer, results []Result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(results)
}

// WriteSVG draws the median ratios as a horizontal bar chart, with each
// target marked.
func WriteSVG(w io.Writer, results []Result) error {
	const rowH, left, width = 28, 300, 420
	maxRatio := 1.5
	for _, r := range results {
		maxRatio = max(maxRatio, min(r.Ratio, 10))
	}
	x := func(v float64) float64 { return left + min(v, maxRatio)/maxRatio*width }
	var b strings.Builder
	h := rowH*len(results) + 40
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", left+width+80, h)
	fmt.Fprintf(&b, `<text x="%d" y="16" font-weight="bold">subject / baseline (median ratio); | = target</text>`+"\n", left)
	fmt.Fprintf(&b, `<line x1="%.1f" y1="24" x2="%.1f" y2="%d" stroke="#999" stroke-dasharray="3,3"/>`+"\n", x(1), x(1), h-8)
	for i, r := range results {
		y := 28 + i*rowH
		color := "#6b8fc7"
		if r.Pass != nil {
			color = map[bool]string{true: "#5aa469", false: "#d9534f"}[*r.Pass]
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", left-8, y+15, xmlEscape(r.Name))
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="18" fill="%s"/>`+"\n", left, y+2, x(r.Ratio)-left, color)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d">%.2f</text>`+"\n", x(r.Ratio)+4, y+15, r.Ratio)
		if r.Target > 0 {
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="black" stroke-width="2"/>`+"\n", x(r.Target), y, x(r.Target), y+22)
		}
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func xmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
