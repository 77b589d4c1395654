// Command testsummary reads `go test -json` on stdin and prints what CI
// needs to see: go test's own package lines, the output of every failed
// test, the skipped tests grouped by reason, and one closing line
//
//	NAME: N passed, N failed, N skipped
//
// preceded by a line counting packages ok, failed and without tests. It
// exits 1 if any test or package failed, or if the input held no test.
//
//	go test -json ./... | go run ./internal/testsummary NAME
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

type summary struct {
	passed, failed, skipped     int
	pkgOK, pkgFailed, pkgNoTest int
	output                      map[string][]string // by package + test, until the test ends
	reasons                     map[string]int
	failures                    []string
}

func main() {
	name := "tests"
	if len(os.Args) > 1 {
		name = os.Args[1]
	}
	s, err := read(os.Stdin, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testsummary:", err)
		os.Exit(2)
	}
	if !s.print(os.Stdout, name) {
		os.Exit(1)
	}
}

func read(r io.Reader, echo io.Writer) (*summary, error) {
	s := &summary{output: map[string][]string{}, reasons: map[string]int{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil || e.Action == "" {
			fmt.Fprintln(echo, sc.Text()) // build errors and the like come as plain text
			continue
		}
		id := e.Package + " " + e.Test
		switch {
		case e.Action == "output" && e.Test != "":
			s.output[id] = append(s.output[id], e.Output)
		case e.Action == "output" && isPackageLine(e.Output):
			fmt.Fprint(echo, e.Output)
		case e.Test == "":
			s.endPackage(e)
		default:
			s.endTest(e, id)
		}
	}
	return s, sc.Err()
}

// isPackageLine reports whether a package-level output line is go test's
// own verdict or a panic, which CI shows as they come.
func isPackageLine(l string) bool {
	return strings.HasPrefix(l, "ok ") || strings.HasPrefix(l, "FAIL") || strings.HasPrefix(l, "?") ||
		strings.HasPrefix(l, "panic:") || strings.Contains(l, "[build failed]")
}

func (s *summary) endPackage(e event) {
	switch e.Action {
	case "pass":
		s.pkgOK++
	case "fail":
		s.pkgFailed++
	case "skip":
		s.pkgNoTest++
	}
}

func (s *summary) endTest(e event, id string) {
	out := s.output[id]
	switch e.Action {
	case "pass":
		s.passed++
	case "fail":
		s.failed++
		s.failures = append(s.failures, "--- FAIL "+e.Package+" "+e.Test+"\n"+strings.Join(out, ""))
	case "skip":
		s.skipped++
		s.reasons[skipReason(out)]++
	default:
		return
	}
	delete(s.output, id)
}

// skipReason is the t.Skip message: the last "file.go:N: " line.
func skipReason(out []string) string {
	for i := len(out) - 1; i >= 0; i-- {
		l := strings.TrimSpace(out[i])
		if j := strings.Index(l, ".go:"); j > 0 && !strings.HasPrefix(l, "---") && !strings.HasPrefix(l, "===") {
			if k := strings.Index(l[j+4:], ": "); k >= 0 {
				return l[j+4+k+2:]
			}
		}
	}
	return "(no reason given)"
}

func (s *summary) print(w io.Writer, name string) bool {
	for _, f := range s.failures {
		fmt.Fprint(w, f)
	}
	reasons := make([]string, 0, len(s.reasons))
	for r := range s.reasons {
		reasons = append(reasons, r)
	}
	sort.Slice(reasons, func(i, j int) bool { return s.reasons[reasons[i]] > s.reasons[reasons[j]] })
	if len(reasons) > 0 {
		fmt.Fprintf(w, "%s: skipped tests by reason:\n", name)
		for _, r := range reasons {
			fmt.Fprintf(w, "  %3d  %s\n", s.reasons[r], r)
		}
	}
	fmt.Fprintf(w, "%s: %d packages ok, %d failed, %d without tests\n", name, s.pkgOK, s.pkgFailed, s.pkgNoTest)
	fmt.Fprintf(w, "%s: %d passed, %d failed, %d skipped\n", name, s.passed, s.failed, s.skipped)
	return s.failed == 0 && s.pkgFailed == 0 && s.passed > 0
}
