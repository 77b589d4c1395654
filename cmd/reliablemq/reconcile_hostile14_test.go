package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/outbox"
)

// TestReconcileCronThatNeverFiresIsAUsageError: robfig/cron parses an
// expression that matches no date ("0 0 30 2 *", the 30th of February)
// and its Next returns the zero time; the command's timer for it fires at
// once, so -cron ran the job back to back without end.
func TestReconcileCronThatNeverFiresIsAUsageError(t *testing.T) {
	t.Parallel()
	for _, expr := range []string{"0 0 30 2 *", "0 0 31 4,6,9,11 *", "CRON_TZ=Europe/Berlin 0 0 30 2 *"} {
		out, err := runCmd(t, "reconcile", "-cron", expr, "-namesrv", "127.0.0.1:1", "-dsn", "root@tcp(127.0.0.1:1)/x")
		if !errors.Is(err, errUsage) || !strings.HasPrefix(err.Error(), "reconcile: -cron") || !strings.Contains(err.Error(), "never") ||
			out != "" {
			t.Errorf("-cron %q: %v\n%s\nwant a usage error saying it never runs, before any connection", expr, err, out)
		}
	}
	// A date that exists only in leap years is fine.
	if _, err := runCmd(t, "reconcile", "-cron", "0 0 29 2 *", "-namesrv", "127.0.0.1:1", "-dsn", "root@tcp(127.0.0.1:1)/x"); errors.Is(err, errUsage) {
		t.Errorf("-cron for the 29th of February: %v", err)
	}
}

// TestReconcileOncePartialFailureExitsOneAndSaysWhat: of three rows, two
// are sent and one can never be (a topic the producer refuses, as a row
// written by hand or by another version): -once exits 1 (failed work),
// stdout has the run's summary and one ALERT line for the dead row, and
// the error is one line counting it. The rows are where the output says.
func TestReconcileOncePartialFailureExitsOneAndSaysWhat(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t)
	topic := testenv.Name(t, "T")
	env.CreateTopic(t, topic, 1)
	db, dsn, relay := outboxDB(t)
	var badID int64
	for _, k := range []string{"p-1", "p-2", "p-3"} {
		id, _, err := relay.Enqueue(context.Background(), db, outbox.Message{Topic: topic, Key: k, Body: []byte(k)})
		if err != nil {
			t.Fatal(err)
		}
		badID = id
	}
	if _, err := db.Exec("UPDATE mq_log SET topic = 'no such topic!' WHERE id = ?", badID); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"reconcile", "-once", "-dsn", dsn, "-namesrv", env.Namesrv}, &out, &errOut)
	if err == nil || errors.Is(err, errUsage) || strings.Contains(err.Error(), "\n") ||
		!strings.Contains(err.Error(), "reconcile: 1 sends failed (permanent 1), 1 rows given up") {
		t.Fatalf("reconcile -once: %v, want one line of failed work counting the dead row\nstdout:\n%s\nstderr:\n%s", err, &out, &errOut)
	}
	alert := fmt.Sprintf("ALERT dead row %d topic no such topic! key p-3 after 1 attempts: ", badID)
	if !strings.Contains(out.String(), "sent 2, failed 0, dead 1") || strings.Count(out.String(), "ALERT") != 1 ||
		!strings.Contains(out.String(), alert) || errOut.Len() != 0 {
		t.Fatalf("stdout:\n%s\nstderr:\n%s\nwant the summary and one %q line", &out, &errOut, alert)
	}
	var statuses []int
	if err := db.Select(&statuses, "SELECT status FROM mq_log ORDER BY id"); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(statuses) != fmt.Sprint([]int{int(outbox.Sent), int(outbox.Sent), int(outbox.Dead)}) {
		t.Fatalf("statuses %v, want Sent, Sent, Dead", statuses)
	}
	// A second run has nothing to do and succeeds: the dead row is the
	// operator's, counted in the summary, not a failure of every run.
	out.Reset()
	if err := run(context.Background(), []string{"reconcile", "-once", "-dsn", dsn, "-namesrv", env.Namesrv}, &out, &errOut); err != nil ||
		!strings.Contains(out.String(), "dead rows 1") {
		t.Fatalf("second run: %v\n%s", err, &out)
	}
}

// TestReconcileAlertSaysWhenASentRowIsGivenUp: a sent row no consumer
// confirmed, out of resends, stays Sent; its ALERT line says it was given
// up unconfirmed, not that it is dead.
func TestReconcileAlertSaysWhenASentRowIsGivenUp(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t)
	topic := testenv.Name(t, "T")
	env.CreateTopic(t, topic, 1)
	db, dsn, relay := outboxDB(t)
	id, _, err := relay.Enqueue(context.Background(), db, outbox.Message{Topic: topic, Key: "u-1", Body: []byte("u")})
	if err != nil {
		t.Fatal(err)
	}
	base := []string{"reconcile", "-once", "-dsn", dsn, "-namesrv", env.Namesrv, "-max-attempts", "1"}
	var out, errOut bytes.Buffer
	if err := run(context.Background(), base, &out, &errOut); err != nil {
		t.Fatalf("first run: %v\n%s%s", err, &out, &errOut)
	}
	// Sent long ago, never confirmed: due for a resend it has none left of.
	if _, err := db.Exec("UPDATE mq_log SET sent_at = sent_at - INTERVAL 1 HOUR, next_attempt_at = next_attempt_at - INTERVAL 1 HOUR WHERE id = ?", id); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	err = run(context.Background(), append(base, "-confirm-timeout", "1s"), &out, &errOut)
	if err == nil || strings.Contains(err.Error(), "sends failed") || !strings.Contains(err.Error(), "reconcile: 1 rows given up") {
		t.Fatalf("reconcile -once: %v, want failed work naming one row given up and no failed send", err)
	}
	want := fmt.Sprintf("ALERT row given up (sent, never confirmed) %d topic %s key u-1 after 1 attempts: ", id, topic)
	if strings.Count(out.String(), "ALERT") != 1 || !strings.Contains(out.String(), want) {
		t.Fatalf("stdout:\n%s\nstderr:\n%s\nwant one %q line", &out, &errOut, want)
	}
	var status int
	if err := db.Get(&status, "SELECT status FROM mq_log WHERE id = ?", id); err != nil || status != int(outbox.Sent) {
		t.Fatalf("status %d, %v; want Sent", status, err)
	}
}

// TestDeadListLimitOutOfRangeIsAUsageError: -limit 0 listed the table's
// default of 100 rows; a limit below one or a negative -after is refused
// before any connection.
func TestDeadListLimitOutOfRangeIsAUsageError(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"-limit", "0"}, {"-limit", "-5"}, {"-after", "-1"}} {
		out, err := runCmd(t, append([]string{"dead", "-dsn", "root@tcp(127.0.0.1:1)/x"}, append(args, "list")...)...)
		if !errors.Is(err, errUsage) || out != "" {
			t.Errorf("dead %v list: %v\n%s\nwant a usage error", args, err, out)
		}
	}
}
