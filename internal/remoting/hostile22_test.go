package remoting

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/tcptest"
)

// peer22 is a hostile remoting peer on a loopback listener that stays
// open for the test's life: every connection it accepts is handed to the
// test, which plays the server's side by hand.
type peer22 struct {
	address string
	conns   chan net.Conn
}

func newPeer22(t *testing.T) *peer22 {
	t.Helper()
	p := &peer22{conns: make(chan net.Conn, 16)}
	p.address = tcptest.Serve(t, "127.0.0.1:0", func(c net.Conn) { p.conns <- c })
	return p
}

func (p *peer22) addr() string { return p.address }

// accept returns the server side of the next connection.
func (p *peer22) accept(t *testing.T) net.Conn {
	t.Helper()
	select {
	case c := <-p.conns:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no connection came")
		return nil
	}
}

// dial22 connects a Conn to p and returns it with the server's side.
func dial22(t *testing.T, p *peer22) (*Conn, net.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, p.addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, p.accept(t)
}

// frame22 encodes cmd as a response to opaque.
func frame22(t *testing.T, opaque int32, remark string) []byte {
	t.Helper()
	b, err := (&Command{Code: CodeSuccess, Flag: FlagResponse, Opaque: opaque, Remark: remark}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// result22 is one Invoke's outcome.
type result22 struct {
	resp *Command
	err  error
}

// invokeAsync runs Invoke in a goroutine the test waits for at cleanup.
func invokeAsync(t *testing.T, c *Conn, ctx context.Context, req *Command) <-chan result22 {
	t.Helper()
	out := make(chan result22, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		resp, err := c.Invoke(ctx, req)
		out <- result22{resp, err}
	})
	t.Cleanup(wg.Wait)
	return out
}

// waitResult returns r's result, failing the test when none comes within
// bound (far beyond any deadline the test set).
func waitResult(t *testing.T, r <-chan result22, bound time.Duration, what string) result22 {
	t.Helper()
	select {
	case res := <-r:
		return res
	case <-time.After(bound):
		t.Fatalf("%s: Invoke still blocked after %v", what, bound)
		return result22{}
	}
}

// readRequest reads one request frame on the server's side.
func readRequest(t *testing.T, s net.Conn) *Command {
	t.Helper()
	s.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer s.SetReadDeadline(time.Time{})
	req, err := ReadCommand(s)
	if err != nil {
		t.Fatalf("server: read request: %v", err)
	}
	return req
}

// TestHostile22InvokeWaitingForTheConnHonoursItsDeadline: Invoke serves
// one request at a time, and its doc says the ctx deadline bounds the
// whole exchange. A second call with a 200 ms deadline, made while a
// first one waits on a peer that never answers (a broker hung between two
// frames), waited for the connection's mutex without looking at its ctx:
// it blocked for as long as the first call's ctx allowed, forever when
// that ctx has no deadline.
func TestHostile22InvokeWaitingForTheConnHonoursItsDeadline(t *testing.T) {
	t.Parallel()
	p := newPeer22(t)
	c, s := dial22(t, p)

	firstCtx, cancelFirst := context.WithCancel(context.Background())
	t.Cleanup(cancelFirst)
	first := invokeAsync(t, c, firstCtx, &Command{Code: ReqGetRouteInfoByTopic})
	readRequest(t, s) // the first call holds the connection now; never answered

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	second := invokeAsync(t, c, ctx, &Command{Code: ReqGetRouteInfoByTopic})
	select {
	case res := <-second:
		if !errors.Is(res.err, context.DeadlineExceeded) {
			t.Errorf("second call: %+v, %v; want its deadline", res.resp, res.err)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("a call with a 200 ms deadline still blocked after 10 s, behind another call on the connection")
		cancelFirst()
		waitResult(t, second, 10*time.Second, "second call after the first ended")
	}
	cancelFirst()
	waitResult(t, first, 10*time.Second, "first call")
}

// TestHostile22InvokeWithADoneCtxSendsNothing: a caller that has given up
// (its ctx already cancelled or past its deadline) must not have its
// request reach the broker: UPDATE_AND_CREATE_TOPIC or a retry copy's
// SEND_MESSAGE done after the caller was told it failed. Invoke only
// arranged for the connection to be closed in another goroutine and wrote
// the request first.
func TestHostile22InvokeWithADoneCtxSendsNothing(t *testing.T) {
	t.Parallel()
	p := newPeer22(t)
	for i := range 5 {
		c, s := dial22(t, p)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := c.Invoke(ctx, &Command{Code: ReqUpdateAndCreateTopic, ExtFields: map[string]string{"topic": "T"}})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("try %d: Invoke with a cancelled ctx: %v; want context.Canceled", i, err)
		}
		c.Close()
		s.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(s)
		if err != nil {
			t.Fatalf("try %d: server read: %v", i, err)
		}
		if len(got) > 0 {
			t.Fatalf("try %d: the broker received %d bytes (%q...) from a call whose ctx was already cancelled",
				i, len(got), got[8:min(len(got), 60)])
		}
	}
}

// TestHostile22DeadlineDuringWriteIsReported: a broker that stops reading
// (hung, its receive buffer full) while a large request is written: the
// deadline ends the write, and the error must say so (callers tell an
// unreachable peer by context.DeadlineExceeded). It said "use of closed
// network connection": Invoke checked the ctx after a failed read, not
// after a failed write.
func TestHostile22DeadlineDuringWriteIsReported(t *testing.T) {
	t.Parallel()
	p := newPeer22(t)
	c, _ := dial22(t, p) // the server never reads
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	req := &Command{Code: ReqSendMessage, Body: bytes.Repeat([]byte("x"), MaxFrameSize-1024)}
	res := waitResult(t, invokeAsync(t, c, ctx, req), 10*time.Second, "write to a peer that does not read")
	if !errors.Is(res.err, context.DeadlineExceeded) {
		t.Fatalf("Invoke: %v; want an error matching context.DeadlineExceeded", res.err)
	}
}

// TestHostile22NoAnswerFromTheRestOfAnOversizeFrame: a frame over
// MaxFrameSize fails the call, but its bytes stay on the connection. The
// next Invoke on that Conn (a pool keeps a Conn) read them as frames: a
// frame inside the refused one's body (a message body, which any producer
// chooses) became the answer to the next request.
func TestHostile22NoAnswerFromTheRestOfAnOversizeFrame(t *testing.T) {
	t.Parallel()
	p := newPeer22(t)
	c, s := dial22(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	first := invokeAsync(t, c, ctx, &Command{Code: ReqQueryMessage})
	readRequest(t, s)
	forged := frame22(t, 2, "forged: carried inside another frame's body")
	var prefix [4]byte
	binary.BigEndian.PutUint32(prefix[:], MaxFrameSize+1)
	s.Write(append(prefix[:], forged...))
	res := waitResult(t, first, 10*time.Second, "oversize answer")
	if !errors.Is(res.err, ErrFrameTooLarge) {
		t.Fatalf("first call: %+v, %v; want ErrFrameTooLarge", res.resp, res.err)
	}

	second := invokeAsync(t, c, ctx, &Command{Code: ReqQueryMessage})
	var answer sync.WaitGroup
	defer answer.Wait()
	answer.Go(func() { // answer properly, if the request comes
		s.SetReadDeadline(time.Now().Add(10 * time.Second))
		if req, err := ReadCommand(s); err == nil {
			b, _ := (&Command{Code: CodeSuccess, Flag: FlagResponse, Opaque: req.Opaque, Remark: "genuine"}).Encode()
			s.Write(b)
		}
	})
	res = waitResult(t, second, 10*time.Second, "call after the oversize frame")
	if res.err == nil && res.resp.Remark != "genuine" {
		t.Fatalf("the next call was answered with %q: bytes of an earlier, refused frame", res.resp.Remark)
	}
}

// TestHostile22BrokenFramesFailTheCall pins what a peer that dies or lies
// between two frames does to a call: a frame cut short and then stalled
// ends at the deadline; one cut short by a close, or with an impossible
// length prefix or header, fails the call at once (the peer stays
// connected, so an error other than the 10 s deadline shows no wait),
// and never panics or allocates the length prefix's gigabytes.
func TestHostile22BrokenFramesFailTheCall(t *testing.T) {
	t.Parallel()
	header := func(word uint32, rest string) []byte {
		b := binary.BigEndian.AppendUint32(nil, uint32(4+len(rest)))
		b = binary.BigEndian.AppendUint32(b, word)
		return append(b, rest...)
	}
	full := func(opaque int32) []byte {
		b, _ := (&Command{Code: CodeSuccess, Flag: FlagResponse, Opaque: opaque}).Encode()
		return b
	}
	for _, tc := range []struct {
		name  string
		send  func(opaque int32) []byte
		close bool // the peer closes after sending
		stall bool // the call can only end at its deadline
	}{
		{name: "two bytes of the prefix, stalled", send: func(int32) []byte { return []byte{0, 0} }, stall: true},
		{name: "half a header, stalled", send: func(o int32) []byte { b := full(o); return b[:len(b)/2] }, stall: true},
		{name: "prefix only, closed", send: func(o int32) []byte { return full(o)[:4] }, close: true},
		{name: "half a header, closed", send: func(o int32) []byte { b := full(o); return b[:len(b)/2] }, close: true},
		{name: "negative length", send: func(int32) []byte { return []byte{0xFF, 0xFF, 0xFF, 0xF0, 0, 0, 0, 2, '{', '}'} }},
		{name: "4 GiB length", send: func(int32) []byte { return []byte{0xFF, 0xFF, 0xFF, 0xFF} }},
		{name: "2 GiB length", send: func(int32) []byte { return []byte{0x80, 0, 0, 0} }},
		{name: "length 0", send: func(int32) []byte { return []byte{0, 0, 0, 0} }},
		{name: "length 2", send: func(int32) []byte { return []byte{0, 0, 0, 2, 0, 0} }},
		{name: "header length beyond the frame", send: func(int32) []byte { return header(100, "{}") }},
		{name: "header length 16 MiB", send: func(int32) []byte { return header(0xFFFFFF, "{}") }},
		{name: "binary serialize type", send: func(int32) []byte { return header(1<<24|2, "{}") }},
		{name: "header not JSON", send: func(int32) []byte { return header(5, "hello") }},
		{name: "header a JSON array", send: func(int32) []byte { return header(2, "[]") }},
		{name: "code a string", send: func(o int32) []byte {
			h := fmt.Sprintf(`{"code":"0","flag":1,"opaque":%d}`, o)
			return header(uint32(len(h)), h)
		}},
		{name: "opaque beyond int32", send: func(int32) []byte {
			h := `{"code":0,"flag":1,"opaque":4294967297}`
			return header(uint32(len(h)), h)
		}},
		{name: "extFields number", send: func(o int32) []byte {
			h := fmt.Sprintf(`{"code":0,"flag":1,"opaque":%d,"extFields":{"offset":1}}`, o)
			return header(uint32(len(h)), h)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := newPeer22(t)
			c, s := dial22(t, p)
			d := 10 * time.Second
			if tc.stall {
				d = 200 * time.Millisecond
			}
			ctx, cancel := context.WithTimeout(context.Background(), d)
			defer cancel()
			r := invokeAsync(t, c, ctx, &Command{Code: ReqGetRouteInfoByTopic})
			req := readRequest(t, s)
			s.Write(tc.send(req.Opaque))
			if tc.close {
				s.Close()
			}
			res := waitResult(t, r, 20*time.Second, tc.name)
			switch {
			case res.err == nil:
				t.Fatalf("answered %+v; want an error", res.resp)
			case tc.stall && !errors.Is(res.err, context.DeadlineExceeded):
				t.Fatalf("%v; want the deadline", res.err)
			case !tc.stall && errors.Is(res.err, context.DeadlineExceeded):
				t.Fatalf("%v: waited for the deadline on a frame that could not be read", res.err)
			case !strings.HasPrefix(res.err.Error(), "remoting: ") && !errors.Is(res.err, context.DeadlineExceeded):
				t.Fatalf("error %q does not say where it comes from", res.err)
			}
		})
	}
}

// TestHostile22LaterCallNeverGetsAnEarlierAnswer pins the opaque matching
// a reused Conn relies on: an answer twice over, an answer to nothing,
// a request the server sends and a late answer to an earlier call are
// all passed over, and each call gets its own answer.
func TestHostile22LaterCallNeverGetsAnEarlierAnswer(t *testing.T) {
	t.Parallel()
	p := newPeer22(t)
	c, s := dial22(t, p)
	var seen []int
	c.OnRequest = func(r *Command) { seen = append(seen, r.Code) }
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	r := invokeAsync(t, c, ctx, &Command{Code: ReqGetRouteInfoByTopic})
	req := readRequest(t, s)
	s.Write(frame22(t, req.Opaque, "first"))
	if res := waitResult(t, r, 10*time.Second, "first"); res.err != nil || res.resp.Remark != "first" {
		t.Fatalf("first call: %+v, %v", res.resp, res.err)
	}
	// After the first answer: the same answer again, one to no request,
	// a server request with the next opaque, and a response to the next
	// opaque flagged as a request; then the real answer.
	s.Write(frame22(t, req.Opaque, "first again"))
	s.Write(frame22(t, 999, "nobody asked"))
	check, _ := (&Command{Code: ReqCheckTransactionState, Flag: FlagOneway, Opaque: req.Opaque + 1}).Encode()
	s.Write(check)
	notFlagged, _ := (&Command{Code: CodeSuccess, Opaque: req.Opaque + 1, Remark: "not a response"}).Encode()
	s.Write(notFlagged)

	r = invokeAsync(t, c, ctx, &Command{Code: ReqGetRouteInfoByTopic})
	req2 := readRequest(t, s)
	if req2.Opaque == req.Opaque {
		t.Fatalf("the second request reused opaque %d", req.Opaque)
	}
	s.Write(frame22(t, req2.Opaque, "second"))
	res := waitResult(t, r, 10*time.Second, "second")
	if res.err != nil || res.resp.Remark != "second" {
		t.Fatalf("second call: %+v, %v; want its own answer", res.resp, res.err)
	}
	if len(seen) != 2 || seen[0] != ReqCheckTransactionState {
		t.Fatalf("OnRequest saw codes %v; want the check-back and the unflagged frame", seen)
	}
}

// TestHostile22EveryWaitingCallEnds pins that no call on a Conn outlives
// the connection: many calls queued on one Conn whose peer closes it, and
// many queued on one that Close closes, all return an error.
func TestHostile22EveryWaitingCallEnds(t *testing.T) {
	t.Parallel()
	for _, byPeer := range []bool{true, false} {
		t.Run(fmt.Sprintf("peer closes %v", byPeer), func(t *testing.T) {
			t.Parallel()
			p := newPeer22(t)
			c, s := dial22(t, p)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			const n = 20
			var rs []<-chan result22
			for range n {
				rs = append(rs, invokeAsync(t, c, ctx, &Command{Code: ReqGetRouteInfoByTopic}))
			}
			readRequest(t, s) // one call is waiting for its answer
			if byPeer {
				s.Close()
			} else {
				c.Close()
			}
			for i, r := range rs {
				if res := waitResult(t, r, 10*time.Second, fmt.Sprint("call ", i)); res.err == nil {
					t.Fatalf("call %d answered %+v on a closed connection", i, res.resp)
				}
			}
		})
	}
}

// serve22 answers every request on a listener at addr ("127.0.0.1:0",
// "[::1]:0") with handle's answer, until the test ends, and returns the
// listener's address.
func serve22(t *testing.T, addr string, handle func(*Command) *Command) string {
	t.Helper()
	return tcptest.Serve(t, addr, func(c net.Conn) {
		for {
			req, err := ReadCommand(c)
			if err != nil {
				return
			}
			resp := handle(req)
			resp.Flag, resp.Opaque = FlagResponse, req.Opaque
			b, _ := resp.Encode()
			c.Write(b)
		}
	})
}

// TestHostile22CheckSubscribeOnRoutesWithoutAMaster: a name server whose
// route for the topic lists no broker, or only brokers without a master
// (the master down, its slave still registered), leaves access
// unverified, and the error must say why: it read "no broker answered:
// %!w(<nil>)", errors.Join of no errors formatted with %w, which is what
// a consumer with credentials showed its user at Start.
func TestHostile22CheckSubscribeOnRoutesWithoutAMaster(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, body string }{
		{"no brokers", `{"brokerDatas":[],"queueDatas":[]}`},
		{"slave only", `{"brokerDatas":[{"brokerName":"broker-a","brokerAddrs":{1:"127.0.0.1:1"}}],"queueDatas":[{"brokerName":"broker-a","perm":6,"readQueueNums":1,"writeQueueNums":1}]}`},
		{"null route", `null`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := serve22(t, "127.0.0.1:0", func(*Command) *Command { return &Command{Code: CodeSuccess, Body: []byte(tc.body)} })
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := CheckSubscribe(ctx, Credentials{AccessKey: "ak", SecretKey: "sk"}, []string{ns}, "G", "T", false)
			if !errors.Is(err, ErrAccessUnverified) {
				t.Fatalf("CheckSubscribe: %v; want ErrAccessUnverified", err)
			}
			if strings.Contains(err.Error(), "%!") {
				t.Fatalf("error text %q has a formatting verb with nothing to format", err)
			}
		})
	}
}

// TestHostile22RoutesWithOddBrokerAddresses pins how CheckSubscribe
// treats the addresses a name server routes a topic to: an IPv6 master
// ("[::1]:port") is asked like any other, its ACL refusal reported; a
// master whose address is not host:port, next to one that answers,
// hides nothing; and a route of such addresses only is unverified, the
// error naming the address.
func TestHostile22RoutesWithOddBrokerAddresses(t *testing.T) {
	t.Parallel()
	refuse := func(*Command) *Command {
		return &Command{Code: CodeSystemError, Remark: "org.apache.rocketmq.acl.common.AclException: No acl config for ak, org.apache.rocketmq.acl.plain.PlainAccessValidator.validate(PlainAccessValidator.java:1)"}
	}
	v6 := serve22(t, "[::1]:0", refuse)
	v4 := serve22(t, "127.0.0.1:0", refuse)
	route := func(addrs ...string) string {
		var bd []string
		for i, a := range addrs {
			bd = append(bd, fmt.Sprintf(`{"brokerName":"broker-%d","brokerAddrs":{0:%q}}`, i, a))
		}
		return `{"brokerDatas":[` + strings.Join(bd, ",") + `],"queueDatas":[]}`
	}
	for _, tc := range []struct {
		name  string
		addrs []string
		want  error
		names string // text the error must hold
	}{
		{"ipv6 master", []string{v6}, ErrAccessDenied, "No acl config for ak"},
		{"not host:port, then a master", []string{"broker-a-host", v4}, ErrAccessDenied, "broker-1"},
		{"not host:port only", []string{"broker-a-host"}, ErrAccessUnverified, "broker-a-host"},
		{"unbracketed ipv6 only", []string{"::1:10911"}, ErrAccessUnverified, "::1:10911"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			body := route(tc.addrs...)
			ns := serve22(t, "127.0.0.1:0", func(*Command) *Command { return &Command{Code: CodeSuccess, Body: []byte(body)} })
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := CheckSubscribe(ctx, Credentials{AccessKey: "ak", SecretKey: "sk"}, []string{ns}, "G", "T", false)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.names) {
				t.Fatalf("CheckSubscribe: %v; want %v naming %q", err, tc.want, tc.names)
			}
		})
	}
}

// TestQueryByKeyOfATopicTheBrokerDoesNotKnowFindsNone: a broker may
// answer a query of a topic it does not know (a group's retry topic that
// was never written) with TOPIC_NOT_EXIST; that is no message, not an
// error, as QUERY_NOT_FOUND is. Any other refusal is an error.
func TestQueryByKeyOfATopicTheBrokerDoesNotKnowFindsNone(t *testing.T) {
	t.Parallel()
	for code, wantErr := range map[int]bool{CodeTopicNotExist: false, CodeQueryNotFound: false, CodeSystemError: true} {
		broker := serve22(t, "127.0.0.1:0", func(*Command) *Command { return &Command{Code: code, Remark: "no"} })
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		msgs, full, err := QueryByKey(ctx, Credentials{}, broker, "%RETRY%G", "order-1", 32, time.Unix(0, 0), time.Now())
		cancel()
		if (err != nil) != wantErr || len(msgs) != 0 || full {
			t.Errorf("code %d: %d messages, full %v, error %v; want an error: %v", code, len(msgs), full, err, wantErr)
		}
	}
}
