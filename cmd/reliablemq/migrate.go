package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/pressly/goose/v3"
	"github.com/seed157d4c4d/reliablemq/migrations"
)

const migrateUsage = `usage: reliablemq migrate [-dsn DSN] up|down|status

  up      apply every migration not yet applied
  down    roll back the most recent migration
  status  list migrations and whether each is applied (writes nothing)

`

func migrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	setUsage(fs, migrateUsage)
	dsn := dsnFlag(fs)
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	switch {
	case fs.NArg() == 0:
		return usagef("migrate: missing action: up, down or status")
	case fs.NArg() > 1:
		return usagef("migrate: unexpected argument %q", fs.Arg(1))
	}
	action := fs.Arg(0)
	if action != "up" && action != "down" && action != "status" {
		return usagef("migrate: unknown action %q: want up, down or status", action)
	}
	db, err := openDB(ctx, *dsn, nil)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer db.Close()
	p, err := migrations.NewProvider(db.DB, migrations.OnLockWait(func(holder int64) {
		fmt.Fprintf(stderr, "waiting for the migration lock, held by MySQL connection %d (another migrate run, or a crashed one's connection the server has not dropped yet)\n", holder)
	}))
	if err != nil {
		return err
	}
	switch action {
	case "up":
		res, err := p.Up(ctx)
		// A failed run lists what it applied before the migration that
		// failed: those stay applied.
		var partial *goose.PartialError
		if errors.As(err, &partial) {
			res = partial.Applied
		}
		for _, r := range res {
			fmt.Fprintf(stdout, "applied %s (%s)\n", r.Source.Path, r.Duration.Round(1e6))
		}
		if partial != nil {
			return fmt.Errorf("migrate up: %s failed (earlier statements of it may have applied: MySQL commits each DDL statement): %w",
				partial.Failed.Source.Path, partial.Err)
		}
		if err != nil {
			return fmt.Errorf("migrate up: %w", err)
		}
		if len(res) == 0 {
			return upToDate(ctx, p, stdout)
		}
	case "down":
		r, err := p.Down(ctx)
		if err != nil {
			return fmt.Errorf("migrate down: %w", err)
		}
		fmt.Fprintf(stdout, "rolled back %s\n", r.Source.Path)
	case "status":
		// A database never migrated is shown as such without creating the
		// version table, which Status would.
		started, err := migrations.HasVersionTable(ctx, db.DB)
		if err != nil {
			return fmt.Errorf("migrate status: %w", err)
		}
		var st []*goose.MigrationStatus
		if started {
			if st, err = p.Status(ctx); err != nil {
				return fmt.Errorf("migrate status: %w", err)
			}
		} else {
			for _, src := range p.ListSources() {
				st = append(st, &goose.MigrationStatus{Source: src, State: goose.StatePending})
			}
		}
		for _, s := range st {
			at := ""
			if !s.AppliedAt.IsZero() {
				at = s.AppliedAt.Format("2006-01-02 15:04:05")
			}
			fmt.Fprintf(stdout, "%-28s %-8s %s\n", s.Source.Path, s.State, at)
		}
	}
	return nil
}

// upToDate says that up had nothing to apply, and whether the database is
// at a version this binary does not know (a newer release migrated it).
func upToDate(ctx context.Context, p *goose.Provider, stdout io.Writer) error {
	have, err := p.GetDBVersion(ctx)
	if err != nil {
		return fmt.Errorf("migrate up: %w", err)
	}
	var latest int64
	for _, src := range p.ListSources() {
		latest = max(latest, src.Version)
	}
	if have > latest {
		fmt.Fprintf(stdout, "nothing applied: the database is at version %d, newer than this binary's latest (%d)\n", have, latest)
		return nil
	}
	fmt.Fprintf(stdout, "already up to date (version %d)\n", have)
	return nil
}
