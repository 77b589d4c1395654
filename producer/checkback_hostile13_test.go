package producer_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/rmqtest"

	"github.com/seed157d4c4d/reliablemq/internal/remoting"
	"github.com/seed157d4c4d/reliablemq/internal/tcptest"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// unreachable returns an address whose connections hang unanswered (a
// master whose host is down or firewalled: SYNs dropped): a listener with
// a backlog of 0 whose queue is already full, never accepting.
func unreachable(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	// Fill the queue until a dial hangs.
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
		if err != nil {
			break
		}
		t.Cleanup(func() { c.Close() })
		if i > 16 {
			t.Skip("cannot make a listener that drops connections here")
		}
	}
	return addr
}

// fakeRemoting serves RocketMQ remoting requests on a local listener with
// handle's answers (nil: none), recording each request's code.
type fakeRemoting struct {
	address string
	mu      sync.Mutex
	codes   []int16
}

func newFakeRemoting(t *testing.T, handle func(req *remoting.Command) *remoting.Command) *fakeRemoting {
	t.Helper()
	f := &fakeRemoting{}
	f.address = tcptest.Serve(t, "127.0.0.1:0", func(c net.Conn) {
		r := bufio.NewReader(c)
		for {
			req, err := remoting.ReadCommand(r)
			if err != nil {
				return
			}
			f.mu.Lock()
			f.codes = append(f.codes, int16(req.Code))
			f.mu.Unlock()
			resp := handle(req)
			if resp == nil || req.IsOneway() {
				continue
			}
			resp.Flag, resp.Opaque = remoting.FlagResponse, req.Opaque
			frame, _ := resp.Encode()
			c.Write(frame)
		}
	})
	return f
}

func (f *fakeRemoting) addr() string { return f.address }

func (f *fakeRemoting) count(code int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.codes {
		if int(c) == code {
			n++
		}
	}
	return n
}

// TestHostile13OneUnreachablePeerHidesNoOther: a master that the name
// server lists but whose connections hang (its host down, a firewall), or
// a first name server that hangs so, must not keep the producer from
// reporting its group to the other masters. The cluster query and all the
// dials of a round shared one 5-second budget: the unreachable broker-a,
// dialled first, used it up and broker-b never heard of the group (its
// check-backs found no producer, and after the last one it dropped half
// messages whose local transactions had committed); an unreachable first
// name server used it up and no master heard of it. Nor may a first name
// server that knows no broker (restarted, the brokers not registered with
// it yet) hide the cluster the next one knows.
func TestHostile13OneUnreachablePeerHidesNoOther(t *testing.T) {
	for _, tc := range []struct {
		name                       string
		deadMaster, deadNameServer bool
		twice                      bool // broker-b's address named for broker-a too: Close still closes both
		emptyNameServer            bool // the first name server knows no broker (restarted, brokers not registered yet)
	}{
		{"a master", true, false, false, false},
		{"the first name server", false, true, false, false},
		{"an address named twice", false, false, true, false},
		{"a first name server that knows no broker", false, false, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dead := unreachable(t)
			brokerB := newFakeRemoting(t, func(req *remoting.Command) *remoting.Command {
				return &remoting.Command{Code: remoting.CodeSuccess}
			})
			brokerA := "" // none
			switch {
			case tc.deadMaster:
				brokerA = dead
			case tc.twice:
				brokerA = brokerB.addr()
			}
			ns := newFakeRemoting(t, func(req *remoting.Command) *remoting.Command {
				if req.Code != remoting.ReqGetBrokerClusterInfo {
					return &remoting.Command{Code: remoting.CodeTopicNotExist, Remark: "no route"}
				}
				body := fmt.Sprintf(`{"brokerAddrTable":{"broker-a":{"brokerAddrs":{0:%q},"brokerName":"broker-a","cluster":"c"},`+
					`"broker-b":{"brokerAddrs":{0:%q},"brokerName":"broker-b","cluster":"c"}},"clusterAddrTable":{"c":["broker-a","broker-b"]}}`,
					brokerA, brokerB.addr())
				return &remoting.Command{Code: remoting.CodeSuccess, Body: []byte(body)}
			})
			names := []string{ns.addr()}
			switch {
			case tc.deadNameServer:
				names = []string{dead, ns.addr()}
			case tc.emptyNameServer:
				empty := newFakeRemoting(t, func(req *remoting.Command) *remoting.Command {
					if req.Code != remoting.ReqGetBrokerClusterInfo {
						return &remoting.Command{Code: remoting.CodeTopicNotExist, Remark: "no route"}
					}
					return &remoting.Command{Code: remoting.CodeSuccess, Body: []byte(`{"brokerAddrTable":{},"clusterAddrTable":{}}`)}
				})
				names = []string{empty.addr(), ns.addr()}
			}
			newTransactional(t, names, testenv.Name(t, "PG"), &checkFunc{answer: producer.TxCommit})
			deadline := time.Now().Add(25 * time.Second)
			for brokerB.count(remoting.ReqHeartBeat) == 0 {
				if time.Now().After(deadline) {
					t.Fatal("broker-b got no heartbeat")
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
}

// serialChecker answers TxUnknown (ask again) after a short pause, and records the
// most calls it saw in progress at once.
type serialChecker struct {
	in, most, calls, own atomic.Int32
}

func (c *serialChecker) CheckTx(ctx context.Context, _ producer.HalfMessage) producer.TxState {
	n := c.in.Add(1)
	defer c.in.Add(-1)
	for {
		m := c.most.Load()
		if n <= m || c.most.CompareAndSwap(m, n) {
			break
		}
	}
	c.calls.Add(1)
	buf := make([]byte, 1<<16)
	if strings.Contains(string(buf[:runtime.Stack(buf, false)]), "checkBacks") {
		c.own.Add(1)
	}
	time.Sleep(20 * time.Millisecond) // long enough for another check-back to come meanwhile
	return producer.TxUnknown
}

// TestHostile13CheckerIsCalledOneAtATime: TxChecker's doc promises one
// check at a time (a checker may hold state that is not safe for
// concurrent use). The check-backs that come on the producer's own
// connections (one per master) were answered on their own goroutines,
// at the same time as those that come through the official client: the
// checker ran twice at once.
func TestHostile13CheckerIsCalledOneAtATime(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t, rmqtest.WithTransactionCheck(6*time.Second, 60*time.Second, 15))
	b := env.RequireEmbedded(t)
	topic, group := testenv.Name(t, "T"), testenv.Name(t, "PG")
	env.CreateTopic(t, topic, 2)
	checker := &serialChecker{}
	p := newTransactional(t, env.NameServers(), group, checker)
	const n = 20
	var ids []string
	for i := range n {
		if _, err := p.SendInTransaction(ctxT(t), producer.Message{Topic: topic, Keys: []string{"k" + strconv.Itoa(i)}, Body: []byte("x")},
			answer(producer.TxUnknown, &ids)); err != nil {
			t.Fatal(err)
		}
	}
	// Both connections of the group known, the client's and the
	// check-backs', and the first round of check-backs (some of which
	// came before the client's heartbeat) over: the next round is
	// shared by both.
	env.Eventually(t, "two connections of the group", 40*time.Second, func() bool { return b.Producers(group) == 2 })
	b.Advance(7 * time.Second)
	env.Eventually(t, "the first check-backs answered", time.Minute, func() bool { return checker.calls.Load() >= n })
	time.Sleep(100 * time.Millisecond)
	checker.most.Store(0)
	checker.calls.Store(0)
	checker.own.Store(0)
	b.Advance(61 * time.Second)
	env.Eventually(t, "the second check-backs answered", time.Minute, func() bool { return checker.calls.Load() >= n })
	if m := checker.most.Load(); m != 1 || checker.own.Load() == n {
		t.Fatalf("the checker ran %d times at once; %d of %d check-backs came on the producer's own connection (want some on each)",
			m, checker.own.Load(), n)
	}
}
