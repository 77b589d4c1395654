package outbox_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/outbox"
)

// execerOnly is a caller's Execer with just the methods outbox.Execer
// asks for (a wrapper that logs or traces the caller's transaction).
type execerOnly struct{ tx outbox.Execer }

func (e execerOnly) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return e.tx.ExecContext(ctx, query, args...)
}

func (e execerOnly) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return e.tx.QueryRowContext(ctx, query, args...)
}

// TestFirstCallsThroughAnExecerOnlyOnAPoolOfOne: an Execer needs only
// ExecContext and QueryRowContext. The first Enqueue and Confirm through
// one that wraps the caller's transaction, on a handle of one connection
// (which that transaction holds), must check the table's schema on the
// transaction's connection too: on another it waited until ctx ended and
// failed, every time, since the check never passed.
func TestFirstCallsThroughAnExecerOnlyOnAPoolOfOne(t *testing.T) {
	t.Parallel()
	db, _ := setup(t, newFake())
	db.SetMaxOpenConns(1)
	for _, call := range []string{"Enqueue", "Confirm"} {
		t.Run(call, func(t *testing.T) {
			r, err := outbox.NewRelay(db, newFake()) // a relay whose table is not checked yet
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			tx, err := db.BeginTxx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback()
			ex := execerOnly{tx}
			switch call {
			case "Enqueue":
				_, _, err = r.Enqueue(ctx, ex, outbox.Message{Topic: "orders", Key: "execer-only", Body: []byte("x")})
			case "Confirm":
				_, err = r.Confirm(ctx, ex, "orders", "execer-only")
			}
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}
