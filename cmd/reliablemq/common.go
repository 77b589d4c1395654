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
)

// parseFlags parses args into fs, printing usage problems to stderr.
// It reports errHelp for -h.
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) error {
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return errUsage
	}
	return nil
}

var errHelp = errors.New("help shown")

func dsnFlag(fs *flag.FlagSet) *string {
	return fs.String("dsn", os.Getenv("MYSQL_DSN"), "MySQL DSN, e.g. user:pass@tcp(host:3306)/db (env MYSQL_DSN)")
}

func namesrvFlag(fs *flag.FlagSet) *string {
	return fs.String("namesrv", os.Getenv("RMQ_NAMESRV"), "RocketMQ name servers, ';'-separated (env RMQ_NAMESRV)")
}

// openDB opens and pings the database dsn names.
func openDB(dsn string) (*sqlx.DB, error) {
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
		return nil, errors.New("no name server: pass -namesrv or set RMQ_NAMESRV")
	}
	clientlog.Contain()
	return strings.Split(s, ";"), nil
}
