package main

import (
	"context"
	"strings"
	"testing"

	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

func TestCouponConsumer(t *testing.T) {
	testenv.SkipUnderRace(t)
	testenv.MySQL(t)
	var out strings.Builder
	if err := run(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	want := `"order-42 paid" delivered 3 times` + "\n" +
		"MySQL guard: 1 coupon row, 2 duplicates acknowledged\n" +
		"Redis guard: 1 push, 2 duplicates acknowledged\n"
	if out.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", out.String(), want)
	}
}
