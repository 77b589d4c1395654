package remoting

import (
	"sort"
	"strings"
)

const (
	nameValueSep = "\x01"
	propertySep  = "\x02"
)

// Property names the broker and the client read or write.
const (
	PropKeys                  = "KEYS"
	PropTags                  = "TAGS"
	PropUniqKey               = "UNIQ_KEY"
	PropDelay                 = "DELAY"
	PropRealTopic             = "REAL_TOPIC"
	PropRealQueueID           = "REAL_QID"
	PropRetryTopic            = "RETRY_TOPIC"
	PropOriginMessageID       = "ORIGIN_MESSAGE_ID"
	PropWait                  = "WAIT"
	PropCluster               = "CLUSTER"
	PropTransactionPrepared   = "TRAN_MSG"
	PropProducerGroup         = "PGROUP"
	PropTransactionCheckTimes = "TRANSACTION_CHECK_TIMES"
	// PropShardingKey is where the official Go client puts a message's
	// sharding key (its queue selector reads it).
	PropShardingKey = "SHARDING_KEY"
	// PropJavaShardingKey is the Java client's sharding key, which 5.x
	// gRPC clients send a FIFO message's group in.
	PropJavaShardingKey = "__SHARDINGKEY"
	// PropAttempt is reliablemq's own: the delivery attempt a retry copy
	// re-sent by the consumer wrapper follows.
	PropAttempt = "RELIABLEMQ_ATTEMPT"
	// PropReplayOf is reliablemq's own: the dead-letter id a replayed
	// message was parked as. An application property as far as the client
	// and the producer are concerned; the consumer reads and hides it.
	PropReplayOf = "RELIABLEMQ_REPLAY_OF"
	// PropReplayGroup is reliablemq's own: the consumer group (with its
	// namespace) whose dead letter a replayed message replays. A replay
	// goes to the topic, so every group of the topic receives it; only
	// this group takes PropReplayOf as the message's place in its order.
	PropReplayGroup = "RELIABLEMQ_REPLAY_GROUP"
)

// EncodeProperties writes the property string the way a 4.9.4 broker stores
// it: NAME\x01VALUE pairs joined by \x02, without a trailing separator. Keys
// are sorted so that the output is deterministic.
func EncodeProperties(props map[string]string) string {
	if len(props) == 0 {
		return ""
	}
	keys := make([]string, 0, len(props))
	for k := range props {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(propertySep)
		}
		b.WriteString(k)
		b.WriteString(nameValueSep)
		b.WriteString(props[k])
	}
	return b.String()
}

// DecodeProperties parses a property string, with or without the client's
// trailing \x02. Like the client, it drops items that do not split into
// exactly one name and one value.
func DecodeProperties(s string) map[string]string {
	props := make(map[string]string)
	for _, item := range strings.Split(s, propertySep) {
		kv := strings.Split(item, nameValueSep)
		if len(kv) == 2 {
			props[kv[0]] = kv[1]
		}
	}
	return props
}

// TagsCode is the consume-queue tag hash of a tag: Java's String.hashCode of
// the tag (over UTF-16 code units), 0 for no tag.
func TagsCode(tag string) int64 {
	var h int32
	for _, r := range tag {
		if r >= 0x10000 {
			r -= 0x10000
			h = 31*h + int32(0xD800+(r>>10))
			h = 31*h + int32(0xDC00+(r&0x3FF))
			continue
		}
		h = 31*h + int32(r)
	}
	return int64(h)
}

// IsSystemProperty reports whether name is set by the client or the broker
// rather than by the application: everything else on a message is a user
// property. It runs for every property of every delivery: a switch needs
// no hashing.
func IsSystemProperty(name string) bool {
	switch name {
	case PropKeys, PropTags, PropUniqKey, PropDelay, PropRealTopic, PropRealQueueID, PropRetryTopic,
		PropOriginMessageID, PropWait, PropCluster, PropTransactionPrepared, PropProducerGroup,
		PropTransactionCheckTimes, PropShardingKey, PropJavaShardingKey, PropAttempt,
		"MIN_OFFSET", "MAX_OFFSET", "RECONSUME_TIME", "MAX_RECONSUME_TIMES", "CHECK_IMMUNITY_TIME_IN_SECONDS",
		"CONSUME_START_TIME", "__STARTDELIVERTIME", "TRACE_ON", "MSG_REGION", "BUYER_ID",
		"TRAN_PREPARED_QUEUE_OFFSET", "__transactionId__", "UNIQ_KEY_INDEX":
		return true
	}
	return false
}

// SplitKeys splits a KEYS property into its keys. The broker separates
// keys with a space, and a key may hold any other whitespace (a tab, a
// no-break space), so the split is at spaces only.
func SplitKeys(keys string) []string {
	return strings.FieldsFunc(keys, func(r rune) bool { return r == ' ' })
}
