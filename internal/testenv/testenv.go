// Package testenv picks the backends a test runs against: real services
// when RMQ_NAMESRV (with RMQ_BROKER for admin calls), MYSQL_DSN or
// REDIS_ADDR are set, embedded ones otherwise (rmqtest for RocketMQ).
//
// A test that needs a service with no embedded stand-in (MySQL) is
// skipped with a message naming the variable, unless RELIABLEMQ_REQUIRE
// lists the backend ("mysql,redis"): then it fails, so CI cannot pass by
// skipping. With "rocketmq" listed, a test that would fall back to rmqtest
// fails instead.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/clientlog"
	"github.com/seed157d4c4d/reliablemq/internal/remoting"
	"github.com/seed157d4c4d/reliablemq/producer"
	"github.com/seed157d4c4d/reliablemq/rmqtest"
)

var quiet sync.Once

// QuietClientLogs silences the official client's process-wide logger, once
// per test binary.
func QuietClientLogs() {
	quiet.Do(func() { clientlog.Install(nil) })
}

// RocketMQ is the broker a test talks to.
type RocketMQ struct {
	Namesrv string
	Broker  string
	// Embedded is the rmqtest broker, nil on a real cluster.
	Embedded *rmqtest.Broker
}

// NewRocketMQ returns the real cluster named by RMQ_NAMESRV and RMQ_BROKER,
// or starts an rmqtest broker that is closed when the test ends.
func NewRocketMQ(t testing.TB, opts ...rmqtest.Option) *RocketMQ {
	t.Helper()
	QuietClientLogs()
	if ns := os.Getenv("RMQ_NAMESRV"); ns != "" {
		return &RocketMQ{Namesrv: ns, Broker: os.Getenv("RMQ_BROKER")}
	}
	if required("rocketmq") {
		t.Fatalf("testenv: a real RocketMQ is required (RELIABLEMQ_REQUIRE) but RMQ_NAMESRV is not set")
	}
	b := rmqtest.Run(t, opts...)
	return &RocketMQ{Namesrv: b.NamesrvAddr(), Broker: b.BrokerAddr(), Embedded: b}
}

// Real reports whether the tests run against a real cluster.
func (r *RocketMQ) Real() bool { return r.Embedded == nil }

// NameServers is the name server list for the client options.
func (r *RocketMQ) NameServers() []string { return remoting.SplitAddrs(r.Namesrv) }

// RequireEmbedded returns the rmqtest broker, or skips the test on a real
// cluster: fault injection and clock control exist only in rmqtest.
func (r *RocketMQ) RequireEmbedded(t testing.TB) *rmqtest.Broker {
	t.Helper()
	if r.Embedded == nil {
		t.Skip("needs rmqtest (fault injection or clock control); RMQ_NAMESRV points at a real cluster")
	}
	return r.Embedded
}

// CreateTopic creates topic with the given number of queues and waits
// until the name server routes it.
func (r *RocketMQ) CreateTopic(t testing.TB, topic string, queues int) {
	t.Helper()
	r.CreateTopicAs(t, producer.Credentials{}, topic, queues)
}

// CreateTopicAs is [RocketMQ.CreateTopic] signed with an ACL account's
// keys (an admin account, on a broker with ACL on).
func (r *RocketMQ) CreateTopicAs(t testing.TB, cr producer.Credentials, topic string, queues int) {
	t.Helper()
	if r.Embedded != nil {
		if err := r.Embedded.CreateTopic(topic, queues); err != nil {
			t.Fatalf("create topic %s: %v", topic, err)
		}
		return
	}
	if r.Broker == "" {
		t.Fatalf("RMQ_BROKER must be set with RMQ_NAMESRV for admin calls")
	}
	auth := remoting.Credentials(cr)
	err := remoting.CreateTopic(context.Background(), auth, r.NameServers(), remoting.SplitAddrs(r.Broker), topic, queues)
	if err != nil {
		t.Fatal(err)
	}
}

var unsafeChars = regexp.MustCompile(`[^a-zA-Z0-9_-]+`)

// Name returns a topic or group name unique to this test run: prefix, the
// test's name and a random suffix, within the broker's 127-byte limit.
func Name(t testing.TB, prefix string) string {
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatalf("random: %v", err)
	}
	n := unsafeChars.ReplaceAllString(t.Name(), "_")
	if len(n) > 60 {
		n = n[len(n)-60:]
	}
	return prefix + "_" + n + "_" + hex.EncodeToString(rnd[:])
}

// required reports whether RELIABLEMQ_REQUIRE lists backend.
func required(backend string) bool {
	for _, b := range strings.Split(os.Getenv("RELIABLEMQ_REQUIRE"), ",") {
		if strings.TrimSpace(b) == backend {
			return true
		}
	}
	return false
}

// missing skips the test, or fails it when the backend is required.
func missing(t testing.TB, backend, variable string) {
	t.Helper()
	if required(backend) {
		t.Fatalf("testenv: %s is required (RELIABLEMQ_REQUIRE) but %s is not set", backend, variable)
	}
	t.Skipf("testenv: set %s to run this test against %s", variable, backend)
}

// SkipUnderRace skips a test that starts the official push consumer when
// the race detector is on. The client v2.1.2 races with itself: its
// rebalance writes SubscriptionData.SubVersion while its route refresh
// goroutine clones the same struct, unsynchronized, and the detector
// fails any test during which that happens. Such tests run in the
// non-race pass of .ci/run; our own code on those paths is race-checked
// by tests that drive it without the push consumer.
func SkipUnderRace(t testing.TB) {
	t.Helper()
	if raceEnabled {
		t.Skip("official client v2.1.2 races internally in push-consumer rebalance; runs in the non-race pass")
	}
}

// ConsumerOffset asks the broker for group's committed offset on
// topic/queue over the wire (QUERY_CONSUMER_OFFSET), so it works on rmqtest
// and on a real broker alike. A group with no committed offset reads as 0.
func (r *RocketMQ) ConsumerOffset(t testing.TB, group, topic string, queue int) int64 {
	t.Helper()
	return r.offsetAt(t, r.Broker, &remoting.Command{Code: remoting.ReqQueryConsumerOffset,
		ExtFields: map[string]string{"consumerGroup": group, "topic": topic, "queueId": strconv.Itoa(queue)}})
}

// MaxOffset asks every broker of r for the end of topic/queue
// (GET_MAX_OFFSET) and returns the sum: how many messages the queue
// holds on all of them, 0 where the topic does not exist.
func (r *RocketMQ) MaxOffset(t testing.TB, topic string, queue int) int64 {
	t.Helper()
	return r.MaxOffsetAs(t, producer.Credentials{}, topic, queue)
}

// MaxOffsetAs is [RocketMQ.MaxOffset] signed with an ACL account's keys.
func (r *RocketMQ) MaxOffsetAs(t testing.TB, cr producer.Credentials, topic string, queue int) int64 {
	t.Helper()
	var sum int64
	for _, b := range remoting.SplitAddrs(r.Broker) {
		req := &remoting.Command{Code: remoting.ReqGetMaxOffset,
			ExtFields: map[string]string{"topic": topic, "queueId": strconv.Itoa(queue)}}
		if cr.AccessKey != "" {
			remoting.Sign(req, cr.AccessKey, cr.SecretKey, cr.SecurityToken)
		}
		sum += r.offsetAt(t, b, req)
	}
	return sum
}

// offsetAt sends req to broker and reads the offset of its answer: 0
// when the broker has none (QUERY_NOT_FOUND). A broker answers
// GET_MAX_OFFSET of a topic it does not know with offset 0.
func (r *RocketMQ) offsetAt(t testing.TB, broker string, req *remoting.Command) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := remoting.Dial(ctx, broker)
	if err != nil {
		t.Fatalf("query offset: %v", err)
	}
	defer c.Close()
	resp, err := c.Invoke(ctx, req)
	if err != nil {
		t.Fatalf("query offset: %v", err)
	}
	if resp.Code == remoting.CodeQueryNotFound {
		return 0
	}
	if resp.Code != remoting.CodeSuccess {
		t.Fatalf("query offset: code %d %s", resp.Code, resp.Remark)
	}
	off, err := strconv.ParseInt(resp.ExtFields["offset"], 10, 64)
	if err != nil {
		t.Fatalf("query offset: %v", err)
	}
	return off
}

// ACLAccount reads an ACL account from variable ("accessKey:secretKey"),
// set when the broker runs with ACL on (scripts/rocketmq start --acl
// deploy/rocketmq/acl-test.yml); without it the test is skipped.
func ACLAccount(t testing.TB, variable string) producer.Credentials {
	t.Helper()
	ak, sk, ok := strings.Cut(os.Getenv(variable), ":")
	if !ok {
		t.Skipf("needs a broker with ACL on (scripts/rocketmq start --acl deploy/rocketmq/acl-test.yml) and %s=accessKey:secretKey", variable)
	}
	return producer.Credentials{AccessKey: ak, SecretKey: sk}
}

// PullAndCommit consumes the first n messages of topic's queue for group
// over the wire, as a consumer that then stops would: it pulls them
// (PULL_MESSAGE with the subscription in the request, which also makes a
// real broker create the group's subscription config) and commits offset
// n (UPDATE_CONSUMER_OFFSET). A real broker may take a moment to make sent
// messages pullable (a committed transaction's message, a loaded
// machine); it retries for up to a minute.
func (r *RocketMQ) PullAndCommit(t testing.TB, group, topic string, queue, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := remoting.Dial(ctx, r.Broker)
	if err != nil {
		t.Fatalf("pull: %v", err)
	}
	defer c.Close()
	q := strconv.Itoa(queue)
	got := 0
	for got < n {
		resp, err := c.Invoke(ctx, &remoting.Command{Code: remoting.ReqPullMessage, ExtFields: map[string]string{
			"consumerGroup": group, "topic": topic, "queueId": q, "queueOffset": strconv.Itoa(got),
			"maxMsgNums": strconv.Itoa(n - got), "sysFlag": "4", "commitOffset": "0", "suspendTimeoutMillis": "0",
			"subscription": "*", "subVersion": "0", "expressionType": "TAG"}})
		if err != nil {
			t.Fatalf("pull %s/%d at %d: %v", topic, queue, got, err)
		}
		if resp.Code == remoting.CodeSuccess {
			msgs, err := remoting.DecodeStoredMessages(resp.Body)
			if err != nil {
				t.Fatalf("pull %s/%d: %v", topic, queue, err)
			}
			got += min(len(msgs), n-got)
			continue
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pull %s/%d: %d of %d messages, last answer code %d %s", topic, queue, got, n, resp.Code, resp.Remark)
		case <-time.After(50 * time.Millisecond):
		}
	}
	resp, err := c.Invoke(ctx, &remoting.Command{Code: remoting.ReqUpdateConsumerOffset, ExtFields: map[string]string{
		"consumerGroup": group, "topic": topic, "queueId": q, "commitOffset": strconv.Itoa(n)}})
	if err != nil || resp.Code != remoting.CodeSuccess {
		t.Fatalf("commit %s/%d offset %d: %v %+v", topic, queue, n, err, resp)
	}
}

// Eventually waits up to limit for cond, polling every 50 ms and moving
// rmqtest's clock a second each time, so retries and delays come due
// without sleeping through them; it fails the test after limit.
func (r *RocketMQ) Eventually(t testing.TB, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting until %s", limit, what)
		}
		if r.Embedded != nil {
			r.Embedded.Advance(time.Second)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
