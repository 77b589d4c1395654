package producer_test

import (
	"bytes"
	"compress/zlib"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/seed157d4c4d/reliablemq/internal/remoting"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/producer"
)

func zlibbed(t *testing.T, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	w := zlib.NewWriter(&out)
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// TestCheckBackBodiesInflateWithinTheMaxBodySize: a compressed half
// message's body reaches the checker inflated when it fits the producer's
// max body size; one that inflates past it (a few kilobytes that inflate
// to many megabytes: the producer read all of it into memory) or does
// not inflate at all (it reached the checker as the compressed bytes,
// read as the body) reaches it as nil, with a warning naming the message,
// and the check-back is still answered, by the checker's keys.
func TestCheckBackBodiesInflateWithinTheMaxBodySize(t *testing.T) {
	t.Parallel()
	b := newCheckBroker22(t)
	group := testenv.Name(t, "PG")
	checker := &checkFunc{answer: producer.TxCommit}
	var logs testenv.Logs
	const limit = 64 << 10
	newTransactional(t, checkCluster22(t, b), group, checker, producer.WithMaxBodySize(limit),
		producer.WithLogger(logs.Logger()))
	var c net.Conn
	select {
	case c = <-b.conns:
	case <-time.After(30 * time.Second):
		t.Fatal("no heartbeat reached the broker")
	}
	fits := bytes.Repeat([]byte("fits "), limit/5)
	bomb := zlibbed(t, make([]byte, limit+1))
	for _, f := range [][]byte{
		checkBack22(t, "fits", halfMessage22(group, "fits", remoting.SysFlagCompressed, zlibbed(t, fits))),
		checkBack22(t, "bomb", halfMessage22(group, "bomb", remoting.SysFlagCompressed, bomb)),
		checkBack22(t, "garbled", halfMessage22(group, "garbled", remoting.SysFlagCompressed, []byte("not zlib at all"))),
	} {
		if _, err := c.Write(f); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		select {
		case end := <-b.ends:
			if end.ExtFields["commitOrRollback"] != "8" {
				t.Fatalf("END_TRANSACTION %v; want a commit", end.ExtFields)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("a check-back was never answered")
		}
	}
	q := checker.questions()
	if len(q) != 3 {
		t.Fatalf("checker asked %d times; want 3", len(q))
	}
	want := map[string][]byte{"fits": fits, "bomb": nil, "garbled": nil}
	for _, h := range q {
		if w := want[h.Keys[0]]; !bytes.Equal(h.Body, w) || (w == nil) != (h.Body == nil) {
			t.Errorf("%s: checker got a body of %d bytes; want %d", h.Keys[0], len(h.Body), len(w))
		}
	}
	for _, id := range []string{"UNIQ-bomb", "UNIQ-garbled"} {
		if !strings.Contains(logs.String(), id) {
			t.Errorf("no warning names %s:\n%s", id, logs.String())
		}
	}
	if strings.Contains(logs.String(), "UNIQ-fits") {
		t.Errorf("a warning names the body that fits:\n%s", logs.String())
	}
}

// TestCheckBackThroughTheClientOverTheMaxBodySize: the official client
// inflates a check-back's body itself, without a bound; a body larger
// than the max body size reaches the checker as nil there too, with a
// warning, so that the checker's contract does not depend on the
// connection the broker asked on.
func TestCheckBackThroughTheClientOverTheMaxBodySize(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t)
	checker := &checkFunc{answer: producer.TxCommit}
	var logs testenv.Logs
	const limit = 1 << 10
	p := newTransactional(t, env.NameServers(), testenv.Name(t, "PG"), checker, producer.WithMaxBodySize(limit),
		producer.WithLogger(logs.Logger()))
	for _, size := range []int{limit, limit + 1} {
		ext := &primitive.MessageExt{Message: primitive.Message{Topic: "T", Body: make([]byte, size)}}
		ext.WithProperty(primitive.PropertyUniqueClientMessageIdKeyIndex, fmt.Sprint("UNIQ-", size))
		if s := producer.CheckThroughClient(p, ext); s != primitive.CommitMessageState {
			t.Fatalf("%d bytes: answered %v; want commit", size, s)
		}
	}
	q := checker.questions()
	if len(q) != 2 || len(q[0].Body) != limit || q[1].Body != nil {
		t.Fatalf("checker asked %d times; want bodies of %d bytes then nil", len(q), limit)
	}
	if l := logs.String(); !strings.Contains(l, fmt.Sprint("UNIQ-", limit+1)) || strings.Contains(l, fmt.Sprint("UNIQ-", limit, " ")) {
		t.Fatalf("want one warning, naming the larger body's message:\n%s", l)
	}
}

// TestCheckBackWarningNamesTheOffsetMsgIDWithoutAClientID: a half
// message without a client message id (UNIQ_KEY: not sent by a client
// that sets one) is named in the body's warning by the broker's offset
// message id, the id its checker is asked with, not by an empty one.
func TestCheckBackWarningNamesTheOffsetMsgIDWithoutAClientID(t *testing.T) {
	t.Parallel()
	b := newCheckBroker22(t)
	group := testenv.Name(t, "PG")
	checker := &checkFunc{answer: producer.TxCommit}
	var logs testenv.Logs
	newTransactional(t, checkCluster22(t, b), group, checker,
		producer.WithLogger(logs.Logger()))
	var c net.Conn
	select {
	case c = <-b.conns:
	case <-time.After(30 * time.Second):
		t.Fatal("no heartbeat reached the broker")
	}
	m := &remoting.StoredMessage{Topic: "RMQ_SYS_TRANS_HALF_TOPIC", Body: []byte("not zlib"),
		SysFlag:  remoting.SysFlagCompressed | remoting.SysFlagTransactionPrepared,
		BornHost: netip.MustParseAddrPort("127.0.0.1:5000"), StoreHost: netip.MustParseAddrPort("127.0.0.1:10911"),
		Properties: remoting.EncodeProperties(map[string]string{remoting.PropProducerGroup: group, remoting.PropKeys: "k",
			remoting.PropRealTopic: "T", remoting.PropTransactionPrepared: "true"})}
	if _, err := c.Write(checkBack22(t, "no-uniq", m.AppendEncoded(nil))); err != nil {
		t.Fatal(err)
	}
	select {
	case <-b.ends:
	case <-time.After(30 * time.Second):
		t.Fatal("the check-back was never answered")
	}
	const offsetID = "7F00000100002A9F00000000000004D2" // checkBack22's offsetMsgId
	if q := checker.questions(); len(q) != 1 || q[0].MsgID != offsetID {
		t.Fatalf("checker asked %+v; want one question with the offset message id", q)
	}
	if l := logs.String(); !strings.Contains(l, "msgId="+offsetID) {
		t.Fatalf("the warning does not name %s:\n%s", offsetID, l)
	}
}
