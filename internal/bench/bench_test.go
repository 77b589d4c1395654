package bench

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

// TestRunSmall runs every pair once at a tiny size: the command works and
// every ratio is measured (no target is asserted; speed belongs to the
// command's own output).
func TestRunSmall(t *testing.T) {
	testenv.SkipUnderRace(t)
	testenv.MySQL(t)
	results, err := Run(context.Background(), Config{Ops: 200, DrainRows: 500, Repeats: 1})
	if err != nil {
		t.Fatal(err)
	}
	want := 11
	if os.Getenv("RMQ_NAMESRV") != "" {
		want++ // the real broker vs rmqtest pair
	}
	if len(results) != want {
		t.Fatalf("%d results, want %d", len(results), want)
	}
	for _, r := range results {
		if r.BaseRate <= 0 || r.Rate <= 0 || r.Ratio <= 0 {
			t.Errorf("%s: not measured: %+v", r.Name, r)
		}
	}
	var table, js, svg bytes.Buffer
	if err := WriteSVG(&svg, results); err != nil || !strings.Contains(svg.String(), "</svg>") {
		t.Fatalf("svg: %v", err)
	}
	if err := PrintTable(&table, results); err != nil {
		t.Fatal(err)
	}
	if err := WriteJSON(&js, results); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table.String(), "producer send, 16 goroutine(s)") || !strings.Contains(js.String(), `"median_ratio"`) {
		t.Fatalf("table:\n%s\njson:\n%s", table.String(), js.String())
	}
}
