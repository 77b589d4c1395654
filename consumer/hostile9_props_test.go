package consumer

import (
	"context"
	"log/slog"
	"maps"
	"testing"

	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/seed157d4c4d/reliablemq/internal/remoting"
)

// systemNames is the set IsSystemProperty held as a map before it became
// a switch (1652d26), with the Go client's SHARDING_KEY it lacked: exactly
// these names are the client's or the broker's.
var systemNames = []string{
	"KEYS", "TAGS", "UNIQ_KEY", "DELAY", "REAL_TOPIC", "REAL_QID", "RETRY_TOPIC", "ORIGIN_MESSAGE_ID", "WAIT",
	"CLUSTER", "TRAN_MSG", "PGROUP", "TRANSACTION_CHECK_TIMES", "SHARDING_KEY", "__SHARDINGKEY", "RELIABLEMQ_ATTEMPT",
	"MIN_OFFSET", "MAX_OFFSET", "RECONSUME_TIME", "MAX_RECONSUME_TIMES", "CHECK_IMMUNITY_TIME_IN_SECONDS",
	"CONSUME_START_TIME", "__STARTDELIVERTIME", "TRACE_ON", "MSG_REGION", "BUYER_ID",
	"TRAN_PREPARED_QUEUE_OFFSET", "__transactionId__", "UNIQ_KEY_INDEX",
}

// TestSystemPropertiesAreExactlyTheFormerSet pins IsSystemProperty to the
// names it classified before, and nothing near them: a name it missed
// would reach Message.Properties and dead letters (and a producer would
// let the application set it); one too many would drop the application's.
func TestSystemPropertiesAreExactlyTheFormerSet(t *testing.T) {
	for _, n := range systemNames {
		if !remoting.IsSystemProperty(n) {
			t.Errorf("%q: not a system property", n)
		}
	}
	for _, n := range []string{"", "keys", "Tags", "UNIQ_KEY ", " KEYS", "KEYS\x00", "RELIABLEMQ_REPLAY_OF",
		"__shardingkey", "UNIQ", "TRAN", "q", "order_id", "MIN_OFFSET_", "TRACE_ONX"} {
		if remoting.IsSystemProperty(n) {
			t.Errorf("%q: a system property", n)
		}
	}
}

// TestDeliveryKeepsOnlyUserProperties: a delivery carrying every system
// property and some user ones exposes the user ones alone (ReplayOf is
// read, and hidden too), and so does its dead letter; one carrying only
// system properties has none.
func TestDeliveryKeepsOnlyUserProperties(t *testing.T) {
	ext := &primitive.MessageExt{Message: primitive.Message{Topic: "T"}, MsgId: "id"}
	user := map[string]string{"order_id": "42", "keys": "lower", "Tags": "mixed"}
	for _, n := range systemNames {
		ext.WithProperty(n, "1")
	}
	ext.WithProperty(remoting.PropReplayOf, "7")
	for k, v := range user {
		ext.WithProperty(k, v)
	}
	items := newItems([]*primitive.MessageExt{ext}, "", "")
	m := items[0].m
	if !maps.Equal(m.Properties, user) {
		t.Errorf("properties %v; want %v", m.Properties, user)
	}
	if m.ReplayOf != 7 {
		t.Errorf("ReplayOf %d; want 7", m.ReplayOf)
	}
	var dl *DeadLetter
	c, err := New([]string{"127.0.0.1:1"}, "g", "T", func(context.Context, *Message) error { return nil },
		WithParker(parkerFunc(func(d *DeadLetter) { dl = d })), WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	c.park(context.Background(), context.Background(), m, nil, 1, ErrNoKey, CausePermanent)
	if dl == nil || !maps.Equal(dl.Properties, user) {
		t.Errorf("dead letter %+v; want the user properties alone", dl)
	}

	sys := &primitive.MessageExt{Message: primitive.Message{Topic: "T"}, MsgId: "id2"}
	for _, n := range systemNames {
		sys.WithProperty(n, "1")
	}
	if p := newItems([]*primitive.MessageExt{sys}, "", "")[0].m.Properties; p != nil {
		t.Errorf("a delivery with system properties alone has properties %v", p)
	}
	// The client's copy is untouched: the retry copy is made from it.
	if got := ext.GetProperties(); len(got) != len(systemNames)+1+len(user) {
		t.Errorf("the delivery's own properties lost some: %d left", len(got))
	}
}

// parkerFunc parks with a function.
type parkerFunc func(*DeadLetter)

func (f parkerFunc) Park(_ context.Context, d *DeadLetter) (bool, error) {
	f(d)
	return true, nil
}

// TestTheJavaClientsShardingKeyIsTheFallback: a message from the Java
// client, or a 5.x FIFO message (its group), carries its sharding key as
// __SHARDINGKEY; the consumer takes it as ShardingKey (ParkKey parks by
// it) unless the Go client's SHARDING_KEY is there too, and keeps neither
// among the user properties.
func TestTheJavaClientsShardingKeyIsTheFallback(t *testing.T) {
	for _, tc := range []struct {
		props map[string]string
		want  string
	}{
		{map[string]string{"__SHARDINGKEY": "order-9", "origin": "web"}, "order-9"},
		{map[string]string{"__SHARDINGKEY": "java", "SHARDING_KEY": "go", "origin": "web"}, "go"},
		{map[string]string{"SHARDING_KEY": "go", "origin": "web"}, "go"},
		{map[string]string{"origin": "web"}, ""},
	} {
		ext := &primitive.MessageExt{Message: primitive.Message{Topic: "T"}, MsgId: "id"}
		for k, v := range tc.props {
			ext.WithProperty(k, v)
		}
		m := newItems([]*primitive.MessageExt{ext}, "", "")[0].m
		if m.ShardingKey != tc.want || !maps.Equal(m.Properties, map[string]string{"origin": "web"}) {
			t.Errorf("%v: sharding key %q, properties %v; want %q and origin alone", tc.props, m.ShardingKey, m.Properties, tc.want)
		}
	}
}
