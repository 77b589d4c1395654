package producer_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/orderly"
	"github.com/seed157d4c4d/reliablemq/producer"
	"github.com/seed157d4c4d/reliablemq/rmqtest"
)

// TestHostile21AwkwardShardingKeysLandOnTheirQueueVerbatim pins the
// producer half of the ordering promise for keys an attacker would pick:
// case variants, leading and trailing blanks, a lone space or tab, NUL,
// JSON's specials (the client sends properties in a JSON header), a line
// separator, combining marks, a 4-byte character and a 30 KiB key. Each
// message lands on the queue QueueIndex names for its key, and the broker
// stores the key byte for byte, so the consumer (and a ParkKey check)
// sees the key that was hashed. Keys that are not UTF-8 or contain a
// property separator are refused before sending, as permanent errors,
// never altered on the way.
func TestHostile21AwkwardShardingKeysLandOnTheirQueueVerbatim(t *testing.T) {
	t.Parallel()
	b, topic, p := embeddedProducer(t, 8, producer.WithOrderedTopics(testenv.Name(t, "unused")))
	ctx := ctxT(t)
	keys := []string{"order-1", "Order-1", "ORDER-1", " order-1", "order-1 ", " ", "\t", "\x00", "a\x00b",
		`"`, `\`, `{"a":1}`, "</script>&", "\u2028", "é", "e\u0301", "𝄞", "\x7f", strings.Repeat("k", 30<<10)}
	queueOf := map[string]int{}
	for _, k := range keys {
		for step := range 2 {
			res, err := p.Send(ctx, producer.Message{Topic: topic, Body: []byte{byte(step)}, ShardingKey: k})
			if err != nil {
				t.Fatalf("key %.40q: %v", k, err)
			}
			if want := orderly.QueueIndex(k, 8); res.Queue != want {
				t.Errorf("key %.40q went to queue %d, want %d", k, res.Queue, want)
			}
			queueOf[k] = res.Queue
		}
	}
	stored := map[string]int{}
	for _, m := range b.Messages(topic) {
		k, ok := m.Properties[primitive.PropertyShardingKey]
		q, sent := queueOf[k]
		if !ok || !sent || q != m.QueueID {
			t.Errorf("stored a message with sharding key %.40q (present %v) on queue %d; sent to %d (sent %v)",
				k, ok, m.QueueID, q, sent)
			continue
		}
		stored[k]++
	}
	for _, k := range keys {
		if stored[k] != 2 {
			t.Errorf("key %.40q stored %d times verbatim, want 2", k, stored[k])
		}
	}

	for _, k := range []string{"\xff", "order-\xc3", "a\x01b", "a\x02"} {
		_, err := p.Send(ctx, producer.Message{Topic: topic, Body: []byte("x"), ShardingKey: k})
		if !errors.Is(err, producer.ErrInvalidMessage) || !producer.IsPermanent(err) {
			t.Errorf("key %q: err %v, want a permanent ErrInvalidMessage", k, err)
		}
	}
	if n := len(b.Messages(topic)); n != 2*len(keys) {
		t.Errorf("%d messages stored, want %d: a refused key was sent", n, 2*len(keys))
	}
}

// TestHostile21CheckBackOnTheProducersOwnConnectionCarriesTheShardingKey:
// the official client stores a message's sharding key in the property
// SHARDING_KEY (primitive.PropertyShardingKey), not in the Java client's
// __SHARDINGKEY that internal/remoting named PropShardingKey. A check-back
// answered through the client reads the right one; one that arrives on the
// producer's own connection (a restarted producer that has not sent yet,
// see TestACheckBackReachesARestartedProducerThatHasNotSent) read
// __SHARDINGKEY and handed the TxChecker a HalfMessage without its
// ShardingKey. A checker that finds its business row by the sharding key
// (the order id) finds none and rolls back a committed transaction's
// message: lost.
func TestHostile21CheckBackOnTheProducersOwnConnectionCarriesTheShardingKey(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t, rmqtest.WithTransactionCheck(6*time.Second, 60*time.Second, 15))
	b := env.RequireEmbedded(t)
	topic, group := testenv.Name(t, "T"), testenv.Name(t, "PG")
	env.CreateTopic(t, topic, 4)
	first, err := producer.NewTransactional(env.NameServers(), group, &checkFunc{answer: producer.TxUnknown})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	if _, err := first.SendInTransaction(ctxT(t), producer.Message{Topic: topic, Keys: []string{"evt-1"}, Body: []byte("x"),
		ShardingKey: "order-7"}, answer(producer.TxUnknown, &ids)); err != nil {
		t.Fatal(err)
	}
	if err := first.Close(); err != nil { // the process died
		t.Fatal(err)
	}
	checker := &checkFunc{answer: producer.TxCommit}
	newTransactional(t, env.NameServers(), group, checker) // started again; sends nothing
	last := time.Now()
	env.Eventually(t, "the check-back", time.Minute, func() bool {
		if time.Since(last) > 3*time.Second {
			b.Advance(61 * time.Second)
			last = time.Now()
		}
		return len(checker.questions()) > 0
	})
	if q := checker.questions()[0]; q.MsgID != ids[0] || q.ShardingKey != "order-7" {
		t.Fatalf("asked about %s with sharding key %q, want %s with order-7", q.MsgID, q.ShardingKey, ids[0])
	}
}

// TestHostile21ThePropertyCarryingTheShardingKeyIsReserved: Validate
// refuses the property names the client and broker set, so that a user
// property cannot change how a message is routed or read. The client's
// sharding key property is SHARDING_KEY, which was not among them: a user
// property SHARDING_KEY routed the message by its value (the Selector
// reads it) while the producer believed the message unkeyed, so a
// delayed message with it, and a batch of them, went through although
// Send refuses a delay or a batch with a sharding key, and the consumer
// took it for the message's ShardingKey (ParkKey parks by it) and dropped
// it from Properties.
func TestHostile21ThePropertyCarryingTheShardingKeyIsReserved(t *testing.T) {
	t.Parallel()
	for _, name := range []string{primitive.PropertyShardingKey, "__SHARDINGKEY"} {
		m := producer.Message{Topic: "orders", Body: []byte("x"), Properties: map[string]string{name: "order-1"}, Delay: time.Second}
		if err := producer.Validate(m); !errors.Is(err, producer.ErrInvalidMessage) {
			t.Errorf("property %s with a delay: Validate = %v, want ErrInvalidMessage", name, err)
		}
	}
}
