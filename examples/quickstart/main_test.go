package main

import (
	"context"
	"strings"
	"testing"

	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

func TestQuickstart(t *testing.T) {
	testenv.SkipUnderRace(t)
	var out strings.Builder
	if err := run(context.Background(), &out); err != nil {
		t.Fatalf("quickstart: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "lost:     0") {
		t.Fatalf("report:\n%s", out.String())
	}
}
