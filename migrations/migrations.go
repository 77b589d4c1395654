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
	"strconv"
	"strings"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/database"
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
	store, err := database.NewStore(database.DialectMySQL, VersionTable)
	if err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	// Its TableExists, which reads the catalog, is kept: without it goose
	// would guess from a query on the table, which a session with
	// parseTime off fails.
	ext, ok := store.(database.StoreExtender)
	if !ok {
		return nil, fmt.Errorf("migrations: goose's MySQL store %T cannot tell whether its table exists", store)
	}
	p, err := goose.NewProvider(goose.DialectCustom, db, FS,
		goose.WithStore(versionStore{ext}), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	return p, nil
}

// versionStore is goose's MySQL version table, but a version's rows are
// deleted by their primary key. Goose deletes them by version_id, which
// is no key: under sql_safe_updates (a session or server setting some
// DBAs turn on) that statement is refused after the migration's down
// statements ran, and the schema is left a version below what the table
// records.
type versionStore struct{ database.StoreExtender }

func (s versionStore) Delete(ctx context.Context, db database.DBTxConn, version int64) error {
	rows, err := db.QueryContext(ctx, "SELECT id FROM "+VersionTable+" WHERE version_id = ?", version)
	if err != nil {
		return fmt.Errorf("failed to delete version %d: %w", version, err)
	}
	var ids []string
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return fmt.Errorf("failed to delete version %d: %w", version, err)
		}
		ids = append(ids, strconv.FormatInt(id, 10))
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("failed to delete version %d: %w", version, err)
	}
	if len(ids) == 0 {
		return nil
	}
	if _, err := db.ExecContext(ctx, "DELETE FROM "+VersionTable+" WHERE id IN ("+strings.Join(ids, ", ")+")"); err != nil {
		return fmt.Errorf("failed to delete version %d: %w", version, err)
	}
	return nil
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
