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
//
// Runs against one database take turns (a named lock per database, held
// for each operation), so instances that apply the migrations as they
// start may do so at the same time. Migrations run under a strict
// sql_mode whatever the DSN sets, so a down that cannot keep a value
// whole fails instead of cutting it; the session's own sql_mode is
// restored afterwards. MySQL's DDL is not transactional: a migration of
// several statements that fails part way leaves its earlier statements
// applied and its version as it was.
package migrations

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/database"
	"github.com/seed157d4c4d/reliablemq/internal/sqldb"
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

// Option configures [NewProvider].
type Option func(*session)

// OnLockWait has waiting report the wait for the lock that another run
// against the same database holds (see [NewProvider]): when it begins and
// every 5 s, with the MySQL connection id of the holder, which SHOW
// PROCESSLIST shows and KILL ends.
func OnLockWait(waiting func(holder int64)) Option {
	return func(s *session) { s.waiting = waiting }
}

// NewProvider returns a goose provider for db (a MySQL or MariaDB
// database) over [FS], for callers that want status, up-to or down-to.
// Its operations hold a lock named after the database, so two runs
// against one database take turns; a run waits for the lock until its
// ctx ends (the error then names the holder's connection).
func NewProvider(db *sql.DB, opts ...Option) (*goose.Provider, error) {
	var sess session
	for _, o := range opts {
		o(&sess)
	}
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
		goose.WithStore(versionStore{ext}), goose.WithDisableGlobalRegistry(true),
		goose.WithSessionLocker(sess))
	if err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	return p, nil
}

// lockName is the name of the lock a run holds: one per database, within
// MySQL's 64 characters whatever the database's name (NULL when the
// session has no database).
const lockName = "CONCAT('reliablemq_migrate:', SHA1(DATABASE()))"

// strictMode is the sql_mode migrations run under, whatever the session's
// own: a statement that cannot keep a value whole (a tag too long for the
// narrower column of a down, a character the old character set lacks)
// fails, where a loose sql_mode would cut or replace the value and carry
// on; and a table is created in InnoDB or not at all.
const strictMode = "'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'"

// session prepares the connection goose runs a provider's operations on
// (Up, Down, Status and the rest; its migrations run on that connection
// too). It holds a lock named after the database for the whole operation,
// so runs against one database (two instances deploying at once) take
// turns instead of creating the same tables twice; and it sets
// [strictMode] and the time zone UTC for the operation (the version table
// records when each version was applied in the session's time zone),
// restoring the session's own afterwards (a connection whose settings
// could not be restored is discarded, never put back in the caller's
// pool).
type session struct {
	waiting func(holder int64) // OnLockWait's; nil: wait silently
}

// lockWait bounds one wait for the lock in the server: waiting in rounds
// lets a cancelled ctx end the wait within it, without leaving a server
// thread queued for the lock after the client gave up.
const lockWait = 5

func (s session) SessionLock(ctx context.Context, conn *sql.Conn) error {
	var holder int64 // the connection that held the lock in the last round
	// The first try does not wait, so a run that waits knows for whom.
	for wait := 0; ; {
		var got sql.NullInt64
		if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK("+lockName+", "+strconv.Itoa(wait)+")").Scan(&got); err != nil {
			return fmt.Errorf("migrations: lock: %w%s", err, heldBy(holder))
		}
		if !got.Valid {
			return errors.New("migrations: no database selected: the DSN must name the database to migrate")
		}
		if got.Int64 == 1 {
			break
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("migrations: lock: %w%s", err, heldBy(holder))
		}
		var h sql.NullInt64
		if err := conn.QueryRowContext(ctx, "SELECT IS_USED_LOCK("+lockName+")").Scan(&h); err != nil {
			return fmt.Errorf("migrations: lock: %w%s", err, heldBy(holder))
		}
		if !h.Valid { // the holder let go meanwhile: try again at once
			wait = 0
			continue
		}
		holder, wait = h.Int64, lockWait
		if s.waiting != nil {
			s.waiting(holder)
		}
	}
	if _, err := conn.ExecContext(ctx, "SET @reliablemq_sql_mode = @@SESSION.sql_mode, @reliablemq_time_zone = @@SESSION.time_zone,"+
		" SESSION sql_mode = "+strictMode+", SESSION time_zone = '+00:00'"); err != nil {
		return errors.Join(fmt.Errorf("migrations: session settings: %w", err), discard(conn))
	}
	return nil
}

func (session) SessionUnlock(ctx context.Context, conn *sql.Conn) error {
	if _, err := conn.ExecContext(ctx, "SET SESSION sql_mode = @reliablemq_sql_mode, SESSION time_zone = @reliablemq_time_zone,"+
		" @reliablemq_sql_mode = NULL, @reliablemq_time_zone = NULL"); err != nil {
		return errors.Join(fmt.Errorf("migrations: restore session settings: %w", err), discard(conn))
	}
	if _, err := conn.ExecContext(ctx, "DO RELEASE_LOCK("+lockName+")"); err != nil {
		return errors.Join(fmt.Errorf("migrations: unlock: %w", err), discard(conn))
	}
	return nil
}

// heldBy names the connection that held the lock, for the error of a run
// that gave up waiting for it.
func heldBy(holder int64) string {
	if holder == 0 {
		return ""
	}
	return fmt.Sprintf(" (waiting for the migration lock, held by MySQL connection %d: another run, or the connection of a crashed one that the server has not dropped yet; KILL %d ends it)", holder, holder)
}

// discard makes the pool drop conn when it is closed, ending its session
// (and with it the lock and the sql_mode it holds).
func discard(conn *sql.Conn) error {
	err := conn.Raw(func(any) error { return driver.ErrBadConn })
	if errors.Is(err, driver.ErrBadConn) {
		return nil
	}
	return err
}

// versionStore is goose's MySQL version table, but a version's rows are
// deleted by their primary key, and when a version was applied is read as
// text (see [versionStore.GetMigration]). Goose deletes them by version_id, which
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

// GetMigration reads when version was applied as text, as a UTC wall
// clock: goose scans the DATETIME into a time.Time, which fails on a
// handle with parseTime off (Status then failed), and takes it in the
// handle's loc. Sessions record it in UTC (see [session]); versions
// applied before this package pinned the zone show the wall clock of the
// session that applied them.
func (s versionStore) GetMigration(ctx context.Context, db database.DBTxConn, version int64) (*database.GetMigrationResult, error) {
	var at sqldb.NullTime
	var applied bool
	err := db.QueryRowContext(ctx, "SELECT CAST(tstamp AS CHAR), is_applied FROM "+VersionTable+
		" WHERE version_id = ? ORDER BY id DESC LIMIT 1", version).Scan(&at, &applied)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %d", database.ErrVersionNotFound, version)
	}
	if err != nil {
		return nil, fmt.Errorf("failed to get migration %d: %w", version, err)
	}
	return &database.GetMigrationResult{Timestamp: at.Time, IsApplied: applied}, nil
}

// HasVersionTable reports whether db's database has [VersionTable], that
// is whether migrations ever ran there. It only reads the catalog: a
// provider's Status creates the table, a write that a status check on a
// database never migrated (or a user allowed only to read) should not
// make. A session without a database is an error.
func HasVersionTable(ctx context.Context, db *sql.DB) (bool, error) {
	var name sql.NullString
	var exists bool
	if err := db.QueryRowContext(ctx, "SELECT DATABASE(), EXISTS (SELECT 1 FROM information_schema.TABLES"+
		" WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '"+VersionTable+"')").Scan(&name, &exists); err != nil {
		return false, fmt.Errorf("migrations: %w", err)
	}
	if !name.Valid {
		return false, errors.New("migrations: no database selected: the DSN must name the database to migrate")
	}
	return exists, nil
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
