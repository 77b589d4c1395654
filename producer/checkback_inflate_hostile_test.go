package producer_test

import (
	"bytes"
	"math"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/seed157d4c4d/reliablemq/internal/remoting"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// bodyCase is a half message's stored body and flag, and the body the
// checker must get for it.
type bodyCase struct {
	key     string
	sysFlag int32
	stored  []byte
	want    []byte
}

// bodiesOnOwnConnection sends each case as a check-back on the fake
// broker's connection and returns the body the checker got, by key, once
// every check-back is answered with a commit.
func bodiesOnOwnConnection(t *testing.T, b *checkBroker22, group string, checker *checkFunc, cases []bodyCase) map[string][]byte {
	t.Helper()
	var c net.Conn
	select {
	case c = <-b.conns:
	case <-time.After(30 * time.Second):
		t.Fatal("no heartbeat reached the broker")
	}
	for _, k := range cases {
		if _, err := c.Write(checkBack22(t, k.key, halfMessage22(group, k.key, k.sysFlag, k.stored))); err != nil {
			t.Fatal(err)
		}
	}
	for range cases {
		select {
		case end := <-b.ends:
			if end.ExtFields["commitOrRollback"] != "8" {
				t.Fatalf("END_TRANSACTION %v; want a commit", end.ExtFields)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("a check-back was never answered")
		}
	}
	got := map[string][]byte{}
	for _, h := range checker.questions() {
		got[h.Keys[0]] = h.Body
	}
	return got
}

// sameBody reports whether got is want, nil and empty told apart.
func sameBody(got, want []byte) bool {
	return bytes.Equal(got, want) && (got == nil) == (want == nil)
}

// TestHostileCheckBackBodyIsTheSameOnBothPaths: the checker gets the same
// body for a half message whichever connection the broker asked on (the
// HalfMessage doc: nil, with a warning, when it is larger than the max
// body size), for bodies at and past the limit, compressed or not, a zlib
// stream followed by other bytes (the official client and the Java one
// stop at the stream's end), and zlib data without the compressed flag
// (not inflated). A compressed body that does not inflate is nil on the
// producer's own connection and the bytes as stored through the client,
// as the doc says. No warning shows the body. An uncompressed body past
// the limit reached the checker whole on the producer's own connection
// and as nil through the client.
func TestHostileCheckBackBodyIsTheSameOnBothPaths(t *testing.T) {
	t.Parallel()
	const limit = 64 << 10
	secret := func(n int) []byte {
		return []byte(strings.Repeat("SECRET-", n/7+1)[:n])
	}
	atLimit, small := secret(limit), secret(5000)
	over := secret(limit + 1)
	truncated := zlibbed(t, small)
	truncated = truncated[:len(truncated)/2]
	cases := []bodyCase{
		{"plain-at-limit", 0, atLimit, atLimit},
		{"plain-over", 0, over, nil},
		{"zlib-at-limit", remoting.SysFlagCompressed, zlibbed(t, atLimit), atLimit},
		{"zlib-over", remoting.SysFlagCompressed, zlibbed(t, over), nil},
		{"zlib-then-garbage", remoting.SysFlagCompressed, append(zlibbed(t, small), "SECRET trailer"...), small},
		{"zlib-unflagged", 0, zlibbed(t, small), zlibbed(t, small)},
		{"truncated", remoting.SysFlagCompressed, truncated, nil},
		{"garbled", remoting.SysFlagCompressed, []byte("SECRET, not zlib"), nil},
	}
	// Through the official client, a body that does not inflate comes as
	// it was stored (the doc says so).
	throughClient := map[string][]byte{"truncated": truncated, "garbled": []byte("SECRET, not zlib")}

	b := newCheckBroker22(t)
	group := testenv.Name(t, "PG")
	checker := &checkFunc{answer: producer.TxCommit}
	var logs testenv.Logs
	p := newTransactional(t, checkCluster22(t, b), group, checker, producer.WithMaxBodySize(limit),
		producer.WithLogger(logs.Logger()))
	own := bodiesOnOwnConnection(t, b, group, checker, cases)
	ownLogs := logs.String()

	for _, k := range cases {
		if got := own[k.key]; !sameBody(got, k.want) {
			t.Errorf("own connection, %s: checker got %d bytes (nil %v); want %d (nil %v)", k.key, len(got), got == nil, len(k.want), k.want == nil)
		}
		// The client decodes the broker's frame body itself (inflating
		// a compressed body, without a bound) and hands the listener the
		// message.
		exts := primitive.DecodeMessage(halfMessage22(group, k.key, k.sysFlag, k.stored))
		if len(exts) != 1 {
			t.Fatalf("%s: the client decoded %d messages", k.key, len(exts))
		}
		before := len(checker.questions())
		if s := producer.CheckThroughClient(p, exts[0]); s != primitive.CommitMessageState {
			t.Fatalf("%s through the client: answered %v; want commit", k.key, s)
		}
		q := checker.questions()
		if len(q) != before+1 {
			t.Fatalf("%s through the client: checker asked %d times; want once", k.key, len(q)-before)
		}
		want := k.want
		if w, ok := throughClient[k.key]; ok {
			want = w
		}
		if got := q[before].Body; !sameBody(got, want) {
			t.Errorf("through the client, %s: checker got %d bytes (nil %v); want %d (nil %v)", k.key, len(got), got == nil, len(want), want == nil)
		}
	}
	clientLogs := strings.TrimPrefix(logs.String(), ownLogs)
	if strings.Contains(ownLogs+clientLogs, "SECRET") {
		t.Errorf("a warning shows a body:\n%s%s", ownLogs, clientLogs)
	}
	for _, k := range cases {
		if warned := strings.Contains(ownLogs, "UNIQ-"+k.key+" "); warned != (k.want == nil) {
			t.Errorf("own connection, %s: warned %v; want %v:\n%s", k.key, warned, k.want == nil, ownLogs)
		}
		_, asStored := throughClient[k.key]
		if warned := strings.Contains(clientLogs, "UNIQ-"+k.key+" "); warned != (k.want == nil && !asStored) {
			t.Errorf("through the client, %s: warned %v; want %v:\n%s", k.key, warned, k.want == nil && !asStored, clientLogs)
		}
	}
}

// TestHostileCheckBackInflatesUnderTheLargestLimit: with the max body size
// at math.MaxInt (no limit in effect), a compressed body reaches the
// checker on the producer's own connection whole. The bound on inflating
// (limit+1 bytes, to tell a body over the limit) overflowed to a negative
// count: every compressed body reached the checker empty, with no
// warning, and a checker reading it (an order id in the body) could roll
// back a committed transaction's message.
func TestHostileCheckBackInflatesUnderTheLargestLimit(t *testing.T) {
	t.Parallel()
	b := newCheckBroker22(t)
	group := testenv.Name(t, "PG")
	checker := &checkFunc{answer: producer.TxCommit}
	var logs testenv.Logs
	newTransactional(t, checkCluster22(t, b), group, checker, producer.WithMaxBodySize(math.MaxInt),
		producer.WithLogger(logs.Logger()))
	body := bytes.Repeat([]byte(`{"order":42}`), 1000)
	got := bodiesOnOwnConnection(t, b, group, checker, []bodyCase{
		{key: "big", sysFlag: remoting.SysFlagCompressed, stored: zlibbed(t, body)},
	})
	if !sameBody(got["big"], body) {
		t.Fatalf("checker got %d bytes (nil %v); want the %d inflated\n%s", len(got["big"]), got["big"] == nil, len(body), logs.String())
	}
	if l := logs.String(); strings.Contains(l, "UNIQ-big") {
		t.Fatalf("a warning for a body that inflates:\n%s", l)
	}
}

// TestHostileMaxBodySizeMustBePositive: a max body size of 0 or less is
// refused by both constructors, naming the setting. A transactional
// producer built with one would refuse every send with a body and hand
// its checker every compressed body as nil (inflating stops at the
// limit).
func TestHostileMaxBodySizeMustBePositive(t *testing.T) {
	t.Parallel()
	ns := []string{"127.0.0.1:1"} // never dialled: the options are refused first
	for _, n := range []int{0, -1, math.MinInt} {
		if p, err := producer.New(ns, producer.WithMaxBodySize(n)); err == nil || !strings.Contains(err.Error(), "max body size") {
			if p != nil {
				p.Close()
			}
			t.Errorf("New with max body size %d: %v; want it refused", n, err)
		}
		p, err := producer.NewTransactional(ns, "PG", &checkFunc{}, producer.WithMaxBodySize(n))
		if err == nil || !strings.Contains(err.Error(), "max body size") {
			if p != nil {
				p.Close()
			}
			t.Errorf("NewTransactional with max body size %d: %v; want it refused", n, err)
		}
	}
}
