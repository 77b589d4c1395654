package main

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

func TestTxMessage(t *testing.T) {
	testenv.MySQL(t)
	var out strings.Builder
	if err := run(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	want := "pay o-1: <nil>\n" +
		"pay o-2: invalid amount (the half message is rolled back)\n" +
		"pay o-3: <nil> (committed locally; the commit never reached the broker)\n" +
		"o-3 visible before the check-back: false\n" +
		"after the check-back, answered from the table: o-1 true, o-2 false, o-3 true\n"
	if os.Getenv("RMQ_NAMESRV") != "" {
		want = "pay o-1: <nil>\n" +
			"pay o-2: invalid amount (the half message is rolled back)\n" +
			"skipped: losing the commit on its way to the broker needs rmqtest's fault injection (RMQ_NAMESRV names a real broker)\n"
	}
	if out.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", out.String(), want)
	}
}
