package migrations_test

import (
	"context"
	"testing"

	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/migrations"
)

func tables(t *testing.T, db interface {
	SelectContext(context.Context, any, string, ...any) error
}) map[string]bool {
	t.Helper()
	var names []string
	if err := db.SelectContext(context.Background(), &names, "SHOW TABLES"); err != nil {
		t.Fatal(err)
	}
	m := map[string]bool{}
	for _, n := range names {
		m[n] = true
	}
	return m
}

func TestUpDownUpAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.MySQL(t) // applied Up once already
	want := []string{"mq_consume_log", "mq_dead_letter", "mq_log"}
	for _, name := range want {
		if !tables(t, db)[name] {
			t.Fatalf("table %s missing after up", name)
		}
	}
	p, err := migrations.NewProvider(db.DB)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.DownTo(ctx, 0); err != nil {
		t.Fatalf("down: %v", err)
	}
	for _, name := range want {
		if tables(t, db)[name] {
			t.Fatalf("table %s still there after down", name)
		}
	}
	if err := migrations.Up(ctx, db.DB); err != nil {
		t.Fatalf("up again: %v", err)
	}
	if err := migrations.Up(ctx, db.DB); err != nil {
		t.Fatalf("up when current: %v", err)
	}
	st, err := p.Status(ctx)
	if err != nil || len(st) != len(want) {
		t.Fatalf("status %v %v", st, err)
	}
	for _, s := range st {
		if s.State != "applied" {
			t.Fatalf("migration %d state %s", s.Source.Version, s.State)
		}
	}
}
