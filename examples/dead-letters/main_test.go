package main

import (
	"context"
	"strings"
	"testing"

	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

func TestDeadLetters(t *testing.T) {
	testenv.SkipUnderRace(t)
	testenv.MySQL(t)
	var out strings.Builder
	if err := run(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"parked (2 alerts):",
		`keys=[inv-1] cause=retries attempts=3 error="attempt 3: no tax rate for region XK"`,
		`keys=[inv-2] cause=permanent attempts=1 error="test invoice in production"`,
		"invoices issued: 1; still parked: 0",
	} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("output lacks %q:\n%s", want, out.String())
		}
	}
}
