package producer_test

import (
	"bytes"
	"compress/zlib"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/remoting"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// zlibbed is b zlib-compressed, as a client sends a large body.
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
