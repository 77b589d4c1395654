// Package migrations holds the SQL schema reliablemq's stores use, as
// numbered up/down files (MySQL 8 and MariaDB 10.11) embedded in [FS], and
// applies them with goose.
//
// The library never runs DDL on its own: apply these with
// `reliablemq migrate up`, with [Up] from your own deploy step, or copy the
// files into your migration tool. Tables:
//   - mq_consume_log: the idempotency guard's dedup and lease rows;
//   - mq_dead_letter: messages parked for manual handling;
//   - mq_log: the outbox.
//
// The schema version is kept in the table reliablemq_schema_version, so it
// does not collide with an application's own goose table.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"

	"github.com/pressly/goose/v3"
)

//go:embed sql/*.sql
var embedded embed.FS

// FS holds the migration files, named NNNNN_name.sql, in goose's format.
var FS fs.FS = mustSub(embedded, "sql")

func mustSub(f embed.FS, dir string) fs.FS {
	sub, err := fs.Sub(f, dir)
	if err != nil {
		panic(err) // the directory is embedded at build time
	}
	return sub
}

// VersionTable is where the applied schema version is recorded.
const VersionTable = "reliablemq_schema_version"

// NewProvider returns a goose provider for db (a MySQL or MariaDB
// database) over [FS], for callers that want status, up-to or down-to.
func NewProvider(db *sql.DB) (*goose.Provider, error) {
	p, err := goose.NewProvider(goose.DialectMySQL, db, FS,
		goose.WithTableName(VersionTable), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	return p, nil
}

// Up applies every migration not yet applied.
func Up(ctx context.Context, db *sql.DB) error {
	p, err := NewProvider(db)
	if err != nil {
		return err
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrations: up: %w", err)
	}
	return nil
}
