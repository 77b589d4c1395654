package bench

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/apache/rocketmq-client-go/v2"
	rmqproducer "github.com/apache/rocketmq-client-go/v2/producer"
	"github.com/go-sql-driver/mysql"
	"github.com/jmoiron/sqlx"
	"github.com/redis/go-redis/v9"
	"github.com/seed157d4c4d/reliablemq/internal/clientlog"
	"github.com/seed157d4c4d/reliablemq/internal/remoting"
	"github.com/seed157d4c4d/reliablemq/migrations"
	"github.com/seed157d4c4d/reliablemq/producer"
	"github.com/seed157d4c4d/reliablemq/rmqtest"
)

// env is what the pairs run against: MySQL (database reliablemq_bench,
// recreated), Redis (REDIS_ADDR, its keys under "reliablemq_bench:"
// removed, or miniredis), the broker (RMQ_NAMESRV or
// rmqtest) and two producers on it, ours and the raw client's.
type env struct {
	names  []string
	broker *rmqtest.Broker // nil on a real broker
	db     *sqlx.DB
	rdb    redis.UniversalClient
	prod   *producer.Producer
	raw    rocketmq.Producer
	closer []func()
	cfg    Config
	seq    atomic.Int64
	body   []byte
	meter  *meter
	// subjectFirst is the side order of the repeat being measured: the
	// repeats alternate it (see env.sides).
	subjectFirst bool
}

// open sets up an env whose pools serve up to maxWorkers goroutines. On
// error, whatever was set up is closed.
func open(ctx context.Context, cfg Config, maxWorkers int) (*env, error) {
	clientlog.Contain()
	e := &env{cfg: cfg, body: []byte(strings.Repeat("x", 256)), meter: newMeter()}
	for _, step := range []func() error{
		func() error { return e.openMySQL(ctx, maxWorkers) },
		func() error { return e.openRedis(ctx, maxWorkers) },
		e.openBroker,
		e.openProducers,
	} {
		if err := step(); err != nil {
			e.close()
			return nil, err
		}
	}
	return e, nil
}

// close releases everything in reverse order of setup.
func (e *env) close() {
	for i := len(e.closer) - 1; i >= 0; i-- {
		e.closer[i]()
	}
	e.closer = nil
}

// openMySQL recreates database reliablemq_bench with the migrations and
// two scratch tables.
func (e *env) openMySQL(ctx context.Context, maxWorkers int) error {
	mc, err := mysql.ParseDSN(mysqlDSN())
	if err != nil {
		return fmt.Errorf("MYSQL_DSN: %w", err)
	}
	mc.ParseTime, mc.DBName = true, ""
	if err := recreateDatabase(ctx, mc.FormatDSN(), mc.Addr); err != nil {
		return err
	}
	mc.DBName = "reliablemq_bench"
	if e.db, err = sqlx.Open("mysql", mc.FormatDSN()); err != nil {
		return err
	}
	e.db.SetMaxOpenConns(maxWorkers + 8)
	e.db.SetMaxIdleConns(maxWorkers + 8)
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
	return nil
}

// mysqlDSN is MYSQL_DSN, or the local default.
func mysqlDSN() string {
	if dsn := os.Getenv("MYSQL_DSN"); dsn != "" {
		return dsn
	}
	return "root@tcp(127.0.0.1:3306)/"
}

func recreateDatabase(ctx context.Context, dsn, addr string) error {
	root, err := sql.Open("mysql", dsn)
	if err != nil {
		return err
	}
	defer root.Close()
	for _, q := range []string{"DROP DATABASE IF EXISTS reliablemq_bench", "CREATE DATABASE reliablemq_bench"} {
		if _, err := root.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("mysql at %s: %w", addr, err)
		}
	}
	return nil
}

func (e *env) openRedis(ctx context.Context, maxWorkers int) error {
	addr := os.Getenv("REDIS_ADDR")
	if addr == "" {
		m, err := miniredis.Run()
		if err != nil {
			return err
		}
		e.closer = append(e.closer, m.Close)
		addr = m.Addr()
	}
	e.rdb = redis.NewClient(&redis.Options{Addr: addr, PoolSize: maxWorkers * 2})
	e.closer = append(e.closer, func() { e.rdb.Close() })
	// The guards' done markers outlive a run by days: left behind, they
	// grow the server's keyspace, and its rehashing, from run to run.
	if err := e.clearRedis(ctx); err != nil {
		return fmt.Errorf("redis at %s: %w", addr, err)
	}
	e.closer = append(e.closer, func() {
		// The run's ctx may have ended: the cleanup gets its own bound.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		e.clearRedis(ctx)
	})
	return nil
}

// clearRedis removes the bench's keys (under "reliablemq_bench:").
func (e *env) clearRedis(ctx context.Context) error {
	var cursor uint64
	for {
		keys, next, err := e.rdb.Scan(ctx, cursor, "reliablemq_bench:*", 10000).Result()
		if err != nil {
			return err
		}
		if len(keys) > 0 {
			if err := e.rdb.Unlink(ctx, keys...).Err(); err != nil {
				return err
			}
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}

func (e *env) openBroker() error {
	if ns := os.Getenv("RMQ_NAMESRV"); ns != "" {
		e.names = strings.Split(ns, ";")
		return nil
	}
	b, err := rmqtest.Start()
	if err != nil {
		return err
	}
	e.closer = append(e.closer, func() { b.Close() })
	e.broker, e.names = b, []string{b.NamesrvAddr()}
	return nil
}

func (e *env) openProducers() error {
	var err error
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
	return name, remoting.CreateTopic(ctx, remoting.Credentials{}, e.names, remoting.SplitAddrs(brokers), name, 8)
}
