package producer_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/producer"
	"github.com/seed157d4c4d/reliablemq/rmqtest"
)

// TestCheckBackKeysAreTheKeysSent: a key may hold whitespace other than a
// space (Validate refuses only the space, the broker's separator): a tab,
// a no-break space, an ideographic space. The checker must be asked about
// the keys as they were sent; split on every kind of whitespace, "a\tb"
// came back as the two keys "a" and "b", and the outbox's checker looked
// up (and aborted) the key "a b" instead of the committed "a\tb".
func TestCheckBackKeysAreTheKeysSent(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t, rmqtest.WithTransactionCheck(6*time.Second, 60*time.Second, 15))
	topic, group := testenv.Name(t, "T"), testenv.Name(t, "PG")
	env.CreateTopic(t, topic, 2)
	checker := &checkFunc{answer: producer.TxRollback}
	p := newTransactional(t, env.NameServers(), group, checker)
	keys := []string{"tab\tkey", "nbsp\u00a0key", "ideographic\u3000key", "\u2003lead", "nl\nkey"}
	var ids []string
	if _, err := p.SendInTransaction(ctxT(t), producer.Message{Topic: topic, Keys: keys, Body: []byte("x")},
		answer(producer.TxUnknown, &ids)); err != nil {
		t.Fatal(err)
	}
	// A real broker checks back once a minute.
	env.Eventually(t, "the check-back", 3*time.Minute, func() bool { return len(checker.questions()) > 0 })
	if q := checker.questions()[0]; !slices.Equal(q.Keys, keys) || q.MsgID != ids[0] {
		t.Fatalf("checker asked about keys %q (msg id %s), want %q (%s)", q.Keys, q.MsgID, keys, ids[0])
	}
}

// TestHalfMessageTransientFailuresAreRetried: a half message the broker
// refused with a transient code stored nothing, and the local
// transaction did not run: it is sent again, as a Producer's send would
// be, and the local transaction runs once. A permanent refusal is not
// retried. (Without retries the first sends of a new transactional
// producer made at once failed with "route info not found".)
func TestHalfMessageTransientFailuresAreRetried(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t)
	b := env.RequireEmbedded(t)
	topic, group := testenv.Name(t, "T"), testenv.Name(t, "PG")
	env.CreateTopic(t, topic, 2)
	p := newTransactional(t, env.NameServers(), group, &checkFunc{answer: producer.TxRollback})
	b.Inject(rmqtest.SendMessage, rmqtest.Fault{Times: 2, Code: rmqtest.CodeSystemError})
	var ids []string
	res, err := p.SendInTransaction(ctxT(t), producer.Message{Topic: topic, Keys: []string{"k"}, Body: []byte("x")},
		answer(producer.TxCommit, &ids))
	if err != nil || res.State != producer.TxCommit || res.Attempts != 3 || len(ids) != 1 {
		t.Fatalf("after two transient refusals: %+v, %v; local ran %d times", res, err, len(ids))
	}
	b.Inject(rmqtest.SendMessage, rmqtest.Fault{Times: 2, Code: rmqtest.CodeMessageIllegal})
	_, err = p.SendInTransaction(ctxT(t), producer.Message{Topic: topic, Keys: []string{"k2"}, Body: []byte("x")},
		answer(producer.TxCommit, &ids))
	var se *producer.SendError
	if !errors.As(err, &se) || se.Outcome != producer.Permanent || se.Attempts != 1 || len(ids) != 1 {
		t.Fatalf("after a permanent refusal: %v (%+v); local ran %d times", err, se, len(ids))
	}
}
