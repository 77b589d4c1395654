package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/remoting"
	"github.com/seed157d4c4d/reliablemq/internal/tcptest"
)

// peer22 runs serve on every connection to a loopback listener that
// stays open for the test's life, and returns its address.
func peer22(t *testing.T, serve func(c net.Conn)) string {
	return tcptest.Serve(t, "127.0.0.1:0", serve)
}

// answering serves each request with answer's reply: a frame (with
// opaque as the request's) or raw bytes, and closes the connection after
// it when close is set.
func answering(answer func(req *remoting.Command) (raw []byte, close bool)) func(net.Conn) {
	return func(c net.Conn) {
		r := bufio.NewReader(c)
		for {
			req, err := remoting.ReadCommand(r)
			if err != nil {
				return
			}
			raw, closeAfter := answer(req)
			c.Write(raw)
			if closeAfter {
				c.Close()
				return
			}
		}
	}
}

func reply22(req *remoting.Command, code int, body string) []byte {
	b, _ := (&remoting.Command{Code: code, Flag: remoting.FlagResponse, Opaque: req.Opaque, Body: []byte(body)}).Encode()
	return b
}

// halfReply is the first half of a proper reply.
func halfReply(req *remoting.Command) []byte {
	b := reply22(req, remoting.CodeSuccess, `{"offsetTable":{}}`)
	return b[:len(b)/2]
}

// badHeader is a frame of the right length whose header is not JSON.
func badHeader() []byte {
	b := binary.BigEndian.AppendUint32(nil, 4+8)
	b = binary.BigEndian.AppendUint32(b, 8)
	return append(b, "not json"...)
}

// clusterOf is a name server naming one master, broker-a, at addr.
func clusterOf(addr string) func(net.Conn) {
	return answering(func(req *remoting.Command) ([]byte, bool) {
		if req.Code != remoting.ReqGetBrokerClusterInfo {
			return reply22(req, remoting.CodeTopicNotExist, ""), false
		}
		return reply22(req, remoting.CodeSuccess, fmt.Sprintf(`{"brokerAddrTable":{"broker-a":{"brokerAddrs":{0:%q},`+
			`"brokerName":"broker-a","cluster":"c"}},"clusterAddrTable":{"c":["broker-a"]}}`, addr)), false
	})
}

// TestHostile22LagReportsBrokenPeers: "lag" against name servers and
// brokers that break a frame, close mid-frame, stall, send a header that
// is not JSON, a body that is not what was asked, or are routed at an
// address that is not host:port: each run fails (exit 1, not a usage
// error), on one line that says "lag:" and names the peer, never a
// panic and never a table alone (the table of what the others answered
// comes before the error, by design).
func TestHostile22LagReportsBrokenPeers(t *testing.T) {
	t.Parallel()
	broker := func(answer func(req *remoting.Command) ([]byte, bool)) func(*testing.T) string {
		return func(t *testing.T) string { return peer22(t, clusterOf(peer22(t, answering(answer)))) }
	}
	for _, tc := range []struct {
		name string
		ns   func(t *testing.T) string // the name server's address
		args []string
		want string // in the error
	}{
		{name: "name server closes mid-frame", ns: func(t *testing.T) string {
			return peer22(t, answering(func(req *remoting.Command) ([]byte, bool) { return halfReply(req), true }))
		}, want: "unexpected EOF"},
		{name: "name server header not JSON", ns: func(t *testing.T) string {
			return peer22(t, answering(func(*remoting.Command) ([]byte, bool) { return badHeader(), false }))
		}, want: "decode header"},
		{name: "name server answers success with no body", ns: func(t *testing.T) string {
			return peer22(t, answering(func(req *remoting.Command) ([]byte, bool) { return reply22(req, 0, ""), false }))
		}, want: "cluster info"},
		{name: "name server knows no broker", ns: func(t *testing.T) string {
			return peer22(t, answering(func(req *remoting.Command) ([]byte, bool) {
				return reply22(req, 0, `{"brokerAddrTable":{},"clusterAddrTable":{}}`), false
			}))
		}, want: "knows no broker master"},
		{name: "broker closes mid-frame", ns: broker(func(req *remoting.Command) ([]byte, bool) { return halfReply(req), true }),
			args: []string{"-group", "G"}, want: "broker broker-a"},
		{name: "broker stalls mid-frame", ns: broker(func(req *remoting.Command) ([]byte, bool) { return halfReply(req), false }),
			args: []string{"-group", "G"}, want: "deadline exceeded"},
		{name: "broker header not JSON", ns: broker(func(*remoting.Command) ([]byte, bool) { return badHeader(), false }),
			want: "broker broker-a"},
		{name: "broker stats not JSON", ns: broker(func(req *remoting.Command) ([]byte, bool) {
			return reply22(req, 0, "offsetTable=nothing"), false
		}), args: []string{"-group", "G"}, want: "consume stats of G"},
		{name: "broker refuses", ns: broker(func(req *remoting.Command) ([]byte, bool) {
			return reply22(req, remoting.CodeSystemError, ""), false
		}), want: "code 1"},
		{name: "broker address not host:port", ns: func(t *testing.T) string { return peer22(t, clusterOf("broker-a-host")) },
			want: "broker-a-host"},
		{name: "broker address unbracketed IPv6", ns: func(t *testing.T) string { return peer22(t, clusterOf("::1:10911")) },
			args: []string{"-group", "G"}, want: "::1:10911"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := tc.ns(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var out, errOut bytes.Buffer
			err := run(ctx, append([]string{"lag", "-namesrv", ns, "-namespace", ""}, tc.args...), &out, &errOut)
			switch {
			case err == nil:
				t.Fatalf("lag succeeded against a broken peer:\n%s", out.String())
			case errors.Is(err, errUsage):
				t.Fatalf("lag: %v: a usage error (exit 2) for a failed run", err)
			case !strings.HasPrefix(err.Error(), "lag: ") || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), tc.want):
				t.Fatalf("error %q; want one line, \"lag: ...\", saying %q", err, tc.want)
			}
		})
	}
}
