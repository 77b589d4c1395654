package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/go-sql-driver/mysql"
	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/internal/clientlog"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// parseFlags parses args into fs, printing usage problems to stderr. Flags
// may come before or after the positional arguments ("dead list -group g"
// and "dead -group g list" are the same); fs.Args() holds the positional
// ones afterwards. It reports errHelp for -h.
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) error {
	fs.SetOutput(stderr)
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return errHelp
			}
			return errUsage
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
	if err := fs.Parse(append([]string{"--"}, positional...)); err != nil {
		return errUsage
	}
	return nil
}

var errHelp = errors.New("help shown")

// dsnFlag's default is not shown in usage text: a DSN may hold a
// password. openDB falls back to MYSQL_DSN.
func dsnFlag(fs *flag.FlagSet) *string {
	return fs.String("dsn", "", "MySQL DSN, e.g. user:pass@tcp(host:3306)/db (default: $MYSQL_DSN, never printed)")
}

func namesrvFlag(fs *flag.FlagSet) *string {
	return fs.String("namesrv", "", "RocketMQ name servers, ';'-separated (default: $RMQ_NAMESRV)")
}

// openDB opens and pings the database dsn names.
func openDB(dsn string) (*sqlx.DB, error) {
	if dsn == "" {
		dsn = os.Getenv("MYSQL_DSN")
	}
	if dsn == "" {
		return nil, errors.New("no database: pass -dsn or set MYSQL_DSN")
	}
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("bad -dsn: %w", err)
	}
	cfg.ParseTime = true
	db, err := sqlx.Open("mysql", cfg.FormatDSN())
	if err != nil {
		return nil, err
	}
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, fmt.Errorf("database %s: %w", cfg.Addr, err)
	}
	return db, nil
}

func nameServers(s string) ([]string, error) {
	if s == "" {
		s = os.Getenv("RMQ_NAMESRV")
	}
	if s == "" {
		return nil, errors.New("no name server: pass -namesrv or set RMQ_NAMESRV")
	}
	clientlog.Contain()
	return strings.Split(s, ";"), nil
}

// brokerCredentials reads an ACL account from RMQ_ACCESS_KEY and
// RMQ_SECRET_KEY (and RMQ_SECURITY_TOKEN), from the environment only:
// flags would show the secret in ps. Nothing when unset.
func brokerCredentials() []producer.Option {
	ak := os.Getenv("RMQ_ACCESS_KEY")
	if ak == "" {
		return nil
	}
	return []producer.Option{producer.WithCredentials(producer.Credentials{AccessKey: ak,
		SecretKey: os.Getenv("RMQ_SECRET_KEY"), SecurityToken: os.Getenv("RMQ_SECURITY_TOKEN")})}
}
