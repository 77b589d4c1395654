package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/deadletter"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

// terminalControl returns the first character of out a terminal acts on
// rather than shows (outside allowed), or "".
func terminalControl(out, allowed string) string {
	for i, r := range out {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(out[i:]); size == 1 {
				return out[i : i+1]
			}
		}
		if (unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r)) && !strings.ContainsRune(allowed, r) {
			return string(r)
		}
	}
	return ""
}

// TestDeadOutputIsNotATerminalInjection: a dead letter's keys, tag,
// sharding key, properties and last error are written by whoever
// produced the message or by its handler's error text, and `dead show` and
// `dead list` printed them raw. Any producer could make the operator's
// terminal run escape sequences (OSC 52 writes the clipboard, CSI hides or
// rewrites text), and a newline in a key forged a line: the letter showed
// "status: discarded" while it was parked, ready to replay. The text is
// printed escaped (\x1b, \r, \u009b); the last error keeps its newlines
// and tabs (a panic's stack), and nothing else may move the cursor. The
// list's error column, cut at 60 bytes, was cut inside a character too,
// printing a stray byte of invalid UTF-8.
func TestDeadOutputIsNotATerminalInjection(t *testing.T) {
	t.Parallel()
	db := testenv.MySQL(t)
	dsn := testenv.MySQLDSN(t, db)
	dead, err := deadletter.NewTable(db)
	if err != nil {
		t.Fatal(err)
	}
	dl := &consumer.DeadLetter{Group: "coupons", Topic: "orders", MsgID: "m-1",
		Keys:        []string{"order-1\x1b]0;owned\x07", "\x1b[2J\x1b[H", "x\nstatus:       discarded"},
		Tag:         "\x1b[8mhidden",
		ShardingKey: "s\rstatus:       replayed",
		Properties:  map[string]string{"p\x1b[1m": "v\u009b31m", "rtl": "\u202egnp.exe"},
		Body:        []byte("b"), Attempts: 4, Cause: consumer.CauseRetries,
		LastError: "boom\x1b[31m\x7f\r\n\tat main.go:1\n\x1b]52;c;Y3VybCBldmlsIHwgc2g=\x07 \xff",
	}
	// Its first line is cut for the list past 60 bytes, inside an é.
	cut := &consumer.DeadLetter{Group: "coupons", Topic: "orders", MsgID: "m-2", Keys: []string{"order-2"},
		Body: []byte("b"), Attempts: 4, Cause: consumer.CauseRetries, LastError: "x" + strings.Repeat("é", 40)}
	for _, d := range []*consumer.DeadLetter{dl, cut} {
		if _, err := dead.Park(context.Background(), d); err != nil {
			t.Fatal(err)
		}
	}

	show := mustRun(t, "last error:", "dead", "-dsn", dsn, "show", "1")
	head, lastErr, _ := strings.Cut(show, "last error:\n")
	if c := terminalControl(head, "\n"); c != "" {
		t.Errorf("dead show printed %q raw:\n%s", c, show)
	}
	if c := terminalControl(lastErr, "\n\t"); c != "" {
		t.Errorf("dead show printed %q raw in the last error:\n%s", c, lastErr)
	}
	labels := []string{"id:", "group:", "topic:", "msg id:", "keys:", "tag:", "sharding key:", "properties:", "cause:",
		"status:", "reason:", "attempts:", "parked at:", "updated at:", "body:"}
	lines := strings.Split(strings.TrimSuffix(head, "\n"), "\n")
	if len(lines) != len(labels) {
		t.Errorf("dead show printed %d lines before the last error, want %d (one per field):\n%s", len(lines), len(labels), head)
	}
	for i, l := range lines {
		if i < len(labels) && !strings.HasPrefix(l, labels[i]) {
			t.Errorf("dead show line %d is %q, want the %q field", i+1, l, labels[i])
		}
	}
	if !strings.Contains(lastErr, "\tat main.go:1\n") {
		t.Errorf("dead show lost the last error's lines:\n%s", lastErr)
	}

	list := mustRun(t, "coupons", "dead", "-dsn", dsn, "-status", "all", "list")
	if c := terminalControl(list, "\n"); c != "" {
		t.Errorf("dead list printed %q raw:\n%s", c, list)
	}
	if n := strings.Count(list, "\n"); n != 3 {
		t.Errorf("dead list printed %d lines for two dead letters, want a header and two rows:\n%s", n, list)
	}
}

// TestDeadListAndDiscardStayInTheNamespace: -namespace is "the RocketMQ
// namespace of the topics and groups"; lag lists only its groups, and
// dead replay refuses a dead letter of another namespace (exit 2). But
// dead list without -group listed every namespace's dead letters (keys,
// errors; show prints their bodies), and dead discard and dead received
// changed another namespace's dead letter without a word: an operator of
// tenant a, with RMQ_NAMESPACE=a, discarding "the" id 2 he saw in a list
// closed tenant b's parked payment for good.
func TestDeadListAndDiscardStayInTheNamespace(t *testing.T) {
	t.Parallel()
	db := testenv.MySQL(t)
	dsn := testenv.MySQLDSN(t, db)
	dead, err := deadletter.NewTable(db)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]int64{}
	for _, g := range []string{"a%payments", "b%payments", "payments"} {
		dl := &consumer.DeadLetter{Group: g, Topic: "pay", MsgID: "m-" + g, Keys: []string{"key-" + g},
			Body: []byte("b"), Attempts: 4, LastError: "boom", Cause: consumer.CauseRetries}
		if _, err := dead.Park(context.Background(), dl); err != nil {
			t.Fatal(err)
		}
		ids[g] = dl.ID
	}
	list := mustRun(t, "a%payments", "dead", "-dsn", dsn, "-namespace", "a", "list")
	for _, other := range []string{"b%payments", "key-payments"} {
		if strings.Contains(list, other) {
			t.Errorf("dead list -namespace a listed %s, a dead letter of another namespace:\n%s", other, list)
		}
	}
	for _, action := range []string{"discard", "received"} {
		id := fmt.Sprint(ids["b%payments"])
		out, err := runCmd(t, "dead", "-dsn", dsn, "-namespace", "a", "-reason", "not ours", action, id)
		if !errors.Is(err, errUsage) {
			t.Errorf("dead %s %s -namespace a of group b%%payments: %v, %q; want a usage error naming its namespace b", action, id, err, out)
		}
	}
	if e, err := dead.Get(context.Background(), ids["b%payments"]); err != nil || e.Status != deadletter.Parked {
		t.Fatalf("b's dead letter after tenant a's commands: %v %v; want still parked", e.Status, err)
	}
}

// TestDeadTimesSayTheyAreUTC: dead list and dead show print the times the
// table holds, UTC wall clocks, whatever the DSN's loc and time_zone or
// the operator's TZ; they printed them bare, so an operator in Tokyo read
// a message parked a minute ago as parked nine hours ago (and one in New
// York, as parked five hours in the future). trace labels its times
// "(UTC)"; so do these.
func TestDeadTimesSayTheyAreUTC(t *testing.T) {
	t.Parallel()
	db := testenv.MySQL(t)
	dsn := testenv.MySQLDSN(t, db) + "&loc=Local&time_zone=%27%2B09%3A00%27"
	dead, err := deadletter.NewTable(db)
	if err != nil {
		t.Fatal(err)
	}
	dl := &consumer.DeadLetter{Group: "g", Topic: "T", MsgID: "m", Keys: []string{"k"}, Body: []byte("b"),
		Attempts: 4, LastError: "boom", Cause: consumer.CauseRetries}
	if _, err := dead.Park(context.Background(), dl); err != nil {
		t.Fatal(err)
	}
	e, err := dead.Get(context.Background(), dl.ID)
	if err != nil {
		t.Fatal(err)
	}
	stamp := e.CreatedAt.UTC().Format("2006-01-02 15:04:05")
	list := mustRun(t, stamp, "dead", "-dsn", dsn, "list")
	if !strings.Contains(list, "PARKED AT (UTC)") {
		t.Errorf("dead list does not say its times are UTC:\n%s", list)
	}
	show := mustRun(t, stamp, "dead", "-dsn", dsn, "show", fmt.Sprint(dl.ID))
	if !strings.Contains(show, "parked at:    "+stamp+" UTC\n") || !strings.Contains(show, " UTC\nbody:") {
		t.Errorf("dead show does not say its times are UTC:\n%s", show)
	}
}

// TestNoDatabaseIsAUsageError: a command that needs a database, given no
// -dsn and no MYSQL_DSN, attempted nothing: exit 2, as the README says
// of a missing flag value (it was 1, "the work failed").
func TestNoDatabaseIsAUsageError(t *testing.T) {
	t.Setenv("MYSQL_DSN", "")
	for _, args := range [][]string{{"dead", "list"}, {"migrate", "status"},
		{"reconcile", "-once", "-namesrv", "127.0.0.1:1"}, {"trace", "order-1"}} {
		if out, err := runCmd(t, args...); !errors.Is(err, errUsage) || !strings.Contains(out+err.Error(), "no database") {
			t.Errorf("%v without a database: %v, %q; want a usage error saying there is no database", args, err, out)
		}
	}
}
