package producer_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/tcptest"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// blackHole accepts TCP connections and never answers (a name server
// host whose JVM is wedged, a firewall that accepts then drops).
func blackHole(t *testing.T) string {
	t.Helper()
	return tcptest.Serve(t, "127.0.0.1:0", func(net.Conn) {})
}

// TestHostile2BlackHoleNameServerIsNotReportedUnreachable: the probe
// behind ErrNameServerUnreachable counts a name server as reachable when
// it accepts a TCP connection. One that accepts and never answers leaves
// the producer as unable to route as one that refuses, but the send's
// error is the client's bare "route info not found", the same as a topic
// that does not exist: an operator is sent looking for a missing topic
// instead of a dead name server.
func TestHostile2BlackHoleNameServerIsNotReportedUnreachable(t *testing.T) {
	ns := blackHole(t)
	p, err := producer.New([]string{ns}, producer.WithRetryBackoff(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	_, err = p.Send(ctx, producer.Message{Topic: "hostile2_topic", Body: []byte("x")})
	if err == nil {
		t.Fatal("send through a black-hole name server succeeded")
	}
	if !errors.Is(err, producer.ErrNameServerUnreachable) {
		t.Fatalf("send through a name server that never answers failed after %v with %v; want ErrNameServerUnreachable",
			time.Since(start).Round(time.Millisecond), err)
	}
}
