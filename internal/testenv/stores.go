package testenv

import (
	"context"
	"database/sql"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jmoiron/sqlx"
	"github.com/redis/go-redis/v9"
	"github.com/seed157d4c4d/reliablemq/migrations"
)

// defaultMySQL is the quickstart's default server, used when MYSQL_DSN is
// unset and it answers.
const defaultMySQL = "root@tcp(127.0.0.1:3306)/?parseTime=true"

var (
	localMySQL      sync.Once
	localMySQLFound bool
)

// mysqlDSN is MYSQL_DSN, or the local default when it is unset and a MySQL
// answers there (checked once per test binary), or "".
func mysqlDSN() string {
	if dsn := os.Getenv("MYSQL_DSN"); dsn != "" {
		return dsn
	}
	localMySQL.Do(func() {
		db, err := sql.Open("mysql", defaultMySQL)
		if err != nil {
			return
		}
		defer db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		localMySQLFound = db.PingContext(ctx) == nil
	})
	if localMySQLFound {
		return defaultMySQL
	}
	return ""
}

// MySQL returns a connection to a fresh database on the server MYSQL_DSN
// names (or, when it is unset, the local MySQL at the quickstart's default
// root@tcp(127.0.0.1:3306)/ if one answers), with the migrations applied;
// the database is dropped when the test ends. With neither the test is
// skipped (or fails, when RELIABLEMQ_REQUIRE lists mysql).
func MySQL(t testing.TB) *sqlx.DB {
	t.Helper()
	dsn := mysqlDSN()
	if dsn == "" {
		missing(t, "mysql", "MYSQL_DSN")
	}
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatalf("testenv: MYSQL_DSN: %v", err)
	}
	cfg.ParseTime = true
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	name := strings.ToLower(Name(t, "rmq"))
	if len(name) > 64 {
		name = name[:20] + name[len(name)-44:]
	}
	admin, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		t.Fatalf("testenv: open mysql: %v", err)
	}
	defer admin.Close()
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE `"+name+"`"); err != nil {
		t.Fatalf("testenv: create database (is MySQL up at MYSQL_DSN?): %v", err)
	}
	t.Cleanup(func() {
		a, err := sql.Open("mysql", cfg.FormatDSN())
		if err != nil {
			t.Errorf("testenv: open mysql: %v", err)
			return
		}
		defer a.Close()
		if _, err := a.Exec("DROP DATABASE `" + name + "`"); err != nil {
			t.Errorf("testenv: drop database %s: %v", name, err)
		}
	})
	cfg.DBName = name
	db, err := sqlx.Open("mysql", cfg.FormatDSN())
	if err != nil {
		t.Fatalf("testenv: open %s: %v", name, err)
	}
	t.Cleanup(func() { db.Close() })
	if err := migrations.Up(ctx, db.DB); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return db
}

// MigrateDownTo rolls the schema of db (from [MySQL]) back to version: a
// database as an older release left it.
func MigrateDownTo(t testing.TB, db *sqlx.DB, version int64) {
	t.Helper()
	p, err := migrations.NewProvider(db.DB)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if _, err := p.DownTo(context.Background(), version); err != nil {
		t.Fatalf("testenv: migrate down to %d: %v", version, err)
	}
}

// MySQLDSN returns the DSN of the database db was opened on by [MySQL].
func MySQLDSN(t testing.TB, db *sqlx.DB) string {
	t.Helper()
	var name string
	if err := db.Get(&name, "SELECT DATABASE()"); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	cfg, err := mysql.ParseDSN(mysqlDSN())
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	cfg.DBName = name
	cfg.ParseTime = true
	return cfg.FormatDSN()
}

// Redis returns a client for the server REDIS_ADDR names, closed when the
// test ends. Tests keep to their own keys (use [Name] in a prefix). Without
// REDIS_ADDR the test is skipped (or fails, when RELIABLEMQ_REQUIRE lists
// redis).
func Redis(t testing.TB) redis.UniversalClient {
	t.Helper()
	addr := os.Getenv("REDIS_ADDR")
	if addr == "" {
		missing(t, "redis", "REDIS_ADDR")
	}
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("testenv: redis at %s: %v", addr, err)
	}
	return c
}

// Variant is a handle on a test database opened with other DSN options or
// session settings than the default.
type Variant struct {
	Name string
	DB   *sqlx.DB
}

// variant is one DSN variation a user's application may run with.
type variant struct {
	name   string
	mutate func(*mysql.Config)
}

var (
	utcPlus8 = time.FixedZone("UTC+8", 8*3600)
	// variants are the configurations [MySQLVariants] opens; the first two
	// are the sessions [MySQLSessions] returns.
	variants = []variant{
		{"session +08:00", func(c *mysql.Config) { c.Params = map[string]string{"time_zone": "'+08:00'"} }},
		{"session -07:00", func(c *mysql.Config) { c.Params = map[string]string{"time_zone": "'-07:00'"} }},
		{"loc UTC+8 with a +08:00 session", func(c *mysql.Config) {
			c.Loc = utcPlus8
			c.Params = map[string]string{"time_zone": "'+08:00'"}
		}},
		{"clientFoundRows", func(c *mysql.Config) { c.ClientFoundRows = true }},
		{"sql_mode ANSI", func(c *mysql.Config) { c.Params = map[string]string{"sql_mode": "'ANSI'"} }},
		{"sql_safe_updates", func(c *mysql.Config) { c.Params = map[string]string{"sql_safe_updates": "1"} }},
		{"parseTime off", func(c *mysql.Config) { c.ParseTime = false }},
		{"interpolateParams", func(c *mysql.Config) { c.InterpolateParams = true }},
		// A client character set in which a backslash can end a multibyte
		// character: escaping in interpolated arguments does not hold.
		{"interpolateParams with charset gbk", func(c *mysql.Config) {
			c.InterpolateParams = true
			if err := c.Apply(mysql.Charset("gbk", "")); err != nil {
				panic(err)
			}
		}},
	}
)

// MySQLVariants opens db's database again once per configuration a user's
// application may run with, each a test case for code that must hold
// under all of them: sessions ahead of and behind UTC, a loc other than
// UTC, clientFoundRows, parseTime off, interpolateParams (also with the
// gbk character set), sql_modes that change what a statement means:
// ANSI (double quotes name columns, || concatenates) and, on MariaDB,
// ORACLE (more reserved words), sql_safe_updates (an UPDATE or DELETE
// must name a key), and the isolation levels READ COMMITTED and
// SERIALIZABLE. The handles are closed when the test ends.
func MySQLVariants(t testing.TB, db *sqlx.DB) []Variant {
	t.Helper()
	vs := variants
	var version string
	if err := db.Get(&version, "SELECT VERSION()"); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	// MariaDB before 11.1 names the isolation tx_isolation; MySQL 8 only
	// transaction_isolation.
	isolation := "transaction_isolation"
	if strings.Contains(version, "MariaDB") {
		vs = append(slices.Clip(vs), variant{"sql_mode ORACLE", func(c *mysql.Config) { c.Params = map[string]string{"sql_mode": "'ORACLE'"} }})
		isolation = "tx_isolation"
	}
	for _, level := range []string{"READ-COMMITTED", "SERIALIZABLE"} {
		vs = append(slices.Clip(vs), variant{"isolation " + level, func(c *mysql.Config) { c.Params = map[string]string{isolation: "'" + level + "'"} }})
	}
	out := make([]Variant, 0, len(vs))
	for _, v := range vs {
		out = append(out, Variant{Name: v.name, DB: openVariant(t, db, v)})
	}
	return out
}

// MySQLSessions returns two handles on db's database whose sessions run 15
// hours apart (+08:00 and -07:00), as two application instances in
// different time zones would.
func MySQLSessions(t testing.TB, db *sqlx.DB) (east, west *sqlx.DB) {
	t.Helper()
	return openVariant(t, db, variants[0]), openVariant(t, db, variants[1])
}

// MySQLWith opens db's database again with the DSN settings mutate makes
// (a charset, interpolateParams, a sql_mode); the handle is closed when
// the test ends.
func MySQLWith(t testing.TB, db *sqlx.DB, mutate func(*mysql.Config)) *sqlx.DB {
	t.Helper()
	cfg, err := mysql.ParseDSN(MySQLDSN(t, db))
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	mutate(cfg)
	// Through the DSN's text, so that the parameters the driver reads
	// itself (charset) take effect.
	vdb, err := sqlx.Open("mysql", cfg.FormatDSN())
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() { vdb.Close() })
	return vdb
}

// Interpolated is a [MySQLWith] setting: interpolateParams with the
// client character set charset.
func Interpolated(charset string) func(*mysql.Config) {
	return func(c *mysql.Config) {
		c.InterpolateParams = true
		c.Params = map[string]string{"charset": charset}
	}
}

func openVariant(t testing.TB, db *sqlx.DB, v variant) *sqlx.DB {
	t.Helper()
	cfg, err := mysql.ParseDSN(MySQLDSN(t, db))
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	v.mutate(cfg)
	conn, err := mysql.NewConnector(cfg) // not through a DSN: a fixed zone has no name to parse
	if err != nil {
		t.Fatalf("testenv: open %s: %v", v.name, err)
	}
	vdb := sqlx.NewDb(sql.OpenDB(conn), "mysql")
	t.Cleanup(func() { vdb.Close() })
	return vdb
}

// RedisCluster returns the seed addresses of the Redis Cluster that
// REDIS_CLUSTER_ADDRS names (comma-separated). Without it the test is
// skipped (or fails, when RELIABLEMQ_REQUIRE lists redis-cluster).
func RedisCluster(t testing.TB) []string {
	t.Helper()
	addrs := os.Getenv("REDIS_CLUSTER_ADDRS")
	if addrs == "" {
		missing(t, "redis-cluster", "REDIS_CLUSTER_ADDRS")
	}
	return strings.Split(addrs, ",")
}

// MySQLAutocommitOff opens db's database again with autocommit=0, a
// configuration the stores must refuse (sqldb.ErrAutocommitOff) rather
// than leave their writes uncommitted. The handle is closed when the test
// ends.
func MySQLAutocommitOff(t testing.TB, db *sqlx.DB) *sqlx.DB {
	t.Helper()
	return openVariant(t, db, variant{"autocommit off", func(c *mysql.Config) { c.Params = map[string]string{"autocommit": "0"} }})
}
