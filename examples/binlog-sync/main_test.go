package main

import (
	"context"
	"strings"
	"testing"

	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

func TestBinlogSync(t *testing.T) {
	testenv.SkipUnderRace(t)
	testenv.MySQL(t)
	var out strings.Builder
	if err := run(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	want := "20 changes to 5 rows applied in order; row-3's second update failed twice and was retried, not skipped\n" +
		"replica rows with a stale value: 0, parked: 0\n"
	if out.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", out.String(), want)
	}
}
