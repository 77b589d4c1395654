package remoting

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Admin request codes for consumer progress.
const (
	ReqGetBrokerClusterInfo          = 106
	ReqGetAllSubscriptionGroupConfig = 201
	ReqGetConsumeStats               = 208
)

// Credentials are an ACL account's keys. The zero value signs nothing.
type Credentials struct {
	AccessKey, SecretKey, SecurityToken string
}

// QueueStats is one message queue's progress for a consumer group, as a
// broker answers GET_CONSUME_STATS.
type QueueStats struct {
	Topic      string
	BrokerName string
	QueueID    int
	// BrokerOffset is the queue's max offset: the offset the next stored
	// message gets.
	BrokerOffset int64
	// ConsumerOffset is the group's committed offset (0 when none).
	ConsumerOffset int64
	// LastTimestamp is the store time, in Unix milliseconds, of the last
	// consumed message (the one before ConsumerOffset); 0 when unknown.
	LastTimestamp int64
}

// Lag is the number of messages stored but not yet committed.
func (q QueueStats) Lag() int64 { return max(q.BrokerOffset-q.ConsumerOffset, 0) }

// ConsumeStats is one broker's answer to GET_CONSUME_STATS.
type ConsumeStats struct {
	Queues     []QueueStats // sorted by topic, broker name, queue id
	ConsumeTPS float64
}

// messageQueueJSON and offsetWrapperJSON are the broker's field names.
type messageQueueJSON struct {
	Topic      string `json:"topic"`
	BrokerName string `json:"brokerName"`
	QueueID    int    `json:"queueId"`
}

type offsetWrapperJSON struct {
	BrokerOffset   int64 `json:"brokerOffset"`
	ConsumerOffset int64 `json:"consumerOffset"`
	LastTimestamp  int64 `json:"lastTimestamp"`
}

// EncodeConsumeStats writes s as a 4.9.4 broker does: offsetTable is a map
// whose keys are MessageQueue objects, written as JSON objects (not
// strings), which standard JSON decoders refuse.
func EncodeConsumeStats(s *ConsumeStats) []byte {
	var b bytes.Buffer
	b.WriteString(`{"consumeTps":`)
	b.WriteString(strconv.FormatFloat(s.ConsumeTPS, 'f', -1, 64))
	b.WriteString(`,"offsetTable":{`)
	for i, q := range s.Queues {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(messageQueueJSON{Topic: q.Topic, BrokerName: q.BrokerName, QueueID: q.QueueID}) // plain fields never fail
		v, _ := json.Marshal(offsetWrapperJSON{q.BrokerOffset, q.ConsumerOffset, q.LastTimestamp})
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteString(`}}`)
	return b.Bytes()
}

// DecodeConsumeStats decodes a GET_CONSUME_STATS body. offsetTable's keys
// may be JSON objects (how the Java broker writes a MessageQueue key) or
// strings holding such an object; unknown fields are ignored.
func DecodeConsumeStats(body []byte) (*ConsumeStats, error) {
	top, err := objectMembers(body)
	if err != nil {
		return nil, fmt.Errorf("remoting: consume stats: %w", err)
	}
	s := &ConsumeStats{}
	for _, m := range top {
		var name string
		if err := json.Unmarshal(m.key, &name); err != nil {
			return nil, fmt.Errorf("remoting: consume stats: key %.40q: %w", m.key, err)
		}
		switch name {
		case "consumeTps":
			if err := json.Unmarshal(m.value, &s.ConsumeTPS); err != nil {
				return nil, fmt.Errorf("remoting: consume stats: consumeTps: %w", err)
			}
		case "offsetTable":
			if string(m.value) == "null" {
				continue
			}
			table, err := objectMembers(m.value)
			if err != nil {
				return nil, fmt.Errorf("remoting: consume stats: offsetTable: %w", err)
			}
			for _, e := range table {
				q, err := decodeQueueStats(e)
				if err != nil {
					return nil, fmt.Errorf("remoting: consume stats: %w", err)
				}
				s.Queues = append(s.Queues, q)
			}
		}
	}
	slices.SortStableFunc(s.Queues, func(a, b QueueStats) int {
		if c := strings.Compare(a.Topic, b.Topic); c != 0 {
			return c
		}
		if c := strings.Compare(a.BrokerName, b.BrokerName); c != 0 {
			return c
		}
		return a.QueueID - b.QueueID
	})
	return s, nil
}

func decodeQueueStats(e member) (QueueStats, error) {
	key := e.key
	if len(key) > 0 && key[0] == '"' {
		var s string
		if err := json.Unmarshal(key, &s); err != nil {
			return QueueStats{}, fmt.Errorf("queue key: %w", err)
		}
		key = []byte(s)
	}
	var mq messageQueueJSON
	if err := json.Unmarshal(key, &mq); err != nil {
		return QueueStats{}, fmt.Errorf("queue key %.60q: %w", key, err)
	}
	var ow offsetWrapperJSON
	if err := json.Unmarshal(e.value, &ow); err != nil {
		return QueueStats{}, fmt.Errorf("offsets of %s/%d: %w", mq.Topic, mq.QueueID, err)
	}
	return QueueStats{Topic: mq.Topic, BrokerName: mq.BrokerName, QueueID: mq.QueueID,
		BrokerOffset: ow.BrokerOffset, ConsumerOffset: ow.ConsumerOffset, LastTimestamp: ow.LastTimestamp}, nil
}

// member is one key/value pair of a JSON object, both raw.
type member struct{ key, value []byte }

// objectMembers splits a JSON object into its members without decoding
// them. Keys may be any JSON value, not just strings.
func objectMembers(b []byte) ([]member, error) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, errors.New("not a JSON object")
	}
	i = skipSpace(b, i+1)
	var out []member
	if i < len(b) && b[i] == '}' {
		return out, nil
	}
	for {
		kEnd, err := valueEnd(b, i)
		if err != nil {
			return nil, err
		}
		key := b[i:kEnd]
		i = skipSpace(b, kEnd)
		if i >= len(b) || b[i] != ':' {
			return nil, fmt.Errorf("missing ':' at byte %d", i)
		}
		i = skipSpace(b, i+1)
		vEnd, err := valueEnd(b, i)
		if err != nil {
			return nil, err
		}
		out = append(out, member{key: key, value: b[i:vEnd]})
		i = skipSpace(b, vEnd)
		if i >= len(b) {
			return nil, errors.New("unterminated object")
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			if j := skipSpace(b, i+1); j != len(b) {
				return nil, fmt.Errorf("trailing data at byte %d", j)
			}
			return out, nil
		default:
			return nil, fmt.Errorf("unexpected %q at byte %d", b[i], i)
		}
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// valueEnd returns the index just past the JSON value starting at b[i]:
// a string, or an object or array (brackets balanced, strings skipped), or
// a scalar running to the next delimiter.
func valueEnd(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errors.New("unexpected end of input")
	}
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				end, err := stringEnd(b, j)
				if err != nil {
					return 0, err
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, errors.New("unbalanced brackets")
	case '}', ']', ',', ':':
		return 0, fmt.Errorf("unexpected %q at byte %d", b[i], i)
	}
	j := i
	for j < len(b) && !strings.ContainsRune(",:}] \t\r\n", rune(b[j])) {
		j++
	}
	return j, nil
}

func stringEnd(b []byte, i int) (int, error) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1, nil
		}
	}
	return 0, errors.New("unterminated string")
}

// GetConsumeStats asks the broker at broker for group's progress on every
// topic it has committed offsets of (GET_CONSUME_STATS), or on topic only
// when it is not "". A broker that does not know the group answers an
// empty table. The request is signed with creds when they are set.
func GetConsumeStats(ctx context.Context, broker, group, topic string, creds Credentials) (*ConsumeStats, error) {
	ext := map[string]string{"consumerGroup": group}
	if topic != "" {
		ext["topic"] = topic
	}
	resp, err := invokeSigned(ctx, broker, &Command{Code: ReqGetConsumeStats, ExtFields: ext}, creds)
	if err != nil {
		return nil, fmt.Errorf("consume stats of %s on %s: %w", group, broker, err)
	}
	if resp.Code != CodeSuccess {
		return nil, fmt.Errorf("consume stats of %s on %s: code %d %s", group, broker, resp.Code, resp.Remark)
	}
	s, err := DecodeConsumeStats(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("consume stats of %s on %s: %w", group, broker, err)
	}
	return s, nil
}

// DecodeSubscriptionGroups returns the group names, sorted, of a
// GET_ALL_SUBSCRIPTIONGROUP_CONFIG body
// ({"subscriptionGroupTable":{"G":{...},...},"dataVersion":{...}}).
func DecodeSubscriptionGroups(body []byte) ([]string, error) {
	var w struct {
		SubscriptionGroupTable map[string]json.RawMessage `json:"subscriptionGroupTable"`
	}
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, fmt.Errorf("remoting: subscription groups: %w", err)
	}
	names := make([]string, 0, len(w.SubscriptionGroupTable))
	for n := range w.SubscriptionGroupTable {
		names = append(names, n)
	}
	slices.Sort(names)
	return names, nil
}

// SubscriptionGroups lists the consumer groups the broker at broker has a
// subscription group config for (GET_ALL_SUBSCRIPTIONGROUP_CONFIG),
// system groups included (see [IsSystemGroup]).
func SubscriptionGroups(ctx context.Context, broker string, creds Credentials) ([]string, error) {
	resp, err := invokeSigned(ctx, broker, &Command{Code: ReqGetAllSubscriptionGroupConfig}, creds)
	if err != nil {
		return nil, fmt.Errorf("groups on %s: %w", broker, err)
	}
	if resp.Code != CodeSuccess {
		return nil, fmt.Errorf("groups on %s: code %d %s", broker, resp.Code, resp.Remark)
	}
	names, err := DecodeSubscriptionGroups(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("groups on %s: %w", broker, err)
	}
	return names, nil
}

// systemGroups are the consumer groups a broker creates for itself and
// its tools.
var systemGroups = []string{"TOOLS_CONSUMER", "FILTERSRV_CONSUMER", "SELF_TEST_C_GROUP", "CID_ONS-HTTP-PROXY",
	"CID_ONSAPI_PULL", "CID_ONSAPI_PERMISSION", "CID_ONSAPI_OWNER", "SCHEDULE_CONSUMER", "__MONITOR_CONSUMER",
	"DEFAULT_CONSUMER"}

// IsSystemGroup reports whether group is one the broker or its tools use
// rather than an application.
func IsSystemGroup(group string) bool {
	return slices.Contains(systemGroups, group) || strings.HasPrefix(group, "CID_RMQ_SYS_") ||
		strings.HasPrefix(group, "CID_SYS_RMQ_")
}

// Broker is one broker of a cluster as the name server knows it.
type Broker struct {
	Cluster string
	Name    string
	// Addr is the master's address (broker id 0), "" when the master is
	// not registered.
	Addr string
}

// DecodeClusterInfo returns the brokers of a GET_BROKER_CLUSTER_INFO body,
// sorted by name. Like a route's, its brokerAddrs keys are integers Java
// writes without quotes.
func DecodeClusterInfo(body []byte) ([]Broker, error) {
	var ci struct {
		BrokerAddrTable map[string]struct {
			Cluster     string            `json:"cluster"`
			BrokerName  string            `json:"brokerName"`
			BrokerAddrs map[string]string `json:"brokerAddrs"`
		} `json:"brokerAddrTable"`
	}
	if err := json.Unmarshal(unquotedKey.ReplaceAll(body, []byte(`$1"$2":`)), &ci); err != nil {
		return nil, fmt.Errorf("remoting: cluster info: %w", err)
	}
	out := make([]Broker, 0, len(ci.BrokerAddrTable))
	for name, bd := range ci.BrokerAddrTable {
		out = append(out, Broker{Cluster: bd.Cluster, Name: name, Addr: bd.BrokerAddrs["0"]})
	}
	slices.SortFunc(out, func(a, b Broker) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// ClusterBrokers asks the name server at namesrv for every broker it knows
// (GET_BROKER_CLUSTER_INFO).
func ClusterBrokers(ctx context.Context, namesrv string) ([]Broker, error) {
	resp, err := invokeOnce(ctx, namesrv, &Command{Code: ReqGetBrokerClusterInfo})
	if err != nil {
		return nil, fmt.Errorf("cluster info from %s: %w", namesrv, err)
	}
	if resp.Code != CodeSuccess {
		return nil, fmt.Errorf("cluster info from %s: code %d %s", namesrv, resp.Code, resp.Remark)
	}
	bs, err := DecodeClusterInfo(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("cluster info from %s: %w", namesrv, err)
	}
	return bs, nil
}

func invokeSigned(ctx context.Context, addr string, req *Command, creds Credentials) (*Command, error) {
	Sign(req, creds.AccessKey, creds.SecretKey, creds.SecurityToken)
	return invokeOnce(ctx, addr, req)
}
