package consumer_test

import (
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// slowFirstProxy forwards TCP to target, except that the first
// connection gets no answer for hold (a name server in a GC pause, a
// load balancer warming up): every later connection is served normally.
func slowFirstProxy(t *testing.T, target string, hold time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var n atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			first := n.Add(1) == 1
			go func() {
				defer c.Close()
				if first {
					time.Sleep(hold)
				}
				u, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer u.Close()
				go io.Copy(u, c)
				io.Copy(c, u)
			}()
		}
	}()
	return ln.Addr().String()
}

// TestACLCheckOutlastsASlowNameServer: Start's ACL check is
// meant to turn "the official client starts and then fails every pull
// without a word" into ErrAccessDenied. It gives up silently on any
// error before the broker answers: a name server slow to answer the
// check's route query (5 s accessCheckTimeout) makes Start succeed with
// an account the broker refuses, and the consumer then consumes nothing,
// silently. Against the directly reachable name server the same account
// is refused at Start. Needs the ACL broker (RMQ_NAMESRV=127.0.0.1:59876).
func TestACLCheckOutlastsASlowNameServer(t *testing.T) {
	admin := testenv.ACLAccount(t, "RMQ_ACL_ADMIN")
	env := testenv.NewRocketMQ(t)
	if !env.Real() {
		t.Skip("needs the ACL broker")
	}
	group, topic := testenv.Name(t, "G"), testenv.Name(t, "T")
	env.CreateTopicAs(t, admin, topic, 1)
	bogus := producer.Credentials{AccessKey: "hostile2-unknown", SecretKey: "hostile2-unknown-secret"}
	h := func(ctx context.Context, m *consumer.Message) error { return nil }

	direct, err := consumer.New(env.NameServers(), group, topic, h, consumer.WithCredentials(bogus),
		consumer.WithParker(&memoryParker{}))
	if err != nil {
		t.Fatal(err)
	}
	err = direct.Start()
	direct.Close()
	if !errors.Is(err, consumer.ErrAccessDenied) {
		t.Fatalf("control: direct Start = %v; want ErrAccessDenied", err)
	}

	ns := slowFirstProxy(t, env.NameServers()[0], 6*time.Second)
	c, err := consumer.New([]string{ns}, group, topic, h, consumer.WithCredentials(bogus),
		consumer.WithParker(&memoryParker{}))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = c.Start()
	took := time.Since(start)
	c.Close()
	if !errors.Is(err, consumer.ErrAccessDenied) {
		t.Fatalf("Start through a name server slow to answer once returned %v after %v; want ErrAccessDenied "+
			"(the account is refused by the only broker): the check gave up silently and the consumer started", err, took)
	}
}
