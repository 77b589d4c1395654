package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

func TestOrderTimeout(t *testing.T) {
	testenv.SkipUnderRace(t)
	testenv.MySQL(t)
	env := testenv.NewRocketMQ(t)
	env.RequireEmbedded(t) // 30 minutes pass on rmqtest's clock
	var out strings.Builder
	if err := run(context.Background(), &out, 30*time.Minute); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"close checks scheduled in 30m0s (delay level 16)", "o-1 paid", "o-1 paid, o-2 closed"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("output lacks %q:\n%s", want, out.String())
		}
	}
}
