package producer_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/producer"
	"github.com/seed157d4c4d/reliablemq/rmqtest"
)

// Several check-backs queued behind a blocked checker, several Close calls
// at once and sends racing them: every Close returns the same nil, sends
// after Close begins fail with ErrClosed, and the race detector stays quiet.
func TestHostile3ConcurrentCloseWithQueuedCheckBacks(t *testing.T) {
	t.Parallel()
	for _, panicN := range []int32{0, 1, 2} {
		t.Run("", func(t *testing.T) {
			t.Parallel()
			env := testenv.NewRocketMQ(t, rmqtest.WithTransactionCheck(6*time.Second, 60*time.Second, 15))
			b := env.RequireEmbedded(t)
			topic, group := testenv.Name(t, "T"), testenv.Name(t, "PG")
			env.CreateTopic(t, topic, 2)
			c := newGatedChecker(panicN)
			p, err := producer.NewTransactional(env.NameServers(), group, c)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for i := 0; i < 5; i++ {
				m := producer.Message{Topic: topic, Keys: []string{"k"}, Body: []byte("b")}
				if _, err := p.SendInTransaction(ctxT(t), m, answer(producer.TxUnknown, &ids)); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, "the producer to register", func() bool { return b.Producers(group) > 0 })
			b.Advance(7 * time.Second)
			<-c.asked
			var wg sync.WaitGroup
			errs := make(chan error, 8)
			for i := 0; i < 4; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs <- p.Close()
				}()
			}
			for i := 0; i < 4; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var local []string
					_, err := p.SendInTransaction(ctxT(t), producer.Message{Topic: topic, Body: []byte("x")}, func(context.Context, string) producer.TxState {
						local = append(local, "x")
						return producer.TxCommit
					})
					if err != nil && !errors.Is(err, producer.ErrClosed) {
						errs <- err
					}
				}()
			}
			waitClosing(t, p)
			close(c.release)
			done := make(chan error)
			go func() { wg.Wait(); close(done) }()
			awaitClose(t, done)
			close(errs)
			for err := range errs {
				if err != nil {
					t.Errorf("error: %v", err)
				}
			}
			if err := p.Close(); err != nil {
				t.Errorf("close again: %v", err)
			}
		})
	}
}

// Close while a SendInTransaction's local transaction runs and a
// check-back arrives meanwhile: the check-back parks, Close waits for the
// send, and returns.
func TestHostile3CloseDuringSendWithParkedCheckBack(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t, rmqtest.WithTransactionCheck(6*time.Second, 60*time.Second, 15))
	b := env.RequireEmbedded(t)
	topic, group := testenv.Name(t, "T"), testenv.Name(t, "PG")
	env.CreateTopic(t, topic, 2)
	checker := &checkFunc{answer: producer.TxCommit}
	p, err := producer.NewTransactional(env.NameServers(), group, checker)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	if _, err := p.SendInTransaction(ctxT(t), producer.Message{Topic: topic, Keys: []string{"u"}, Body: []byte("u")}, answer(producer.TxUnknown, &ids)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the producer to register", func() bool { return b.Producers(group) > 0 })
	inLocal, release := make(chan struct{}), make(chan struct{})
	sent := make(chan error, 1)
	go func() {
		_, err := p.SendInTransaction(ctxT(t), producer.Message{Topic: topic, Keys: []string{"s"}, Body: []byte("s")}, func(context.Context, string) producer.TxState {
			close(inLocal)
			<-release
			return producer.TxCommit
		})
		sent <- err
	}()
	<-inLocal
	closed := closeAsync(p)
	waitClosing(t, p)
	b.Advance(7 * time.Second) // a check-back arrives after Close began
	// On the client's connection it parks; on the producer's own
	// (checkBacks) it is left unanswered. Either way the checker is not
	// asked.
	waitFor(t, "the check-back to park or be declined", func() bool {
		return producer.CheckBackParked(p) || producer.CheckBackDeclined(p)
	})
	close(release)
	if err := awaitClose(t, closed); err != nil {
		t.Fatal(err)
	}
	if err := <-sent; err != nil {
		t.Fatalf("send in flight: %v", err)
	}
	if q := checker.questions(); len(q) != 0 {
		t.Errorf("checker asked after Close began: %+v", q)
	}
}

// Close after the broker died returns.
func TestHostile3CloseAfterBrokerDied(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t, rmqtest.WithTransactionCheck(6*time.Second, 60*time.Second, 15))
	b := env.RequireEmbedded(t)
	topic, group := testenv.Name(t, "T"), testenv.Name(t, "PG")
	env.CreateTopic(t, topic, 2)
	checker := &checkFunc{answer: producer.TxCommit}
	p, err := producer.NewTransactional(env.NameServers(), group, checker)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	if _, err := p.SendInTransaction(ctxT(t), producer.Message{Topic: topic, Keys: []string{"u"}, Body: []byte("u")}, answer(producer.TxUnknown, &ids)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the producer to register", func() bool { return b.Producers(group) > 0 })
	b.Advance(7 * time.Second)
	waitFor(t, "check", func() bool { return len(checker.questions()) > 0 })
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	awaitClose(t, closeAsync(p)) // its error (the broker is gone) is not the point
}

// Namespaced sends: a batch goes to ns%T; the 127-byte topic limit counts
// the prefix, for plain, batch and transactional sends alike; ordered
// topics are named bare.
func TestHostile3NamespaceSends(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t)
	ns := strings.Repeat("n", 64)
	fits := "T" + strings.Repeat("t", 61) // 64+1+62 = 127
	long := fits + "x"
	env.CreateTopic(t, ns+"%"+fits, 2)
	p := newProducer(t, env, producer.WithNamespace(ns), producer.WithOrderedTopics(fits))
	if p.Namespace() != ns {
		t.Fatalf("Namespace() = %q, want %q", p.Namespace(), ns)
	}
	if _, err := p.Send(ctxT(t), producer.Message{Topic: fits, Body: []byte("a")}); !errors.Is(err, producer.ErrNoShardingKey) {
		t.Errorf("ordered topic named bare: %v", err)
	}
	r, err := p.Send(ctxT(t), producer.Message{Topic: fits, Body: []byte("a"), ShardingKey: "s"})
	if err != nil {
		t.Fatalf("127 bytes with the prefix: %v", err)
	}
	_ = r
	var se *producer.SendError
	if _, err := p.Send(ctxT(t), producer.Message{Topic: long, Body: []byte("a"), ShardingKey: "s"}); !errors.As(err, &se) ||
		!errors.Is(err, producer.ErrInvalidMessage) || se.Topic != long || se.Outcome != producer.Permanent {
		t.Errorf("128 bytes with the prefix: %v", err)
	}
	p2 := newProducer(t, env, producer.WithNamespace(ns))
	if _, err := p2.SendBatch(ctxT(t), []producer.Message{{Topic: fits, Body: []byte("b1")}, {Topic: fits, Body: []byte("b2")}}); err != nil {
		t.Fatalf("batch: %v", err)
	}
	if _, err := p2.SendBatch(ctxT(t), []producer.Message{{Topic: long, Body: []byte("b1")}}); !errors.Is(err, producer.ErrInvalidMessage) {
		t.Errorf("batch 128 bytes: %v", err)
	}
	tx := newTransactional(t, env.NameServers(), testenv.Name(t, "PG"), &checkFunc{}, producer.WithNamespace(ns))
	var ids []string
	if _, err := tx.SendInTransaction(ctxT(t), producer.Message{Topic: long, Body: []byte("x")}, answer(producer.TxCommit, &ids)); !errors.Is(err, producer.ErrInvalidMessage) || len(ids) != 0 {
		t.Errorf("tx 128 bytes: %v (local ran %d)", err, len(ids))
	}
	if b := env.Embedded; b != nil {
		if n := len(b.Messages(ns + "%" + fits)); n != 3 {
			t.Errorf("%d messages in the namespaced topic, want 3", n)
		}
	}
}

// A namespaced transactional producer's check-back on either broker: the
// checker is asked about the bare topic, its commit makes the message
// visible in ns%T, and Close right after returns.
func TestHostile3NamespacedCheckBackThenClose(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t, rmqtest.WithTransactionCheck(6*time.Second, 60*time.Second, 15))
	topic, group := testenv.Name(t, "T"), testenv.Name(t, "PG")
	n := testenv.Name(t, "ns")
	ns := "ns" + n[len(n)-8:]
	env.CreateTopic(t, ns+"%"+topic, 2)
	checker := &checkFunc{answer: producer.TxCommit}
	p, err := producer.NewTransactional(env.NameServers(), group, checker, producer.WithNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	if _, err := p.SendInTransaction(ctxT(t), producer.Message{Topic: topic, Keys: []string{"u"}, Body: []byte("u")}, answer(producer.TxUnknown, &ids)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Minute)
	for len(checker.questions()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no check-back")
		}
		if b := env.Embedded; b != nil && b.Producers(ns+"%"+group) > 0 {
			b.Advance(7 * time.Second)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if q := checker.questions(); q[0].Topic != topic || q[0].MsgID != ids[0] {
		t.Errorf("checker asked %+v, want the bare topic %s and id %s", q[0], topic, ids[0])
	}
	if err := awaitClose(t, closeAsync(p)); err != nil {
		t.Fatal(err)
	}
}
