package main

import (
	"context"
	"strings"
	"testing"

	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

func TestQuickstart(t *testing.T) {
	testenv.SkipUnderRace(t)
	testenv.MySQL(t) // skips, or fails when MySQL is required, without MYSQL_DSN
	var out strings.Builder
	if err := run(context.Background(), &out); err != nil {
		t.Fatalf("quickstart: %v\n%s", err, out.String())
	}
	for _, want := range []string{"lost                                  0", "double-applied                        0",
		"parked for a human                    1"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("report lacks %q:\n%s", want, out.String())
		}
	}
	t.Log("\n" + out.String())
}
