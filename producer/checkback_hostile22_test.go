package producer_test

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/remoting"
	"github.com/seed157d4c4d/reliablemq/internal/tcptest"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// checkBroker22 is a fake master that takes the producer's check-back
// connection and lets the test write on it what a broker would: it
// answers heartbeats and reports every END_TRANSACTION.
type checkBroker22 struct {
	addr  string
	conns chan net.Conn // a connection, once its first heartbeat came
	ends  chan *remoting.Command
}

func newCheckBroker22(t *testing.T) *checkBroker22 {
	t.Helper()
	b := &checkBroker22{conns: make(chan net.Conn, 16), ends: make(chan *remoting.Command, 64)}
	b.addr = tcptest.Serve(t, "127.0.0.1:0", func(c net.Conn) {
		r := bufio.NewReader(c)
		first := true
		for {
			req, err := remoting.ReadCommand(r)
			if err != nil {
				return
			}
			switch req.Code {
			case remoting.ReqHeartBeat:
				resp := &remoting.Command{Code: remoting.CodeSuccess, Flag: remoting.FlagResponse, Opaque: req.Opaque}
				frame, _ := resp.Encode()
				c.Write(frame)
				if first {
					first = false
					b.conns <- c
				}
			case remoting.ReqEndTransaction:
				b.ends <- req
			}
		}
	})
	return b
}

// checkCluster22 starts a fake name server naming only the fake broker
// as the cluster's master.
func checkCluster22(t *testing.T, b *checkBroker22) []string {
	t.Helper()
	ns := newFakeRemoting(t, func(req *remoting.Command) *remoting.Command {
		if req.Code != remoting.ReqGetBrokerClusterInfo {
			return &remoting.Command{Code: remoting.CodeTopicNotExist, Remark: "no route"}
		}
		body := fmt.Sprintf(`{"brokerAddrTable":{"broker-a":{"brokerAddrs":{0:%q},"brokerName":"broker-a","cluster":"c"}},`+
			`"clusterAddrTable":{"c":["broker-a"]}}`, b.addr)
		return &remoting.Command{Code: remoting.CodeSuccess, Body: []byte(body)}
	})
	return []string{ns.addr()}
}

// halfMessage22 is a stored half message of group with key.
func halfMessage22(group, key string, sysFlag int32, body []byte) []byte {
	m := &remoting.StoredMessage{Topic: "RMQ_SYS_TRANS_HALF_TOPIC", Body: body, SysFlag: sysFlag | remoting.SysFlagTransactionPrepared,
		BornHost: netip.MustParseAddrPort("127.0.0.1:5000"), StoreHost: netip.MustParseAddrPort("127.0.0.1:10911"),
		Properties: remoting.EncodeProperties(map[string]string{remoting.PropProducerGroup: group, remoting.PropKeys: key,
			remoting.PropUniqKey: "UNIQ-" + key, remoting.PropRealTopic: "T", remoting.PropTransactionPrepared: "true"})}
	return m.AppendEncoded(nil)
}

// checkBack22 is a CHECK_TRANSACTION_STATE frame as a 4.9.4 broker sends
// it (oneway), for transaction id tx, with body.
func checkBack22(t *testing.T, tx string, body []byte) []byte {
	t.Helper()
	b, err := (&remoting.Command{Code: remoting.ReqCheckTransactionState, Flag: remoting.FlagOneway, Opaque: 7,
		Language: "JAVA", Version: 401, ExtFields: map[string]string{"tranStateTableOffset": "3", "commitLogOffset": "1234",
			"msgId": "UNIQ-" + tx, "transactionId": tx, "offsetMsgId": "7F00000100002A9F00000000000004D2"}, Body: body}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rawFrame is a frame of the given header text, valid in length.
func rawFrame(header string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(4+len(header)))
	b = binary.BigEndian.AppendUint32(b, uint32(len(header)))
	return append(b, header...)
}

// TestHostile22CheckBacksThatCannotBeAnsweredAreSkipped: a broker's
// check-backs with no message, a garbled one, two messages, another
// group's message or one naming no group are left unanswered without the
// checker being asked, and a good check-back after them on the same
// connection is still answered: none of them costs the connection.
func TestHostile22CheckBacksThatCannotBeAnsweredAreSkipped(t *testing.T) {
	t.Parallel()
	b := newCheckBroker22(t)
	group := testenv.Name(t, "PG")
	checker := &checkFunc{answer: producer.TxCommit}
	newTransactional(t, checkCluster22(t, b), group, checker)
	var c net.Conn
	select {
	case c = <-b.conns:
	case <-time.After(30 * time.Second):
		t.Fatal("no heartbeat reached the broker")
	}
	noGroup := (&remoting.StoredMessage{Topic: "T", Body: []byte("x"), Properties: remoting.EncodeProperties(map[string]string{"KEYS": "k"}),
		BornHost: netip.MustParseAddrPort("127.0.0.1:1"), StoreHost: netip.MustParseAddrPort("127.0.0.1:2")}).AppendEncoded(nil)
	for _, f := range [][]byte{
		checkBack22(t, "no-body", nil),
		checkBack22(t, "garbled", []byte("\x00\x00\x00\x30not a stored message at all, but long enough..")),
		checkBack22(t, "truncated", halfMessage22(group, "trunc", 0, []byte("body"))[:40]),
		checkBack22(t, "two", append(halfMessage22(group, "a", 0, []byte("a")), halfMessage22(group, "b", 0, []byte("b"))...)),
		checkBack22(t, "other-group", halfMessage22(group+"-other", "o", 0, []byte("o"))),
		checkBack22(t, "no-group", noGroup),
		checkBack22(t, "good", halfMessage22(group, "good", 0, []byte("good body"))),
	} {
		if _, err := c.Write(f); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case end := <-b.ends:
		e := end.ExtFields
		if e["transactionId"] != "good" || e["commitOrRollback"] != "8" || e["commitLogOffset"] != "1234" ||
			e["producerGroup"] != group || e["fromTransactionCheck"] != "true" {
			t.Fatalf("END_TRANSACTION %v; want the good check-back's commit", e)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the good check-back, after the bad ones, was never answered")
	}
	select {
	case end := <-b.ends:
		t.Fatalf("another END_TRANSACTION: %v", end.ExtFields)
	case <-time.After(300 * time.Millisecond):
	}
	if q := checker.questions(); len(q) != 1 || q[0].Keys[0] != "good" || string(q[0].Body) != "good body" || q[0].Topic != "T" {
		t.Fatalf("checker asked %+v; want only the good message", q)
	}
}

// TestHostile22AnUnreadableFrameDoesNotDropTheCheckBackConnection: a
// frame whose length is right but whose header cannot be decoded (not
// JSON, a number among extFields) is one frame the producer cannot
// read; the stream is still in step. The check-back connection was
// closed on it: the check-backs already sent behind it were lost, and
// the broker had no producer of the group (the group's registration goes
// with the connection) until the next heartbeat, up to 30 s later, while
// each of its check-backs counts toward the last one, after which it
// drops the half message.
func TestHostile22AnUnreadableFrameDoesNotDropTheCheckBackConnection(t *testing.T) {
	t.Parallel()
	b := newCheckBroker22(t)
	group := testenv.Name(t, "PG")
	checker := &checkFunc{answer: producer.TxCommit}
	newTransactional(t, checkCluster22(t, b), group, checker)
	var c net.Conn
	select {
	case c = <-b.conns:
	case <-time.After(30 * time.Second):
		t.Fatal("no heartbeat reached the broker")
	}
	for _, f := range [][]byte{
		rawFrame("not json"),
		rawFrame(`{"code":39,"flag":2,"opaque":8,"extFields":{"commitLogOffset":1234}}`),
		checkBack22(t, "good", halfMessage22(group, "good", 0, []byte("good body"))),
	} {
		if _, err := c.Write(f); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case end := <-b.ends:
		if end.ExtFields["transactionId"] != "good" {
			t.Fatalf("END_TRANSACTION %v; want the good check-back's", end.ExtFields)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the check-back after an unreadable frame was not answered on its connection (within 10 s; the next heartbeat is 30 s away)")
	}
}
