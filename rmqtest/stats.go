package rmqtest

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/seed157d4c4d/reliablemq/internal/remoting"
)

// systemGroups are the subscription groups a 4.9.4 broker creates at
// start; GET_ALL_SUBSCRIPTIONGROUP_CONFIG lists them with the rest.
var systemGroups = []string{"TOOLS_CONSUMER", "FILTERSRV_CONSUMER", "SELF_TEST_C_GROUP", "CID_ONS-HTTP-PROXY",
	"CID_ONSAPI_PULL", "CID_ONSAPI_PERMISSION", "CID_ONSAPI_OWNER"}

// clusterInfo answers GET_BROKER_CLUSTER_INFO as a 4.9.4 name server does:
// compact JSON, the broker id key unquoted.
func (b *Broker) clusterInfo() *remoting.Command {
	name, _ := jsonString(b.opts.brokerName)
	cluster, _ := jsonString(b.opts.clusterName)
	addr, _ := jsonString(b.brAddr)
	body := fmt.Sprintf(`{"brokerAddrTable":{%s:{"brokerAddrs":{0:%s},"brokerName":%s,"cluster":%s}},"clusterAddrTable":{%s:[%s]}}`,
		name, addr, name, cluster, cluster, name)
	return ok(nil, []byte(body))
}

// subscriptionGroups answers GET_ALL_SUBSCRIPTIONGROUP_CONFIG: the system
// groups and every group that sent a consumer heartbeat or pulled (a
// broker with autoCreateSubscriptionGroup creates the config then), with
// the default config fields of 4.9.4.
func (b *Broker) subscriptionGroups() *remoting.Command {
	type config struct {
		BrokerID                       int    `json:"brokerId"`
		ConsumeBroadcastEnable         bool   `json:"consumeBroadcastEnable"`
		ConsumeEnable                  bool   `json:"consumeEnable"`
		ConsumeFromMinEnable           bool   `json:"consumeFromMinEnable"`
		GroupName                      string `json:"groupName"`
		NotifyConsumerIdsChangedEnable bool   `json:"notifyConsumerIdsChangedEnable"`
		RetryMaxTimes                  int    `json:"retryMaxTimes"`
		RetryQueueNums                 int    `json:"retryQueueNums"`
		WhichBrokerWhenConsumeSlowly   int    `json:"whichBrokerWhenConsumeSlowly"`
	}
	b.mu.Lock()
	names := append(slices.Collect(maps.Keys(b.subGroups)), systemGroups...)
	b.mu.Unlock()
	table := make(map[string]config, len(names))
	for _, n := range names {
		table[n] = config{GroupName: n, ConsumeBroadcastEnable: true, ConsumeEnable: true, ConsumeFromMinEnable: true,
			NotifyConsumerIdsChangedEnable: true, RetryMaxTimes: 16, RetryQueueNums: 1, WhichBrokerWhenConsumeSlowly: 1}
	}
	body, err := json.Marshal(map[string]any{"dataVersion": map[string]int64{"counter": 1, "timestamp": b.Now().UnixMilli()},
		"subscriptionGroupTable": table})
	if err != nil {
		return response(remoting.CodeSystemError, err.Error())
	}
	return ok(nil, body)
}

// consumeStats answers GET_CONSUME_STATS as 4.9.4 does: for every topic the
// group committed an offset on (or the one named), unless the group is
// online and not subscribed to it, every read queue's max offset, the
// committed offset (0 when none) and the store time of the last consumed
// message. consumeTps is always 0.
func (b *Broker) consumeStats(req *remoting.Command) *remoting.Command {
	group, only := req.ExtFields["consumerGroup"], req.ExtFields["topic"]
	if group == "" {
		return response(remoting.CodeSystemError, "the custom field <consumerGroup> is null")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var topics []string
	if only != "" {
		topics = []string{only}
	} else {
		seen := make(map[string]bool)
		for k := range b.offsets[group] {
			if !seen[k.topic] {
				seen[k.topic] = true
				topics = append(topics, k.topic)
			}
		}
	}
	g := b.groups[group]
	s := &remoting.ConsumeStats{}
	for _, name := range topics {
		t := b.topics[name]
		if t == nil {
			continue
		}
		if g != nil && len(g.subs) > 0 && g.subs[name] == nil {
			continue
		}
		for i := 0; i < t.read && i < len(t.queues); i++ {
			q := remoting.QueueStats{Topic: name, BrokerName: b.opts.brokerName, QueueID: i,
				BrokerOffset: int64(len(t.queues[i]))}
			q.ConsumerOffset = max(b.offsets[group][queueKey{name, int32(i)}], 0)
			if last := q.ConsumerOffset - 1; last >= 0 && last < int64(len(t.queues[i])) {
				q.LastTimestamp = t.queues[i][last].StoreTimestamp
			}
			s.Queues = append(s.Queues, q)
		}
	}
	return ok(nil, remoting.EncodeConsumeStats(s))
}
