package producer_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/remoting"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/producer"
	"github.com/seed157d4c4d/reliablemq/rmqtest"
)

// optionalACL reads an "accessKey:secretKey" account from variable, or
// none when it is unset (a broker without ACL).
func optionalACL(variable string) producer.Credentials {
	ak, sk, _ := strings.Cut(os.Getenv(variable), ":")
	return producer.Credentials{AccessKey: ak, SecretKey: sk}
}

// committedCount is how many messages topic's queues hold on every
// master (GET_MAX_OFFSET, signed): a half message counts once committed.
func committedCount(t *testing.T, env *testenv.RocketMQ, creds producer.Credentials, topic string, queues int) int64 {
	t.Helper()
	if b := env.Embedded; b != nil {
		return int64(len(b.Messages(topic)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var n int64
	for _, addr := range remoting.SplitAddrs(env.Broker) {
		c, err := remoting.Dial(ctx, addr)
		if err != nil {
			t.Fatal(err)
		}
		for q := range queues {
			req := &remoting.Command{Code: remoting.ReqGetMaxOffset, ExtFields: map[string]string{"topic": topic, "queueId": strconv.Itoa(q)}}
			remoting.Sign(req, creds.AccessKey, creds.SecretKey, "")
			resp, err := c.Invoke(ctx, req)
			if err != nil || resp.Code != remoting.CodeSuccess {
				c.Close()
				t.Fatalf("max offset %s/%d on %s: %v %+v", topic, q, addr, err, resp)
			}
			off, _ := strconv.ParseInt(resp.ExtFields["offset"], 10, 64)
			n += off
		}
		c.Close()
	}
	return n
}

// TestReview17CheckBacksAfterCrashReachEveryMaster: half messages on
// every master of the cluster, in a namespace, with bodies the client
// compresses, signed when the broker has ACL on (RMQ_ACL_APP,
// RMQ_ACL_ADMIN); their producer dies, and a new producer of the group,
// sending nothing, answers every check-back with commit. Each question
// names the bare topic, the keys and the whole body, and every message is
// committed.
func TestReview17CheckBacksAfterCrashReachEveryMaster(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t, rmqtest.WithTransactionCheck(6*time.Second, 60*time.Second, 15))
	app, admin := optionalACL("RMQ_ACL_APP"), optionalACL("RMQ_ACL_ADMIN")
	const ns, queues, n = "r17", 2, 6
	topic, group := testenv.Name(t, "T"), testenv.Name(t, "PG")
	env.CreateTopicAs(t, admin, ns+"%"+topic, queues)
	opts := []producer.TxOption{producer.WithNamespace(ns), producer.WithCredentials(app)}
	first, err := producer.NewTransactional(env.NameServers(), group, &checkFunc{answer: producer.TxUnknown}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	bodies := map[string][]byte{}
	for i := range n {
		body := bytes.Repeat([]byte("body "+strconv.Itoa(i)+" "), 1000) // > 4 KiB: compressed
		var ids []string
		if _, err := first.SendInTransaction(ctxT(t), producer.Message{Topic: topic, Keys: []string{"k" + strconv.Itoa(i)}, Body: body},
			answer(producer.TxUnknown, &ids)); err != nil {
			t.Fatal(err)
		}
		bodies[ids[0]] = body
	}
	if err := first.Close(); err != nil { // the process died
		t.Fatal(err)
	}
	checker := &checkFunc{answer: producer.TxCommit}
	newTransactional(t, env.NameServers(), group, checker, opts...) // started again; sends nothing
	answered := func() bool {
		seen := map[string]bool{}
		for _, q := range checker.questions() {
			seen[q.MsgID] = true
		}
		return len(seen) == n
	}
	if b := env.Embedded; b != nil {
		last := time.Now()
		env.Eventually(t, "every check-back", time.Minute, func() bool {
			if time.Since(last) > 3*time.Second {
				b.Advance(61 * time.Second)
				last = time.Now()
			}
			return answered()
		})
	} else {
		env.Eventually(t, "every check-back", 3*time.Minute, answered)
	}
	for _, q := range checker.questions() {
		if q.Topic != topic || len(q.Keys) != 1 || !strings.HasPrefix(q.Keys[0], "k") || !bytes.Equal(q.Body, bodies[q.MsgID]) {
			t.Fatalf("asked about %s of %s keyed %q with a %d-byte body, want %s and the %d bytes sent", q.MsgID, q.Topic, q.Keys, len(q.Body), topic, len(bodies[q.MsgID]))
		}
	}
	env.Eventually(t, "every message committed", 30*time.Second, func() bool {
		return committedCount(t, env, app, ns+"%"+topic, queues) == n
	})
}

// TestReview17CheckBacksAfterABrokerRestart: a producer of the group runs
// while broker-b of a real two-master cluster restarts
// (REVIEW17_RMQ_DIR names the scripts/rocketmq folder); half messages
// a crashed producer of the group left on both masters afterwards are
// answered by it, over the connection it makes again.
func TestReview17CheckBacksAfterABrokerRestart(t *testing.T) {
	dir := os.Getenv("REVIEW17_RMQ_DIR")
	if dir == "" {
		t.Skip("needs REVIEW17_RMQ_DIR: a scripts/rocketmq two-master cluster to restart")
	}
	env := testenv.NewRocketMQ(t)
	app, admin := optionalACL("RMQ_ACL_APP"), optionalACL("RMQ_ACL_ADMIN")
	const queues, n = 2, 6
	topic, group := testenv.Name(t, "T"), testenv.Name(t, "PG")
	env.CreateTopicAs(t, admin, topic, queues)
	opts := []producer.TxOption{producer.WithCredentials(app)}
	checker := &checkFunc{answer: producer.TxCommit}
	newTransactional(t, env.NameServers(), group, checker, opts...)
	for _, args := range [][]string{{"stop", "-d", dir, "broker-b"}, {"restart", "-d", dir, "broker-b"}} {
		if out, err := exec.Command("../scripts/rocketmq", args...).CombinedOutput(); err != nil {
			t.Fatalf("rocketmq %v: %v\n%s", args, err, out)
		}
	}
	first, err := producer.NewTransactional(env.NameServers(), group, &checkFunc{answer: producer.TxUnknown}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		var ids []string
		msg := producer.Message{Topic: topic, Keys: []string{"k" + strconv.Itoa(i)}, Body: []byte("x")}
		env.Eventually(t, "a half message stored", time.Minute, func() bool {
			_, err := first.SendInTransaction(ctxT(t), msg, answer(producer.TxUnknown, &ids))
			return err == nil
		})
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	env.Eventually(t, "every message committed", 4*time.Minute, func() bool {
		return committedCount(t, env, app, topic, queues) == n
	})
}
