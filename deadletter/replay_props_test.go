package deadletter_test

import (
	"context"
	"testing"

	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/deadletter"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// validatingPublisher accepts what producer.Validate accepts, as a
// producer does, and keeps the last message.
type validatingPublisher struct{ last producer.Message }

func (p *validatingPublisher) Send(_ context.Context, m producer.Message) (producer.Result, error) {
	if err := producer.Validate(m); err != nil {
		return producer.Result{}, err
	}
	p.last = m
	return producer.Result{MsgID: "replayed"}, nil
}

// TestReplayOfADeadLetterParkedWithTheClientsShardingKeyProperty: older
// versions kept the client's sharding key property (SHARDING_KEY) among
// a keyed message's user properties, and the Java client's
// (__SHARDINGKEY) is a system one too; Validate refuses both as user
// properties, so such a dead letter could never be replayed. The replay
// sends its user properties only, its sharding key as ShardingKey.
func TestReplayOfADeadLetterParkedWithTheClientsShardingKeyProperty(t *testing.T) {
	t.Parallel()
	dead, err := deadletter.NewTable(testenv.MySQL(t))
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"SHARDING_KEY", "__SHARDINGKEY"} {
		dl := &consumer.DeadLetter{Group: "g", Topic: "orders", MsgID: testenv.Name(t, name), Keys: []string{"order-1"},
			ShardingKey: "order-1", Properties: map[string]string{name: "order-1", "origin": "web"},
			Body: []byte("b"), Attempts: 3, LastError: "boom", Cause: consumer.CauseRetries}
		if _, err := dead.Park(context.Background(), dl); err != nil {
			t.Fatal(err)
		}
		pub := &validatingPublisher{}
		if err := dead.Replay(context.Background(), dl.ID, pub, "fixed"); err != nil {
			t.Fatalf("%d: replay of a dead letter with property %s: %v", i, name, err)
		}
		if _, ok := pub.last.Properties[name]; ok || pub.last.Properties["origin"] != "web" || pub.last.ShardingKey != "order-1" {
			t.Fatalf("%d: replayed with properties %v and sharding key %q; want origin only, and order-1",
				i, pub.last.Properties, pub.last.ShardingKey)
		}
	}
}
