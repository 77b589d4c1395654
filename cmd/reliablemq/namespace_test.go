package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/deadletter"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/outbox"
)

// TestNamespaceCommands: with -namespace, reconcile sends an outbox row to
// the namespaced topic, trace finds its copy there and its parked dead
// letter, lag lists only the namespace's groups, and dead list filters by
// the namespaced group. A bad namespace is a usage error.
func TestNamespaceCommands(t *testing.T) {
	t.Parallel()
	testenv.SkipUnderRace(t)
	bin := cliBinary(t)
	env := testenv.NewRocketMQ(t)
	db := testenv.MySQL(t)
	dsn := testenv.MySQLDSN(t, db)
	n := testenv.Name(t, "ns")
	ns := "ns" + n[len(n)-8:]
	topic, group := testenv.Name(t, "T"), testenv.Name(t, "G")
	env.CreateTopic(t, ns+"%"+topic, 1)
	env.CreateTopic(t, "%RETRY%"+ns+"%"+group, 1)
	ctx := context.Background()

	relay, err := outbox.NewRelay(db, noPublisher{})
	if err != nil {
		t.Fatal(err)
	}
	key := "order-" + testenv.Name(t, "k")
	if _, _, err := relay.Enqueue(ctx, db, outbox.Message{Topic: topic, Key: key, Body: []byte("paid")}); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runBinary(t, bin, "reconcile", "-once", "-dsn", dsn, "-namesrv", env.Namesrv, "-namespace", ns)
	if code != 0 {
		t.Fatalf("reconcile: exit %d, stderr %q\n%s", code, errOut, out)
	}

	store, err := idempotency.NewMySQLStore(db)
	if err != nil {
		t.Fatal(err)
	}
	guard, err := idempotency.NewGuard(group, store)
	if err != nil {
		t.Fatal(err)
	}
	dead, err := deadletter.NewTable(db)
	if err != nil {
		t.Fatal(err)
	}
	c, err := consumer.New(env.NameServers(), group, topic, func(context.Context, *consumer.Message) error {
		return consumer.Permanent(errors.New("coupon type unknown"))
	}, consumer.WithGuard(guard), consumer.WithParker(dead), consumer.WithNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	env.Eventually(t, "the row's message consumed in the namespace and parked", time.Minute, func() bool {
		parked, _ := dead.List(ctx, deadletter.Filter{Key: key})
		return len(parked) == 1
	})

	out, errOut, code = runBinary(t, bin, "trace", "-dsn", dsn, "-namesrv", env.Namesrv, "-namespace", ns, "-group", group, key)
	if code != 0 || errOut != "" {
		t.Fatalf("trace: exit %d, stderr %q\n%s", code, errOut, out)
	}
	broker := out[strings.Index(out, "broker:"):strings.Index(out, "consume log")]
	if !strings.Contains(broker, "\n  "+ns+"%"+topic+" ") {
		t.Errorf("trace did not find the copy in %s%%%s:\n%s", ns, topic, out)
	}
	if !strings.Contains(out, ns+"%"+group+"  "+topic+"  parked") {
		t.Errorf("trace did not list the dead letter under the namespaced group:\n%s", out)
	}

	// The group's offsets reach the broker with the client's next commit.
	var lagOut string
	env.Eventually(t, "lag -namespace to list the group", time.Minute, func() bool {
		out, errOut, code := runBinary(t, bin, "lag", "-json", "-namesrv", env.Namesrv, "-namespace", ns)
		if code != 0 || errOut != "" {
			t.Fatalf("lag: exit %d, stderr %q\n%s", code, errOut, out)
		}
		lagOut = out
		var lag struct {
			Queues []lagRow `json:"queues"`
		}
		if err := json.Unmarshal([]byte(out), &lag); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		found := false
		for _, r := range lag.Queues {
			if !strings.HasPrefix(r.Group, ns+"%") {
				t.Fatalf("lag -namespace %s listed group %s", ns, r.Group)
			}
			found = found || (r.Group == ns+"%"+group && r.Topic == ns+"%"+topic)
		}
		return found
	})
	if testing.Verbose() {
		t.Logf("reliablemq lag -namespace %s\n%s", ns, lagOut)
	}

	for _, c := range []struct {
		args []string
		want bool
	}{
		{[]string{"-namespace", ns}, true},
		{nil, false},
	} {
		args := append([]string{"dead", "list", "-dsn", dsn, "-group", group}, c.args...)
		out, errOut, code := runBinary(t, bin, args...)
		if code != 0 || strings.Contains(out, key) != c.want {
			t.Errorf("%v: exit %d, stderr %q, lists the key: %v, want %v\n%s", args, code, errOut, !c.want, c.want, out)
		}
	}

	for _, cmd := range [][]string{{"lag"}, {"trace", "k"}, {"reconcile", "-once"}, {"dead", "list"}} {
		args := append(append([]string{}, cmd...), "-namespace", "a%b", "-dsn", dsn, "-namesrv", env.Namesrv)
		if cmd[0] == "lag" {
			args = []string{"lag", "-namespace", "a%b", "-namesrv", env.Namesrv}
		}
		_, errOut, code := runBinary(t, bin, args...)
		if code != 2 || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "namespace") {
			t.Errorf("%v: exit %d, stderr %q; want 2 and one line naming the namespace", args, code, errOut)
		}
	}
}

// TestNamespaceIsAUsageErrorFirst: a bad -namespace or RMQ_NAMESPACE is
// exit 2 with one stderr line naming it, before any database or name
// server is needed (here neither is configured).
func TestNamespaceIsAUsageErrorFirst(t *testing.T) {
	t.Parallel()
	bin := cliBinary(t)
	for _, args := range [][]string{{"trace", "k"}, {"reconcile", "-once"}, {"dead", "list"}, {"dead", "replay", "1"}, {"lag"}} {
		_, errOut, code := runBinary(t, bin, append(args, "-namespace", "a%b")...)
		if code != 2 || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, `namespace "a%b"`) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and one line naming the namespace", args, code, errOut)
		}
	}
}

// TestDeadReplayStaysInTheDeadLettersNamespace: a dead letter of the
// namespaced group ns%G (topic T, bare) replays to ns%T only with
// -namespace ns. Without it, or with another namespace, dead replay
// refuses (exit 2) instead of sending it to T or other%T, a topic of
// another namespace's consumers, and the letter stays parked.
func TestDeadReplayStaysInTheDeadLettersNamespace(t *testing.T) {
	t.Parallel()
	testenv.SkipUnderRace(t)
	bin := cliBinary(t)
	env := testenv.NewRocketMQ(t)
	db := testenv.MySQL(t)
	dsn := testenv.MySQLDSN(t, db)
	n := testenv.Name(t, "ns")
	ns := "ns" + n[len(n)-8:]
	topic, group := testenv.Name(t, "T"), testenv.Name(t, "G")
	env.CreateTopic(t, ns+"%"+topic, 1)
	env.CreateTopic(t, topic, 1) // the bare topic exists too: another tenant's
	dead, err := deadletter.NewTable(db)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	key := testenv.Name(t, "k")
	if _, err := dead.Park(ctx, &consumer.DeadLetter{Group: ns + "%" + group, Topic: topic, MsgID: key, Keys: []string{key},
		Body: []byte("poison"), Attempts: 4, LastError: "boom", Cause: consumer.CauseRetries}); err != nil {
		t.Fatal(err)
	}
	l, err := dead.List(ctx, deadletter.Filter{Key: key})
	if err != nil || len(l) != 1 {
		t.Fatalf("%v %v", l, err)
	}
	id := fmt.Sprint(l[0].ID)
	for _, c := range [][]string{nil, {"-namespace", "other"}} {
		args := append([]string{"dead", "replay", id, "-dsn", dsn, "-namesrv", env.Namesrv, "-reason", "r"}, c...)
		out, errOut, code := runBinary(t, bin, args...)
		if code != 2 || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, ns) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want 2 and one line naming the dead letter's namespace %s", c, code, out, errOut, ns)
		}
	}
	if e, err := dead.Get(ctx, l[0].ID); err != nil || e.Status != deadletter.Parked {
		t.Fatalf("after refused replays: %+v %v, want still parked", e, err)
	}
	out, errOut, code := runBinary(t, bin, "dead", "replay", id, "-dsn", dsn, "-namesrv", env.Namesrv, "-reason", "r", "-namespace", ns)
	if code != 0 || !strings.Contains(out, "replayed "+id) {
		t.Fatalf("replay -namespace %s: exit %d, stdout %q, stderr %q", ns, code, out, errOut)
	}
	// A dead letter of a group in no namespace is not replayed into one.
	if _, err := dead.Park(ctx, &consumer.DeadLetter{Group: group, Topic: topic, MsgID: key + "-bare", Keys: []string{key},
		Body: []byte("poison"), Attempts: 4, LastError: "boom", Cause: consumer.CauseRetries}); err != nil {
		t.Fatal(err)
	}
	l, err = dead.List(ctx, deadletter.Filter{Key: key, Status: deadletter.Parked})
	if err != nil || len(l) != 1 {
		t.Fatalf("%v %v", l, err)
	}
	_, errOut, code = runBinary(t, bin, "dead", "replay", fmt.Sprint(l[0].ID), "-dsn", dsn, "-namesrv", env.Namesrv, "-reason", "r", "-namespace", ns)
	if code != 2 || !strings.Contains(errOut, "no namespace") {
		t.Errorf("replay of a bare group's letter with -namespace %s: exit %d, stderr %q; want 2", ns, code, errOut)
	}
	if b := env.Embedded; b != nil {
		if got := len(b.Messages(ns + "%" + topic)); got != 1 {
			t.Errorf("%d messages in %s%%%s, want the replay", got, ns, topic)
		}
		if got := len(b.Messages(topic)); got != 0 {
			t.Errorf("%d messages in the bare topic %s", got, topic)
		}
	}
}

// TestNamespaceFlagDefaultsToTheEnvironment: RMQ_NAMESPACE is the
// default, and -namespace "" selects no namespace over it.
func TestNamespaceFlagDefaultsToTheEnvironment(t *testing.T) {
	t.Setenv("RMQ_NAMESPACE", "prod")
	for _, c := range []struct {
		args []string
		want string
	}{{nil, "prod"}, {[]string{"-namespace", ""}, ""}, {[]string{"-namespace", "dev"}, "dev"}} {
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		ns := namespaceFlag(fs)
		if err := fs.Parse(c.args); err != nil || *ns != c.want {
			t.Errorf("%v: namespace %q (%v), want %q", c.args, *ns, err, c.want)
		}
	}
}

// TestBadTableIsAUsageErrorBeforeTheDatabase: a -table the library refuses
// is exit 2 with one stderr line naming it, even with the database
// unreachable (it was reported as the database being down, exit 1, until
// the database answered).
func TestBadTableIsAUsageErrorBeforeTheDatabase(t *testing.T) {
	t.Parallel()
	bin := cliBinary(t)
	dsn := "root@tcp(" + deadAddr(t) + ")/x"
	for _, args := range [][]string{
		{"dead", "list", "-table", "bad name"},
		{"trace", "-namesrv", deadAddr(t), "-dead-table", "bad name", "k"},
		{"trace", "-namesrv", deadAddr(t), "-outbox-table", "bad name", "k"},
		{"trace", "-namesrv", deadAddr(t), "-consume-table", "bad name", "k"},
		{"reconcile", "-once", "-namesrv", deadAddr(t), "-table", "bad name"},
		{"reconcile", "-once", "-namesrv", deadAddr(t), "-batch", "-1"},
	} {
		_, errOut, code := runBinary(t, bin, append(args, "-dsn", dsn)...)
		if code != 2 || strings.Count(errOut, "\n") != 1 || strings.Contains(errOut, "unreachable") {
			t.Errorf("%v: exit %d, stderr %q; want 2 and one line naming the flag's value", args, code, errOut)
		}
	}
	// Every bad table flag is named at once, not only the first.
	_, errOut, code := runBinary(t, bin, "trace", "-namesrv", deadAddr(t), "-dsn", dsn,
		"-outbox-table", "bad one", "-consume-table", "bad two", "-dead-table", "bad three", "k")
	if code != 2 || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, `"bad one"`) ||
		!strings.Contains(errOut, `"bad two"`) || !strings.Contains(errOut, `"bad three"`) {
		t.Errorf("three bad tables: exit %d, stderr %q; want 2 and one line naming all three", code, errOut)
	}
}
