package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/outbox"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// TestReconcileOncePrintsOneLine: the help and docs/operations.md say a
// run that did something prints one summary line on stdout. A run that
// sent a row also printed "... 1 sent so far" before it: the progress line
// meant for long runs came at a run's first batch.
func TestReconcileOncePrintsOneLine(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t)
	topic := testenv.Name(t, "T")
	env.CreateTopic(t, topic, 1)
	db := testenv.MySQL(t)
	dsn := testenv.MySQLDSN(t, db)
	relay, err := outbox.NewRelay(db, &producer.Producer{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := relay.Enqueue(context.Background(), db, outbox.Message{Topic: topic, Key: "o-1", Body: []byte("o-1")}); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"reconcile", "-dsn", dsn, "-namesrv", env.Namesrv, "-once"}, &out, &errOut); err != nil {
		t.Fatalf("reconcile -once: %v\n%s", err, errOut.String())
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], "sent 1, failed 0") {
		t.Fatalf("stdout:\n%s\nwant one summary line, sent 1", out.String())
	}
}
