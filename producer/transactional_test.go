package producer_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/record"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/producer"
	"github.com/seed157d4c4d/reliablemq/rmqtest"
)

// checkFunc is a TxChecker that records what it was asked.
type checkFunc struct {
	mu     sync.Mutex
	asked  []producer.HalfMessage
	answer producer.TxState
}

func (c *checkFunc) CheckTx(_ context.Context, h producer.HalfMessage) producer.TxState {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.asked = append(c.asked, h)
	return c.answer
}

func (c *checkFunc) questions() []producer.HalfMessage {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]producer.HalfMessage(nil), c.asked...)
}

func newTransactional(t *testing.T, ns []string, group string, c producer.TxChecker, opts ...producer.TxOption) *producer.Transactional {
	t.Helper()
	p, err := producer.NewTransactional(ns, group, c, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return p
}

func answer(s producer.TxState, ids *[]string) func(context.Context, string) producer.TxState {
	return func(_ context.Context, msgID string) producer.TxState {
		*ids = append(*ids, msgID)
		return s
	}
}

func TestTransactionalCommitRollbackAndCheckBack(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t, rmqtest.WithTransactionCheck(6*time.Second, 60*time.Second, 15))
	b := env.RequireEmbedded(t)
	topic, group := testenv.Name(t, "T"), testenv.Name(t, "PG")
	env.CreateTopic(t, topic, 4)
	checker := &checkFunc{answer: producer.TxCommit}
	p := newTransactional(t, env.NameServers(), group, checker)
	visible := func(key string) int {
		n := 0
		for _, m := range b.Messages(topic) {
			if len(m.Keys) == 1 && m.Keys[0] == key {
				n++
			}
		}
		return n
	}
	msg := func(key string) producer.Message {
		return producer.Message{Topic: topic, Keys: []string{key}, Body: []byte(key), ShardingKey: "order-1"}
	}
	var ids []string
	res, err := p.SendInTransaction(ctxT(t), msg("commit"), answer(producer.TxCommit, &ids))
	if err != nil || res.State != producer.TxCommit || len(ids) != 1 || ids[0] == "" || res.MsgID != ids[0] {
		t.Fatalf("commit: %+v %v, local saw ids %v", res, err, ids)
	}
	// The orderly selector: a sharding key goes where a plain producer sends it.
	plain := newProducer(t, env)
	pres, err := plain.Send(ctxT(t), msg("plain"))
	if err != nil || pres.Queue != res.Queue {
		t.Fatalf("plain send of the same sharding key on queue %d (%v), transactional on %d", pres.Queue, err, res.Queue)
	}
	if res, err := p.SendInTransaction(ctxT(t), msg("rollback"), answer(producer.TxRollback, &ids)); err != nil || res.State != producer.TxRollback {
		t.Fatalf("rollback: %+v %v", res, err)
	}
	if res, err := p.SendInTransaction(ctxT(t), msg("unknown"), answer(producer.TxUnknown, &ids)); err != nil || res.State != producer.TxUnknown {
		t.Fatalf("unknown: %+v %v", res, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for (b.HalfMessages() > 1 || b.Producers(group) == 0) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if visible("commit") != 1 || visible("rollback") != 0 || visible("unknown") != 0 {
		t.Fatalf("before check-back: commit %d rollback %d unknown %d", visible("commit"), visible("rollback"), visible("unknown"))
	}
	b.Advance(7 * time.Second) // the broker checks back
	for visible("unknown") == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	q := checker.questions()
	if visible("unknown") != 1 || len(q) != 1 || q[0].Topic != topic || strings.Join(q[0].Keys, ",") != "unknown" || q[0].MsgID != ids[2] {
		t.Fatalf("after check-back: visible %d, checker asked %+v (want the real topic, key and msg id %s)", visible("unknown"), q, ids[2])
	}
}

func TestTransactionalRefusesWhatAPlainSendWould(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t)
	topic := testenv.Name(t, "T")
	env.CreateTopic(t, topic, 2)
	p := newTransactional(t, env.NameServers(), testenv.Name(t, "PG"), &checkFunc{}, producer.WithMaxBodySize(16),
		producer.WithOrderedTopics(topic))
	for name, m := range map[string]producer.Message{
		"delay":     {Topic: topic, Keys: []string{"k"}, Body: []byte("x"), ShardingKey: "s", Delay: time.Second},
		"topic":     {Topic: "bad topic", Keys: []string{"k"}, Body: []byte("x"), ShardingKey: "s"},
		"body size": {Topic: topic, Keys: []string{"k"}, Body: make([]byte, 17), ShardingKey: "s"},
		"reserved":  {Topic: topic, Keys: []string{"k"}, Body: []byte("x"), ShardingKey: "s", Properties: map[string]string{"KEYS": "x"}},
		"ordered":   {Topic: topic, Keys: []string{"k"}, Body: []byte("x")},
	} {
		ran := false
		_, err := p.SendInTransaction(ctxT(t), m, func(context.Context, string) producer.TxState { ran = true; return producer.TxCommit })
		var se *producer.SendError
		if !errors.As(err, &se) || se.Outcome != producer.Permanent || ran {
			t.Errorf("%s: %v (local ran: %v), want a permanent *SendError before any local transaction", name, err, ran)
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if _, err := p.SendInTransaction(ctxT(t), producer.Message{Topic: topic, Keys: []string{"k"}, Body: []byte("x"), ShardingKey: "s"},
		func(context.Context, string) producer.TxState { return producer.TxCommit }); !errors.Is(err, producer.ErrClosed) {
		t.Fatalf("send after close: %v", err)
	}
	if _, err := producer.NewTransactional(env.NameServers(), "", &checkFunc{}); err == nil {
		t.Error("empty group accepted")
	}
	if _, err := producer.NewTransactional(env.NameServers(), "g", nil); err == nil {
		t.Error("nil checker accepted")
	}
}

// TestTransactionalSignsRequests checks, through a recording proxy, that
// the half message goes out signed with the credentials (rmqtest does not
// enforce ACL; TestACLEndToEnd in package consumer runs a real one).
func TestTransactionalSignsRequests(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t)
	env.RequireEmbedded(t)
	topic := testenv.Name(t, "T")
	env.CreateTopic(t, topic, 2)
	var transcript testenv.Logs
	proxy, err := record.Start(ctxT(t), env.Namesrv, &transcript)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	p := newTransactional(t, []string{proxy.NamesrvAddr()}, testenv.Name(t, "PG"), &checkFunc{},
		producer.WithCredentials(producer.Credentials{AccessKey: "tx-access-key", SecretKey: "tx-secret"}))
	var ids []string
	if _, err := p.SendInTransaction(ctxT(t), producer.Message{Topic: topic, Keys: []string{"k"}, Body: []byte("x")},
		answer(producer.TxCommit, &ids)); err != nil {
		t.Fatal(err)
	}
	if err := proxy.Close(); err != nil {
		t.Fatal(err)
	}
	out := transcript.String()
	if !strings.Contains(out, "tx-access-key") || !strings.Contains(out, "Signature") || strings.Contains(out, "tx-secret") {
		t.Fatal("the transactional send was not signed with the access key (or leaked the secret)")
	}
}

// gatedChecker blocks every check until release is closed, after saying
// it was asked; it answers TxCommit, or panics on check panicN (1-based;
// 0: never).
type gatedChecker struct {
	asked   chan struct{}
	once    sync.Once
	release chan struct{}
	n       atomic.Int32
	panicN  int32
}

func newGatedChecker(panicN int32) *gatedChecker {
	return &gatedChecker{asked: make(chan struct{}), release: make(chan struct{}), panicN: panicN}
}

func (c *gatedChecker) CheckTx(context.Context, producer.HalfMessage) producer.TxState {
	n := c.n.Add(1)
	c.once.Do(func() { close(c.asked) })
	<-c.release
	if n == c.panicN {
		panic("checker bug")
	}
	return producer.TxCommit
}

// closeAsync starts p.Close; the channel gets its result.
func closeAsync(p *producer.Transactional) <-chan error {
	closed := make(chan error, 1)
	go func() { closed <- p.Close() }()
	return closed
}

// awaitClose returns Close's result, failing the test if Close does not
// return within 30 s.
func awaitClose(t *testing.T, closed <-chan error) error {
	t.Helper()
	select {
	case err := <-closed:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return")
		return nil
	}
}

// waitClosing waits until p refuses sends: Close has begun.
func waitClosing(t *testing.T, p *producer.Transactional) {
	t.Helper()
	delayed := producer.Message{Topic: "closing-probe", Body: []byte("b"), Delay: time.Second}
	waitFor(t, "Close to begin", func() bool {
		_, err := p.SendInTransaction(ctxT(t), delayed, func(context.Context, string) producer.TxState { return producer.TxRollback })
		return errors.Is(err, producer.ErrClosed)
	})
}

// A check-back whose checker answers while Close is waiting for it: Close
// returns only after the answer went to the broker (the official client
// sends it after the checker returns, and its Shutdown would otherwise race
// that send: a data race under -race, and a lost answer). A checker that
// panics is answered unknown, and the client keeps its check-back
// goroutine.
func TestTransactionalCloseWaitsForACheckBackAnswer(t *testing.T) {
	t.Parallel()
	for _, panics := range []bool{false, true} {
		t.Run(map[bool]string{false: "answers", true: "panics"}[panics], func(t *testing.T) {
			t.Parallel()
			env := testenv.NewRocketMQ(t, rmqtest.WithTransactionCheck(6*time.Second, 60*time.Second, 15))
			b := env.RequireEmbedded(t)
			topic, group := testenv.Name(t, "T"), testenv.Name(t, "PG")
			env.CreateTopic(t, topic, 2)
			panicN := int32(0)
			if panics {
				panicN = 1
			}
			checker := newGatedChecker(panicN)
			logs := &testenv.Logs{}
			p, err := producer.NewTransactional(env.NameServers(), group, checker, producer.WithLogger(logs.Logger()))
			if err != nil {
				t.Fatal(err)
			}
			if !producer.FoundCheckQueue(p) {
				t.Fatal("the official client's check-back queue was not found: Close cannot wait for a check-back's answer")
			}
			var ids []string
			msg := producer.Message{Topic: topic, Keys: []string{"k"}, Body: []byte("b")}
			if _, err := p.SendInTransaction(ctxT(t), msg, answer(producer.TxUnknown, &ids)); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the producer to register", func() bool { return b.Producers(group) > 0 })
			b.Advance(7 * time.Second)
			select {
			case <-checker.asked:
			case <-time.After(10 * time.Second):
				t.Fatal("no check-back")
			}
			closed := closeAsync(p)
			waitClosing(t, p)
			close(checker.release)
			if err := awaitClose(t, closed); err != nil {
				t.Fatalf("close: %v", err)
			}
			visible := func() int {
				n := 0
				for _, m := range b.Messages(topic) {
					if len(m.Keys) == 1 && m.Keys[0] == "k" {
						n++
					}
				}
				return n
			}
			if panics {
				if !strings.Contains(logs.String(), "transaction checker panicked") {
					t.Errorf("a panicking checker was not logged: %s", logs.String())
				}
				if n := visible(); n != 0 {
					t.Errorf("a panicking checker's message became visible %d times", n)
				}
				return
			}
			waitFor(t, "the check-back's commit, sent before Close returned, to reach the broker", func() bool { return visible() == 1 })
		})
	}
}

// waitFor polls cond for up to 10 s without moving rmqtest's clock.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestTransactionalInANamespace: a transactional producer in a namespace
// stores its messages in "ns%topic" under the group "ns%group", and its
// checker is asked about the bare topic.
func TestTransactionalInANamespace(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t, rmqtest.WithTransactionCheck(6*time.Second, 60*time.Second, 15))
	b := env.RequireEmbedded(t)
	topic, group := testenv.Name(t, "T"), testenv.Name(t, "PG")
	n := testenv.Name(t, "ns")
	ns := "ns" + n[len(n)-8:]
	env.CreateTopic(t, ns+"%"+topic, 2)
	checker := &checkFunc{answer: producer.TxCommit}
	p := newTransactional(t, env.NameServers(), group, checker, producer.WithNamespace(ns))
	var ids []string
	for _, key := range []string{"commit", "unknown"} {
		s := producer.TxCommit
		if key == "unknown" {
			s = producer.TxUnknown
		}
		m := producer.Message{Topic: topic, Keys: []string{key}, Body: []byte(key)}
		if _, err := p.SendInTransaction(ctxT(t), m, answer(s, &ids)); err != nil {
			t.Fatalf("%s: %v", key, err)
		}
	}
	waitFor(t, "the producer to register as "+ns+"%"+group, func() bool { return b.Producers(ns+"%"+group) > 0 })
	b.Advance(7 * time.Second)
	waitFor(t, "both messages in the namespaced topic", func() bool { return len(b.Messages(ns+"%"+topic)) == 2 })
	if q := checker.questions(); len(q) != 1 || q[0].Topic != topic || q[0].MsgID != ids[1] {
		t.Fatalf("checker asked %+v; want the bare topic %s and msg id %s", q, topic, ids[1])
	}
	if n := len(b.Messages(topic)); n != 0 {
		t.Fatalf("%d messages in the bare topic", n)
	}
}
