package idempotency_test

import (
	"context"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

func TestLookupShowsEachGroupsStateOfAKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := idempotency.NewMySQLStore(testenv.MySQL(t))
	if err != nil {
		t.Fatal(err)
	}
	done, failing, other := testenv.Name(t, "Done"), testenv.Name(t, "Failing"), testenv.Name(t, "Other")
	gd, _ := idempotency.NewGuard(done, s)
	gf, _ := idempotency.NewGuard(failing, s)
	if _, err := gd.Do(ctx, "order-1", func(context.Context) error { return nil }); err != nil {
		t.Fatal(err)
	}
	c, err := gf.Claim(ctx, "order-1")
	if err != nil || c.Release(ctx) != nil {
		t.Fatal(err)
	}
	if _, err := gf.Claim(ctx, "order-1 "); err != nil { // another key, one byte apart
		t.Fatal(err)
	}
	states, err := s.Lookup(ctx, "order-1", done, failing, other)
	if err != nil {
		t.Fatal(err)
	}
	if len(states) != 2 || states[0].Group != done || !states[0].Done || states[1].Group != failing ||
		states[1].Done || states[1].Attempts != 1 || states[0].Expires.Before(time.Now().Add(24*time.Hour)) {
		t.Fatalf("states %+v", states)
	}
	if none, err := s.Lookup(ctx, "order-1"); err != nil || none != nil {
		t.Fatalf("no groups: %v %v", none, err)
	}
}
