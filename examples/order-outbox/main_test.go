package main

import (
	"context"
	"strings"
	"testing"

	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

func TestOrderOutbox(t *testing.T) {
	testenv.MySQL(t) // requires MySQL like the example does
	var out strings.Builder
	if err := run(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	want := "o-1 committed and sent right after the commit: 1 row sent\n" +
		"o-2 committed, then the process died before sending\n" +
		"reconcile sent 1, pending now 0\n" +
		"placing o-1 again fails on the order's primary key; the outbox holds one o-1 row\n"
	if out.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", out.String(), want)
	}
}
