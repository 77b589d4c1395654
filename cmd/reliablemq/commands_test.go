package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/deadletter"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/outbox"
	"github.com/seed157d4c4d/reliablemq/producer"
)

func runCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, &out, &errOut)
	return out.String() + errOut.String(), err
}

func mustRun(t *testing.T, want string, args ...string) string {
	t.Helper()
	out, err := runCmd(t, args...)
	if err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
	if !strings.Contains(out, want) {
		t.Fatalf("%v printed:\n%s\nwant it to contain %q", args, out, want)
	}
	return out
}

func TestMigrateReconcileAndDead(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t)
	topic := testenv.Name(t, "T")
	env.CreateTopic(t, topic, 1)
	db := testenv.MySQL(t)
	dsn := testenv.MySQLDSN(t, db)
	ns := env.Namesrv

	mustRun(t, "00007_text_and_tags.sql", "migrate", "-dsn", dsn, "status")
	mustRun(t, "rolled back 00011_outbox_fixed_width_lease.sql", "migrate", "-dsn", dsn, "down")
	mustRun(t, "pending", "migrate", "-dsn", dsn, "status")
	mustRun(t, "applied 00011_outbox_fixed_width_lease.sql", "migrate", "-dsn", dsn, "up")
	mustRun(t, "already up to date", "migrate", "-dsn", dsn, "up")

	// Two outbox rows left pending, as after a crash between commit and send.
	relay, err := outbox.NewRelay(db, &producer.Producer{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"o-1", "o-2"} {
		if _, _, err := relay.Enqueue(context.Background(), db, outbox.Message{Topic: topic, Key: k, Body: []byte(k)}); err != nil {
			t.Fatal(err)
		}
	}
	mustRun(t, "sent 2, failed 0, dead 0", "reconcile", "-dsn", dsn, "-namesrv", ns, "-once")
	mustRun(t, "sent 0, failed 0, dead 0, blocked 0, resent 0, purged 0 | pending 0", "reconcile", "-dsn", dsn, "-namesrv", ns, "-once")
	if b := env.Embedded; b != nil && len(b.Messages(topic)) != 2 {
		t.Fatalf("%d messages on the broker, want 2", len(b.Messages(topic)))
	}

	dead, _ := deadletter.NewTable(db)
	for _, id := range []string{"m-1", "m-2"} {
		if _, err := dead.Park(context.Background(), &consumer.DeadLetter{Group: "coupons", Topic: topic, MsgID: id,
			Keys: []string{"order-" + id}, Body: []byte("poison"), Attempts: 4, LastError: "boom\nstack", Cause: consumer.CauseRetries}); err != nil {
			t.Fatal(err)
		}
	}
	mustRun(t, "order-m-2", "dead", "list", "-dsn", dsn) // flags after the action, as the docs write them
	mustRun(t, "last error:\nboom\nstack", "dead", "-dsn", dsn, "show", "1")
	mustRun(t, "discarded 1", "dead", "discard", "1", "-dsn", dsn, "-reason", "test order")
	mustRun(t, "replayed 2", "dead", "-dsn", dsn, "-namesrv", ns, "-reason", "fixed", "replay", "2")
	mustRun(t, "(none)", "dead", "-dsn", dsn, "list")
	// Replaying until the group's consumer receives it (none runs here),
	// or an operator marks it received.
	mustRun(t, "replaying", "dead", "-dsn", dsn, "-status", "replaying", "list")
	if out, err := runCmd(t, "dead", "-dsn", dsn, "received", "2"); !errors.Is(err, errUsage) {
		t.Fatalf("received without -reason: %v\n%s", err, out)
	}
	mustRun(t, "marked 2 received", "dead", "-dsn", dsn, "-reason", "ran on an older consumer", "received", "2")
	mustRun(t, "replayed", "dead", "-dsn", dsn, "-status", "replayed", "list")
	if out, err := runCmd(t, "dead", "-dsn", dsn, "-reason", "x", "received", "2"); !errors.Is(err, deadletter.ErrNotReplaying) {
		t.Fatalf("received twice: %v\n%s", err, out)
	}
	if b := env.Embedded; b != nil && len(b.Messages(topic)) != 3 {
		t.Fatalf("%d messages on the broker after replay, want 3", len(b.Messages(topic)))
	}
	if out, err := runCmd(t, "dead", "-dsn", dsn, "-reason", "x", "discard", "1"); !errors.Is(err, deadletter.ErrNotParked) {
		t.Fatalf("discard twice: %v\n%s", err, out)
	}
}

func TestBadInputIsAClearErrorNotAPanic(t *testing.T) {
	t.Parallel()
	cases := [][]string{
		{"nope"},
		{"migrate"},
		{"migrate", "sideways"},
		{"migrate", "-dsn", "not a dsn", "up"},
		{"migrate", "-dsn", "root@tcp(127.0.0.1:1)/x", "up"},
		{"reconcile"},
		{"reconcile", "-once", "-every", "1s"},
		{"reconcile", "-every", "-5s"},
		{"reconcile", "-once", "extra"},
		{"reconcile", "-cron", "every tuesday", "-namesrv", "127.0.0.1:1", "-dsn", "root@tcp(127.0.0.1:1)/x"},
		{"reconcile", "-once"},
		{"dead"},
		{"dead", "show", "abc"},
		{"dead", "discard", "1"},
		{"dead", "-dsn", "root@tcp(127.0.0.1:1)/x", "list"},
		{"bench", "-quick", "extra"},
		{"bench", "-quick", "-sweep", "-ops", "0"}, // an explicit size wins over -quick's
	}
	for _, args := range cases {
		out, err := runCmd(t, args...)
		switch {
		case err == nil:
			t.Errorf("%v: no error\n%s", args, out)
		case errors.Is(err, errUsage) && out != "":
			t.Errorf("%v: a usage error printed (main prints the error, one line):\n%s", args, out)
		case !strings.HasPrefix(err.Error(), args[0]+":") || strings.Contains(err.Error(), "\n"):
			t.Errorf("%v: error %q, want one line naming the command", args, err)
		}
	}
}

// TestNoPasswordInAnyOutput: a DSN's password never reaches usage text or
// errors, whether it came from MYSQL_DSN or -dsn.
func TestNoPasswordInAnyOutput(t *testing.T) {
	const secret = "S3cretPw"
	t.Setenv("MYSQL_DSN", "app:"+secret+"@tcp(127.0.0.1:1)/orders")
	for _, args := range [][]string{
		{"reconcile", "-h"},
		{"dead", "-h"},
		{"migrate", "-h"},
		{"migrate", "up"},
		{"dead", "list"},
		{"reconcile", "-once", "-namesrv", "127.0.0.1:1"},
		{"migrate", "-dsn", "app:" + secret + "@tcp(127.0.0.1:1)/orders", "status"},
		{"reconcile", "-bogus"},
	} {
		out, err := runCmd(t, args...)
		text := out
		if err != nil {
			text += err.Error()
		}
		if strings.Contains(text, secret) {
			t.Errorf("%v printed the password:\n%s", args, text)
		}
	}
}

// TestReconcileOnceNameServerUnreachable: with no name server answering,
// -once fails naming it, and claims no row (a send would fail with "route
// info not found" and cost the row an attempt).
func TestReconcileOnceNameServerUnreachable(t *testing.T) {
	t.Parallel()
	db, dsn, relay := outboxDB(t)
	if _, _, err := relay.Enqueue(context.Background(), db, outbox.Message{Topic: "t", Key: "k", Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	out, err := runCmd(t, "reconcile", "-dsn", dsn, "-namesrv", "127.0.0.1:1", "-once")
	if err == nil || errors.Is(err, errUsage) || !strings.HasPrefix(err.Error(), "reconcile: name server unreachable: dial tcp 127.0.0.1:1") ||
		strings.Contains(err.Error(), "\n") {
		t.Fatalf("reconcile -once with an unreachable name server: %v\n%s", err, out)
	}
	var attempts int
	if err := db.Get(&attempts, "SELECT attempts FROM mq_log"); err != nil || attempts != 0 {
		t.Fatalf("the row has %d attempts (%v), want 0: nothing is claimed without a name server", attempts, err)
	}
}

// outboxDB returns a database of the test's own with the migrations
// applied, its DSN, and a relay on it for Enqueue (its sends go nowhere).
func outboxDB(t *testing.T) (*sqlx.DB, string, *outbox.Relay) {
	t.Helper()
	db := testenv.MySQL(t)
	relay, err := outbox.NewRelay(db, &producer.Producer{})
	if err != nil {
		t.Fatal(err)
	}
	return db, testenv.MySQLDSN(t, db), relay
}
