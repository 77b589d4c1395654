package producer_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/remoting"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// TestARefusedHeartbeatIsLogged: a master that refuses the group's
// heartbeat (an ACL account without the right, say) will send its
// check-backs to no producer that has not sent there, so after a crash a
// committed message may be dropped: the producer says so, once, at WARN,
// naming the broker and its answer; a master that accepts it is not
// reported.
func TestARefusedHeartbeatIsLogged(t *testing.T) {
	t.Parallel()
	refusing := newFakeRemoting(t, func(req *remoting.Command) *remoting.Command {
		return &remoting.Command{Code: 16, Remark: "no permission for HEART_BEAT"}
	})
	accepting := newFakeRemoting(t, func(req *remoting.Command) *remoting.Command {
		return &remoting.Command{Code: remoting.CodeSuccess}
	})
	ns := newFakeRemoting(t, func(req *remoting.Command) *remoting.Command {
		if req.Code != remoting.ReqGetBrokerClusterInfo {
			return &remoting.Command{Code: remoting.CodeTopicNotExist, Remark: "no route"}
		}
		body := fmt.Sprintf(`{"brokerAddrTable":{"broker-a":{"brokerAddrs":{0:%q},"brokerName":"broker-a","cluster":"c"},`+
			`"broker-b":{"brokerAddrs":{0:%q},"brokerName":"broker-b","cluster":"c"}},"clusterAddrTable":{"c":["broker-a","broker-b"]}}`,
			refusing.addr(), accepting.addr())
		return &remoting.Command{Code: remoting.CodeSuccess, Body: []byte(body)}
	})
	var logs testenv.Logs
	newTransactional(t, []string{ns.addr()}, testenv.Name(t, "PG"), &checkFunc{answer: producer.TxCommit},
		producer.WithLogger(logs.Logger()))
	deadline := time.Now().Add(25 * time.Second)
	for !strings.Contains(logs.String(), "refused the group's heartbeat") || accepting.count(remoting.ReqHeartBeat) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no warning of the refused heartbeat; logged:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	out := logs.String()
	if !strings.Contains(out, "level=WARN") || !strings.Contains(out, refusing.addr()) ||
		!strings.Contains(out, "no permission for HEART_BEAT") || strings.Contains(out, accepting.addr()) {
		t.Fatalf("logged:\n%s\nwant one WARN naming %s and its remark, nothing of %s", out, refusing.addr(), accepting.addr())
	}
}
