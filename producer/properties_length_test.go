package producer_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/seed157d4c4d/reliablemq/producer"
)

// TestValidateRefusesPropertiesTheBrokerWouldRefuse: a broker refuses a
// message whose properties, with those it adds, pass 32,767 UTF-16
// characters (a key of 32,700 bytes was refused by a real 4.9.4 with
// MESSAGE_ILLEGAL after an outbox had committed the row, which then went
// Dead). Validate refuses it beforehand, counting characters as the broker
// does: a 3-byte character is one, a 4-byte one two.
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
		{"30,000 three-byte characters (90,000 bytes)", m([]string{strings.Repeat("€", 30000)}, "", nil), true},
		{"16,000 four-byte characters (32,000 UTF-16)", m([]string{strings.Repeat("😀", 16000)}, "", nil), false},
	} {
		err := producer.Validate(tc.m)
		if tc.ok != (err == nil) || (err != nil && !errors.Is(err, producer.ErrInvalidMessage)) {
			t.Errorf("%s: %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}
