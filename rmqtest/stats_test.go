package rmqtest_test

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/remoting"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

// sendToQueue stores n messages on topic's queue with plain SEND_MESSAGE
// requests.
func sendToQueue(t *testing.T, broker, topic string, queue, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := remoting.Dial(ctx, broker)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < n; i++ {
		resp, err := c.Invoke(ctx, &remoting.Command{Code: remoting.ReqSendMessage, ExtFields: map[string]string{
			"producerGroup": "PG_stats", "topic": topic, "queueId": strconv.Itoa(queue), "sysFlag": "0",
			"bornTimestamp": strconv.FormatInt(time.Now().UnixMilli(), 10), "flag": "0", "properties": "",
			"reconsumeTimes": "0", "unitMode": "false", "maxReconsumeTimes": "0", "batch": "false",
			"defaultTopic": "TBW102", "defaultTopicQueueNums": "4"}, Body: []byte("m" + strconv.Itoa(i))})
		if err != nil || resp.Code != remoting.CodeSuccess {
			t.Fatalf("send %d: %v %+v", i, err, resp)
		}
	}
}

// TestConsumeStatsWire runs the admin requests behind "reliablemq lag"
// (GET_BROKER_CLUSTER_INFO, GET_ALL_SUBSCRIPTIONGROUP_CONFIG,
// GET_CONSUME_STATS) on rmqtest, and on a real broker when RMQ_NAMESRV is
// set, and checks that both answers decode to the same progress.
func TestConsumeStatsWire(t *testing.T) {
	t.Parallel()
	env, topic := newTopic(t, 2)
	group := testenv.Name(t, "CG")
	sendToQueue(t, env.Broker, topic, 0, 5)
	env.PullAndCommit(t, group, topic, 0, 2)
	ctx := context.Background()

	brokers, err := remoting.ClusterBrokers(ctx, env.NameServers()[0])
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(brokers, func(b remoting.Broker) bool { return b.Addr == env.Broker && b.Name != "" }) {
		t.Fatalf("cluster info %+v does not list %s", brokers, env.Broker)
	}

	groups, err := remoting.SubscriptionGroups(ctx, env.Broker, remoting.Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(groups, group) || !slices.Contains(groups, "TOOLS_CONSUMER") {
		t.Fatalf("groups %v lack %s or TOOLS_CONSUMER", groups, group)
	}

	s, err := remoting.GetConsumeStats(ctx, env.Broker, group, "", remoting.Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Queues) != 2 {
		t.Fatalf("%d queues, want 2: %+v", len(s.Queues), s.Queues)
	}
	q0, q1 := s.Queues[0], s.Queues[1]
	if q0.Topic != topic || q0.QueueID != 0 || q0.BrokerOffset != 5 || q0.ConsumerOffset != 2 || q0.Lag() != 3 {
		t.Errorf("queue 0: %+v, want max 5, committed 2", q0)
	}
	// The last consumed message (offset 1) was stored within the last minute.
	if ts := time.UnixMilli(q0.LastTimestamp); time.Since(ts) > time.Minute || time.Until(ts) > time.Minute {
		t.Errorf("queue 0 last timestamp %v, want about now", ts)
	}
	if q1.QueueID != 1 || q1.BrokerOffset != 0 || q1.ConsumerOffset != 0 || q1.LastTimestamp != 0 {
		t.Errorf("queue 1: %+v, want all zero", q1)
	}
	one, err := remoting.GetConsumeStats(ctx, env.Broker, group, topic, remoting.Credentials{})
	if err != nil || len(one.Queues) != 2 {
		t.Errorf("stats for the topic alone: %+v, %v", one, err)
	}

	none, err := remoting.GetConsumeStats(ctx, env.Broker, testenv.Name(t, "CG_none"), "", remoting.Credentials{})
	if err != nil || len(none.Queues) != 0 {
		t.Errorf("unknown group: %+v, %v; want an empty table", none, err)
	}
}
