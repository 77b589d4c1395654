package main

import (
	"bytes"
	"compress/zlib"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/deadletter"
	"github.com/seed157d4c4d/reliablemq/internal/remoting"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

// TestDeadReplaysABodyTheBrokerTookCompressed: the clients compress a
// body over 4 KiB, and the broker's 4 MiB limit is on what it stores, so
// a 5 MiB settlement file that compresses well is an ordinary message; the
// consumer hands its handler the body inflated, and parks it so. dead
// replay refused it ("body 5242880 bytes > 4194304": its producer held the
// body to the broker's limit before compressing it), and nothing on the
// command line could change that: the message could be discarded, never
// replayed. The replay's producer now takes the dead letter's body, which
// it sends compressed as the original was; the broker still judges it.
func TestDeadReplaysABodyTheBrokerTookCompressed(t *testing.T) {
	t.Parallel()
	testenv.SkipUnderRace(t)
	env := testenv.NewRocketMQ(t)
	topic := testenv.Name(t, "T")
	env.CreateTopic(t, topic, 1)
	db := testenv.MySQL(t)
	dsn := testenv.MySQLDSN(t, db)
	dead, err := deadletter.NewTable(db)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(strings.Repeat("settlement,2024-01-01,EUR,100.00\n", 5<<20/33+1))
	dl := &consumer.DeadLetter{Group: "settlements", Topic: topic, MsgID: "m-1", Keys: []string{"batch-1"},
		Body: body, Attempts: 4, LastError: "boom", Cause: consumer.CauseRetries}
	if _, err := dead.Park(context.Background(), dl); err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprint(dl.ID)
	mustRun(t, "replayed "+id, "dead", "-dsn", dsn, "-namesrv", env.Namesrv, "-reason", "fixed", "replay", id)
	if b := env.Embedded; b != nil {
		msgs := b.Messages(topic)
		if len(msgs) != 1 || msgs[0].SysFlag&remoting.SysFlagCompressed == 0 {
			t.Fatalf("%d messages on the broker after replay, want 1, compressed", len(msgs))
		}
		r, err := zlib.NewReader(bytes.NewReader(msgs[0].Body))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := io.ReadAll(r); err != nil || !bytes.Equal(got, body) {
			t.Fatalf("replayed body of %d bytes (%v), want the dead letter's %d", len(got), err, len(body))
		}
	}
}

// TestDeadShowStaysInTheNamespace: dead list -namespace a lists only
// tenant a's dead letters, and discard, received and replay refuse
// another's; but dead show printed any id in full, body and properties
// included, so tenant a's operator read tenant b's parked payment by
// counting ids. It refuses a dead letter of another namespace as the
// others do (exit 2); without -namespace it shows any, as list lists any.
func TestDeadShowStaysInTheNamespace(t *testing.T) {
	t.Parallel()
	db := testenv.MySQL(t)
	dsn := testenv.MySQLDSN(t, db)
	dead, err := deadletter.NewTable(db)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{}
	for _, g := range []string{"a%payments", "b%payments"} {
		dl := &consumer.DeadLetter{Group: g, Topic: "pay", MsgID: "m", Keys: []string{"key"},
			Body: []byte("card of " + g), Attempts: 4, LastError: "boom", Cause: consumer.CauseRetries}
		if _, err := dead.Park(context.Background(), dl); err != nil {
			t.Fatal(err)
		}
		ids[g] = fmt.Sprint(dl.ID)
	}
	mustRun(t, "card of a%payments", "dead", "-dsn", dsn, "-namespace", "a", "show", ids["a%payments"])
	out, err := runCmd(t, "dead", "-dsn", dsn, "-namespace", "a", "show", ids["b%payments"])
	if !errors.Is(err, errUsage) || strings.Contains(out, "card of") {
		t.Errorf("dead show -namespace a of group b%%payments: %v, %q; want a usage error naming its namespace b", err, out)
	}
	mustRun(t, "card of b%payments", "dead", "-dsn", dsn, "-namespace", "", "show", ids["b%payments"])
}
