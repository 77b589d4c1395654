package producer_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/seed157d4c4d/reliablemq/producer"
)

// TestValidateRefusesPropertiesTheBrokerWouldRefuse: a broker refuses a
// message whose properties, with those it adds, pass 32,767 bytes of
// UTF-8 (a key of 32,700 bytes was refused by a real 4.9.4 with
// MESSAGE_ILLEGAL after an outbox had committed the row, which then went
// Dead). Validate refuses it beforehand, counting bytes as the broker
// stores them: a 3-byte character is three. (Counted in UTF-16 characters,
// a property of 11,000 euro signs, 33,000 bytes, passed Validate and a
// real 4.9.4 refused it with MESSAGE_ILLEGAL.)
func TestValidateRefusesPropertiesTheBrokerWouldRefuse(t *testing.T) {
	m := func(keys []string, tag string, props map[string]string) producer.Message {
		return producer.Message{Topic: "T", Body: []byte("b"), Keys: keys, Tag: tag, Properties: props}
	}
	for _, tc := range []struct {
		name string
		m    producer.Message
		ok   bool
	}{
		{"a 30,000-byte key", m([]string{strings.Repeat("k", 30000)}, "", nil), true},
		{"a 32,700-byte key", m([]string{strings.Repeat("k", 32700)}, "", nil), false},
		{"two keys of 16,000 bytes", m([]string{strings.Repeat("a", 16000), strings.Repeat("b", 16000)}, "", nil), false},
		{"keys, tag and a property adding up", m([]string{strings.Repeat("a", 11000)}, strings.Repeat("t", 11000),
			map[string]string{"p": strings.Repeat("v", 11000)}), false},
		{"10,000 three-byte characters (30,000 bytes)", m([]string{strings.Repeat("€", 10000)}, "", nil), true},
		{"11,000 three-byte characters (33,000 bytes)", m([]string{strings.Repeat("€", 11000)}, "", nil), false},
		{"a property of 10,900 three-byte characters", m(nil, "", map[string]string{"p": strings.Repeat("€", 10900)}), false},
		{"a tag of 10,900 three-byte characters", m(nil, strings.Repeat("€", 10900), nil), false},
		{"8,000 four-byte characters (32,000 bytes)", m([]string{strings.Repeat("😀", 8000)}, "", nil), false},
		{"7,000 four-byte characters (28,000 bytes)", m([]string{strings.Repeat("😀", 7000)}, "", nil), true},
		// At the limit, 31,743 characters: "KEYS", the two separators and
		// the keys joined by spaces.
		{"one key at the limit", m([]string{strings.Repeat("k", 31737)}, "", nil), true},
		{"one key a character past it", m([]string{strings.Repeat("k", 31738)}, "", nil), false},
		{"two keys at the limit", m([]string{strings.Repeat("a", 15868), strings.Repeat("b", 15868)}, "", nil), true},
		{"two keys a character past it", m([]string{strings.Repeat("a", 15868), strings.Repeat("b", 15869)}, "", nil), false},
	} {
		err := producer.Validate(tc.m)
		if tc.ok != (err == nil) || (err != nil && !errors.Is(err, producer.ErrInvalidMessage)) {
			t.Errorf("%s: %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}

// TestValidateChecksEveryField: each field Validate checks refuses what
// the broker would refuse or alter, and passes what it takes, at the
// edges (a topic of 127 characters and of 128, the characters the broker
// allows in a topic, the system topics it takes no sends to, a separator
// or invalid UTF-8 in each text field). Validate accepted a send to
// SCHEDULE_TOPIC_XXXX, which a real 4.9.4 refused: an outbox row no send
// could deliver.
func TestValidateChecksEveryField(t *testing.T) {
	ok := producer.Message{Topic: "T", Body: []byte("b")}
	with := func(f func(m *producer.Message)) producer.Message {
		m := ok
		f(&m)
		return m
	}
	for _, tc := range []struct {
		name string
		m    producer.Message
		ok   bool
	}{
		{"plain", ok, true},
		{"topic of 127 characters", with(func(m *producer.Message) { m.Topic = strings.Repeat("t", 127) }), true},
		{"topic of 128 characters", with(func(m *producer.Message) { m.Topic = strings.Repeat("t", 128) }), false},
		{"topic of every allowed character", with(func(m *producer.Message) { m.Topic = "%RETRY%az_AZ-09|x" }), true},
		{"topic with a dot", with(func(m *producer.Message) { m.Topic = "a.b" }), false},
		// System topics a 4.9.4 broker refuses to take sends to (NO_PERMISSION,
		// "Sending message to topic[...] is forbidden").
		{"topic SCHEDULE_TOPIC_XXXX", with(func(m *producer.Message) { m.Topic = "SCHEDULE_TOPIC_XXXX" }), false},
		{"topic RMQ_SYS_TRANS_HALF_TOPIC", with(func(m *producer.Message) { m.Topic = "RMQ_SYS_TRANS_HALF_TOPIC" }), false},
		{"topic RMQ_SYS_TRANS_OP_HALF_TOPIC", with(func(m *producer.Message) { m.Topic = "RMQ_SYS_TRANS_OP_HALF_TOPIC" }), false},
		{"topic SELF_TEST_TOPIC", with(func(m *producer.Message) { m.Topic = "SELF_TEST_TOPIC" }), false},
		{"topic OFFSET_MOVED_EVENT", with(func(m *producer.Message) { m.Topic = "OFFSET_MOVED_EVENT" }), false},
		{"topic a system topic's name in another case", with(func(m *producer.Message) { m.Topic = "schedule_topic_xxxx" }), true},
		{"topic with a non-ASCII letter", with(func(m *producer.Message) { m.Topic = "tøpic" }), false},
		{"empty topic", with(func(m *producer.Message) { m.Topic = "" }), false},
		{"tag with a separator", with(func(m *producer.Message) { m.Tag = "a\x02b" }), false},
		{"tag not UTF-8", with(func(m *producer.Message) { m.Tag = "\xff" }), false},
		{"sharding key with a separator", with(func(m *producer.Message) { m.ShardingKey = "a\x01" }), false},
		{"sharding key not UTF-8", with(func(m *producer.Message) { m.ShardingKey = "\xc3" }), false},
		{"key with a separator", with(func(m *producer.Message) { m.Keys = []string{"a\x01"} }), false},
		{"second key not UTF-8", with(func(m *producer.Message) { m.Keys = []string{"a", "\xfe"} }), false},
		{"property name not UTF-8", with(func(m *producer.Message) { m.Properties = map[string]string{"\xfe": "v"} }), false},
		{"property name with a separator", with(func(m *producer.Message) { m.Properties = map[string]string{"a\x02": "v"} }), false},
		{"property value with a separator", with(func(m *producer.Message) { m.Properties = map[string]string{"a": "v\x02"} }), false},
		{"empty property name", with(func(m *producer.Message) { m.Properties = map[string]string{"": "v"} }), false},
		{"system property name", with(func(m *producer.Message) { m.Properties = map[string]string{"TAGS": "v"} }), false},
		{"user properties", with(func(m *producer.Message) { m.Properties = map[string]string{"a": "v", "ü": "€"} }), true},
	} {
		err := producer.Validate(tc.m)
		if tc.ok != (err == nil) || (err != nil && !errors.Is(err, producer.ErrInvalidMessage)) {
			t.Errorf("%s: %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}
