package main

import (
	"io"
	"strings"
	"testing"
)

func TestSummaryCountsAndReasons(t *testing.T) {
	in := `{"Action":"run","Package":"p","Test":"TestA"}
{"Action":"pass","Package":"p","Test":"TestA"}
{"Action":"output","Package":"p","Test":"TestB","Output":"    b_test.go:12: needs rmqtest (fault injection)\n"}
{"Action":"output","Package":"p","Test":"TestB","Output":"--- SKIP: TestB (0.00s)\n"}
{"Action":"skip","Package":"p","Test":"TestB"}
{"Action":"output","Package":"p","Test":"TestC","Output":"    c_test.go:3: boom\n"}
{"Action":"fail","Package":"p","Test":"TestC"}
{"Action":"output","Package":"p","Output":"FAIL\tp\t0.1s\n"}
{"Action":"fail","Package":"p"}
{"Action":"skip","Package":"q"}
# some/pkg [build failed]
`
	s, err := read(strings.NewReader(in), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if s.print(&out, "stage") {
		t.Error("a failed test passed the stage")
	}
	for _, want := range []string{"stage: 1 passed, 1 failed, 1 skipped\n", "1  needs rmqtest (fault injection)",
		"--- FAIL p TestC", "boom", "stage: 0 packages ok, 1 failed, 1 without tests"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
	empty, _ := read(strings.NewReader(""), io.Discard)
	if empty.print(io.Discard, "stage") {
		t.Error("a stage that ran no test passed")
	}
}
