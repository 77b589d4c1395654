package consumer_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/deadletter"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// TestACLEndToEnd runs against a broker with ACL on (scripts/rocketmq
// start --acl deploy/rocketmq/acl-test.yml, with RMQ_ACL_APP and
// RMQ_ACL_ADMIN set to "accessKey:secretKey"): an account allowed to send
// and consume gets its messages handled, retried (the retry copies this
// package stores are signed too) and parked; a denied account's send fails
// with an error, and nothing of it is stored.
func TestACLEndToEnd(t *testing.T) {
	app, admin := testenv.ACLAccount(t, "RMQ_ACL_APP"), testenv.ACLAccount(t, "RMQ_ACL_ADMIN")
	env := testenv.NewRocketMQ(t)
	testenv.SkipUnderRace(t)
	group, topic := testenv.Name(t, "G"), testenv.Name(t, "T")
	for _, tp := range []string{topic, "%RETRY%" + group} {
		env.CreateTopicAs(t, admin, tp, 1)
	}
	db := testenv.MySQL(t)
	dead, err := deadletter.NewTable(db)
	if err != nil {
		t.Fatal(err)
	}
	p, err := producer.New(env.NameServers(), producer.WithCredentials(app))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	var mu sync.Mutex
	calls := map[string]int{}
	c, err := consumer.New(env.NameServers(), group, topic, func(ctx context.Context, m *consumer.Message) error {
		mu.Lock()
		defer mu.Unlock()
		calls[consumer.Key(m)]++
		switch {
		case consumer.Key(m) == "poison":
			return errors.New("never works")
		case consumer.Key(m) == "flaky" && calls["flaky"] == 1:
			return errors.New("works the second time")
		}
		return nil
	}, consumer.WithCredentials(app), consumer.WithParker(dead), consumer.WithMaxAttempts(2),
		consumer.WithRetryDelay(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx := context.Background()
	for _, k := range []string{"ok", "flaky", "poison"} {
		if _, err := p.Send(ctx, producer.Message{Topic: topic, Keys: []string{k}, Body: []byte(k)}); err != nil {
			t.Fatalf("signed send %s: %v", k, err)
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for c.Stats().Handled < 2 || c.Stats().Parked < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v after 2 minutes; calls %v", c.Stats(), calls)
		}
		time.Sleep(200 * time.Millisecond)
	}
	mu.Lock()
	if calls["ok"] != 1 || calls["flaky"] != 2 || calls["poison"] != 2 {
		t.Errorf("calls %v, want ok 1, flaky 2, poison 2", calls)
	}
	mu.Unlock()
	if st := c.Stats(); st.StoreErrors != 0 {
		t.Errorf("stats %+v: a signed retry copy was refused", st)
	}

	denied := producer.Credentials{AccessKey: "reliablemq-denied", SecretKey: "denied-secret-key"}
	wrongSecret := producer.Credentials{AccessKey: app.AccessKey, SecretKey: app.SecretKey + "x"}
	for _, cr := range []producer.Credentials{denied, wrongSecret, {}} {
		refused, err := consumer.New(env.NameServers(), group+"-x", topic, func(context.Context, *consumer.Message) error {
			t.Error("a consumer the ACL refuses handled a message")
			return nil
		}, consumer.WithCredentials(cr), consumer.WithParker(dead))
		if err != nil {
			t.Fatal(err)
		}
		err = refused.Start()
		refused.Close()
		if !errors.Is(err, consumer.ErrAccessDenied) {
			t.Errorf("consumer with %v: Start = %v, want ErrAccessDenied", cr, err)
		} else {
			t.Logf("consumer with %v: %v", cr, err)
		}
	}
	for _, cr := range []producer.Credentials{denied, wrongSecret} {
		q, err := producer.New(env.NameServers(), producer.WithCredentials(cr), producer.WithRetry(1))
		if err != nil {
			t.Fatal(err)
		}
		_, err = q.Send(ctx, producer.Message{Topic: topic, Keys: []string{"refused"}, Body: []byte("x")})
		q.Close()
		switch {
		case err == nil:
			t.Errorf("send with %v succeeded", cr)
		case !errors.Is(err, producer.ErrAccessDenied) || !producer.IsPermanent(err):
			t.Errorf("send with %v: %v; want a permanent ErrAccessDenied", cr, err)
		default:
			t.Logf("send with %v: %v", cr, err)
		}
	}
}
