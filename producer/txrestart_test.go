package producer_test

import (
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/producer"
	"github.com/seed157d4c4d/reliablemq/rmqtest"
)

// TestACheckBackReachesARestartedProducerThatHasNotSent: a process dies
// after its local transaction committed, before the commit reached the
// broker; it starts again, and sends nothing for a while. The broker's
// check-backs of the half message must reach the new producer of the
// group, and its answer commit the message: a broker asks only producers
// that have reported in, it counts a check it could not send, and after
// its last one it drops the half message, whose local transaction had
// committed. The official client reports a producer only to the brokers
// of topics it has sent to (seen on a real 4.9.4: "Check transaction
// failed, channel is null" every minute).
func TestACheckBackReachesARestartedProducerThatHasNotSent(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t, rmqtest.WithTransactionCheck(6*time.Second, 60*time.Second, 15))
	topic, group := testenv.Name(t, "T"), testenv.Name(t, "PG")
	env.CreateTopic(t, topic, 1)
	first, err := producer.NewTransactional(env.NameServers(), group, &checkFunc{answer: producer.TxUnknown})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	if _, err := first.SendInTransaction(ctxT(t), producer.Message{Topic: topic, Keys: []string{"k"}, Body: []byte("x")},
		answer(producer.TxUnknown, &ids)); err != nil {
		t.Fatal(err)
	}
	if err := first.Close(); err != nil { // the process died
		t.Fatal(err)
	}
	checker := &checkFunc{answer: producer.TxCommit}
	newTransactional(t, env.NameServers(), group, checker) // started again; sends nothing
	asked := func() bool { return len(checker.questions()) > 0 }
	if b := env.Embedded; b != nil {
		last := time.Now()
		env.Eventually(t, "the check-back", time.Minute, func() bool {
			if time.Since(last) > 3*time.Second {
				b.Advance(61 * time.Second)
				last = time.Now()
			}
			return asked()
		})
	} else {
		env.Eventually(t, "the check-back", 3*time.Minute, asked) // a real broker checks once a minute
	}
	if q := checker.questions()[0]; q.MsgID != ids[0] || q.Topic != topic || len(q.Keys) != 1 || q.Keys[0] != "k" {
		t.Fatalf("asked about %+v, want %s of %s keyed k", q, ids[0], topic)
	}
	// The answer (commit) reached the broker: the message is consumable.
	env.PullAndCommit(t, testenv.Name(t, "CG"), topic, 0, 1)
}
