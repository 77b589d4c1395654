// Package exampleenv starts what the examples run on: RocketMQ (rmqtest
// unless RMQ_NAMESRV is set), a fresh MySQL database on the server
// MYSQL_DSN names (default root@tcp(127.0.0.1:3306)/) with the migrations
// applied, and Redis (miniredis unless REDIS_ADDR is set).
package exampleenv

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/go-sql-driver/mysql"
	"github.com/jmoiron/sqlx"
	"github.com/redis/go-redis/v9"
	"github.com/seed157d4c4d/reliablemq/internal/remoting"
	"github.com/seed157d4c4d/reliablemq/migrations"
	"github.com/seed157d4c4d/reliablemq/rmqtest"
)

// Env is a running environment.
type Env struct {
	NameServers []string
	// Broker is the in-process broker, nil on a real cluster.
	Broker  *rmqtest.Broker
	DB      *sqlx.DB
	Redis   redis.UniversalClient
	closers []func()
}

// Go runs run (a consumer's, drain's or reconcile job's Run) in the
// background; Close cancels its ctx and waits for it, printing its error
// to stderr, if any.
func (e *Env) Go(ctx context.Context, run func(context.Context) error) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	e.closers = append(e.closers, func() {
		cancel()
		if err := <-done; err != nil {
			fmt.Fprintln(os.Stderr, "stopping:", err)
		}
	})
}

// Setup starts everything; database is the MySQL database to (re)create.
func Setup(ctx context.Context, database string) (*Env, error) {
	e := &Env{}
	if err := e.setup(ctx, database); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

func (e *Env) setup(ctx context.Context, database string) error {
	dsn := os.Getenv("MYSQL_DSN")
	if dsn == "" {
		dsn = "root@tcp(127.0.0.1:3306)/"
	}
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return fmt.Errorf("MYSQL_DSN: %w", err)
	}
	cfg.ParseTime, cfg.DBName = true, ""
	root, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		return err
	}
	defer root.Close()
	if err := root.PingContext(ctx); err != nil {
		return fmt.Errorf("no MySQL at %s (%v): run `docker compose up -d --wait mysql` or install MariaDB, or set MYSQL_DSN", cfg.Addr, err)
	}
	for _, q := range []string{"DROP DATABASE IF EXISTS " + database, "CREATE DATABASE " + database} {
		if _, err := root.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	cfg.DBName = database
	if e.DB, err = sqlx.Open("mysql", cfg.FormatDSN()); err != nil {
		return err
	}
	e.closers = append(e.closers, func() { e.DB.Close() })
	if err := migrations.Up(ctx, e.DB.DB); err != nil {
		return err
	}
	if addr := os.Getenv("REDIS_ADDR"); addr != "" {
		e.Redis = redis.NewClient(&redis.Options{Addr: addr})
	} else {
		m, err := miniredis.Run()
		if err != nil {
			return err
		}
		e.closers = append(e.closers, m.Close)
		e.Redis = redis.NewClient(&redis.Options{Addr: m.Addr()})
	}
	e.closers = append(e.closers, func() { e.Redis.Close() })
	if ns := os.Getenv("RMQ_NAMESRV"); ns != "" {
		e.NameServers = []string{ns}
		return nil
	}
	b, err := rmqtest.Start()
	if err != nil {
		return err
	}
	e.closers = append(e.closers, func() { b.Close() })
	e.Broker, e.NameServers = b, []string{b.NamesrvAddr()}
	return nil
}

// CreateTopic creates topic with queues queues, and the retry topic of
// each group given, so first retries need not wait for a route refresh.
func (e *Env) CreateTopic(ctx context.Context, topic string, queues int, groups ...string) error {
	topics := []string{topic}
	for _, g := range groups {
		topics = append(topics, "%RETRY%"+g)
	}
	for _, t := range topics {
		if e.Broker != nil {
			if err := e.Broker.CreateTopic(t, queues); err != nil {
				return err
			}
			continue
		}
		brokers := os.Getenv("RMQ_BROKER")
		if brokers == "" {
			return errors.New("set RMQ_BROKER (the broker addresses) with RMQ_NAMESRV to create topics")
		}
		if err := remoting.CreateTopic(ctx, remoting.Credentials{}, e.NameServers, remoting.SplitAddrs(brokers), t, queues); err != nil {
			return err
		}
	}
	return nil
}

// Wait polls cond until it holds, moving rmqtest's clock a second per poll
// so retries and delays come due; it fails after limit.
func (e *Env) Wait(ctx context.Context, limit time.Duration, cond func() bool) error {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		if e.Broker != nil {
			e.Broker.Advance(time.Second)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// Close stops everything Setup started.
func (e *Env) Close() {
	for i := len(e.closers) - 1; i >= 0; i-- {
		e.closers[i]()
	}
}
