package record_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"
	"github.com/seed157d4c4d/reliablemq/internal/record"
	"github.com/seed157d4c4d/reliablemq/internal/remoting"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/rmqtest"
	"go.uber.org/goleak"
)

type line struct {
	Meta      map[string]string `json:"meta"`
	Note      string            `json:"note"`
	Event     string            `json:"event"`
	Conn      int               `json:"conn"`
	Peer      string            `json:"peer"`
	Dir       string            `json:"dir"`
	Kind      string            `json:"kind"`
	Code      *int              `json:"code"`
	ReqCode   int               `json:"reqCode"`
	Opaque    int32             `json:"opaque"`
	ExtFields map[string]string `json:"extFields"`
	Body      string            `json:"body"`
	BodyEnc   string            `json:"bodyEnc"`
	Rewrote   string            `json:"proxyRewroteBrokerAddr"`
	Decoded   []struct {
		Topic string `json:"topic"`
		Body  string `json:"body"`
	} `json:"decodedMessages"`
}

func parse(t *testing.T, s string) []line {
	t.Helper()
	var out []line
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		var x line
		if err := json.Unmarshal([]byte(l), &x); err != nil {
			t.Fatalf("transcript line %q: %v", l, err)
		}
		out = append(out, x)
	}
	return out
}

// TestProxyRecordsClientExchanges sends with the official producer and
// consumes with a raw pull, all through the proxy in front of rmqtest, and
// checks what the transcript holds.
func TestProxyRecordsClientExchanges(t *testing.T) {
	testenv.QuietClientLogs()
	b := rmqtest.Run(t)
	const topic = "RecordT"
	if err := b.CreateTopic(topic, 1); err != nil {
		t.Fatal(err)
	}
	var out testenv.Logs
	ctx := context.Background()
	p, err := record.Start(ctx, b.NamesrvAddr(), &out, record.WithMeta("scenario", "unit"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.Note("send one message")

	prod, err := rocketmq.NewProducer(producer.WithNameServer([]string{p.NamesrvAddr()}),
		producer.WithGroupName("pg-record"), producer.WithInstanceName("record-test"))
	if err != nil {
		t.Fatal(err)
	}
	if err := prod.Start(); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	res, err := prod.SendSync(sctx, primitive.NewMessage(topic, []byte("hello through the proxy")))
	cancel()
	if err != nil || res.Status != primitive.SendOK {
		t.Fatalf("send: %v %v", res, err)
	}
	if err := prod.Shutdown(); err != nil {
		t.Fatal(err)
	}

	// Consume it through the broker-side listener the route rewrite made.
	route, err := remoting.FetchRoute(ctx, p.NamesrvAddr(), topic)
	if err != nil {
		t.Fatal(err)
	}
	brokerAddr := route.MasterAddr("broker-a")
	if brokerAddr == b.BrokerAddr() || brokerAddr == "" {
		t.Fatalf("route through the proxy names broker %q, want the proxy's listener (real %s)", brokerAddr, b.BrokerAddr())
	}
	if again, err := p.BrokerAddr(b.BrokerAddr()); err != nil || again != brokerAddr {
		t.Fatalf("BrokerAddr(real) = %q, %v; the route named %q", again, err, brokerAddr)
	}
	c, err := remoting.Dial(ctx, brokerAddr)
	if err != nil {
		t.Fatal(err)
	}
	ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
	resp, err := c.Invoke(ictx, &remoting.Command{Code: remoting.ReqPullMessage, ExtFields: map[string]string{
		"consumerGroup": "cg-record", "topic": topic, "queueId": "0", "queueOffset": "0", "maxMsgNums": "32",
		"sysFlag": "4", "commitOffset": "0", "suspendTimeoutMillis": "0", "subscription": "*", "subVersion": "0",
		"expressionType": "TAG"}})
	cancel()
	c.Close()
	if err != nil || resp.Code != remoting.CodeSuccess {
		t.Fatalf("pull through the proxy: %v %+v", err, resp)
	}
	msgs, err := remoting.DecodeStoredMessages(resp.Body)
	if err != nil || len(msgs) != 1 || string(msgs[0].Body) != "hello through the proxy" {
		t.Fatalf("pulled %d messages (%v)", len(msgs), err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	lines := parse(t, out.String())
	if lines[0].Meta["scenario"] != "unit" || lines[0].Meta["realNamesrv"] != b.NamesrvAddr() {
		t.Errorf("meta line %+v", lines[0].Meta)
	}
	connects := map[string]int{}
	requests := map[[2]int]int{} // conn, opaque -> code
	matched := map[int]int{}     // request code -> responses matched to it
	var sawNote, sawRewrite, sawSend, sawPullBody bool
	closes := 0
	for _, l := range lines {
		switch {
		case l.Note == "send one message":
			sawNote = true
		case l.Event == "connect":
			connects[l.Peer]++
		case l.Event == "close":
			closes++
		case l.Code != nil && l.Kind == "request" && l.Dir == "c>s":
			requests[[2]int{l.Conn, int(l.Opaque)}] = *l.Code
			if *l.Code == remoting.ReqSendMessage && l.Peer == "broker" && l.Body == "hello through the proxy" &&
				l.BodyEnc == "text" && l.ExtFields["topic"] == topic {
				sawSend = true
			}
		case l.Code != nil && l.Kind == "response":
			want, ok := requests[[2]int{l.Conn, int(l.Opaque)}]
			if !ok || want != l.ReqCode {
				t.Errorf("response on conn %d opaque %d: reqCode %d, the request had %d (seen %v)", l.Conn, l.Opaque, l.ReqCode, want, ok)
			}
			matched[l.ReqCode]++
			if l.ReqCode == remoting.ReqGetRouteInfoByTopic && *l.Code == 0 {
				if !strings.Contains(l.Rewrote, b.BrokerAddr()+" -> "+brokerAddr) || !strings.Contains(l.Body, b.BrokerAddr()) {
					t.Errorf("route reply: rewrite %q, recorded body %s", l.Rewrote, l.Body)
				}
				sawRewrite = true
			}
			if l.ReqCode == remoting.ReqPullMessage && l.BodyEnc == "base64" && len(l.Decoded) == 1 &&
				l.Decoded[0].Topic == topic && l.Decoded[0].Body == "hello through the proxy" {
				sawPullBody = true
			}
		}
	}
	if connects["namesrv"] == 0 || connects["broker"] == 0 {
		t.Errorf("connect events %v, want namesrv and broker ones", connects)
	}
	if closes == 0 {
		t.Error("no close events")
	}
	for _, code := range []int{remoting.ReqGetRouteInfoByTopic, remoting.ReqSendMessage, remoting.ReqPullMessage} {
		if matched[code] == 0 {
			t.Errorf("no response matched to request code %d", code)
		}
	}
	if !sawNote || !sawRewrite || !sawSend || !sawPullBody {
		t.Errorf("note %v, route rewrite %v, send frame %v, decoded pull %v\n%s", sawNote, sawRewrite, sawSend, sawPullBody, out.String())
	}
}

// TestProxyCloseEndsConnections checks that Close returns while clients
// still hold connections, and that the proxy refuses work afterwards.
func TestProxyCloseEndsConnections(t *testing.T) {
	b := rmqtest.Run(t)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	var out testenv.Logs
	p, err := record.Start(context.Background(), b.NamesrvAddr(), &out)
	if err != nil {
		t.Fatal(err)
	}
	c, err := remoting.Dial(context.Background(), p.NamesrvAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Invoke(ctx, &remoting.Command{Code: remoting.ReqGetRouteInfoByTopic,
		ExtFields: map[string]string{"topic": "TBW102"}}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return while a client was connected")
	}
	if _, err := c.Invoke(ctx, &remoting.Command{Code: remoting.ReqGetRouteInfoByTopic,
		ExtFields: map[string]string{"topic": "TBW102"}}); err == nil {
		t.Error("the proxied connection still answers after Close")
	}
	if _, err := p.BrokerAddr(b.BrokerAddr()); err == nil {
		t.Error("BrokerAddr after Close: no error")
	}
}

// TestProxyStopsWithContext checks that a cancelled ctx stops the proxy.
func TestProxyStopsWithContext(t *testing.T) {
	b := rmqtest.Run(t)
	ctx, cancel := context.WithCancel(context.Background())
	p, err := record.Start(ctx, b.NamesrvAddr(), &testenv.Logs{})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if c, err := remoting.Dial(context.Background(), p.NamesrvAddr()); err == nil {
		c.Close()
		t.Error("the proxy still accepts connections after its ctx ended")
	}
}
