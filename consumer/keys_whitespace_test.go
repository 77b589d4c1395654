package consumer

import (
	"slices"
	"testing"

	"github.com/apache/rocketmq-client-go/v2/primitive"
)

// TestAKeyKeepsItsWhitespace: keys are separated by a space, and a key may
// hold any other whitespace (the producer refuses only the space). Split
// at every kind of whitespace, "order\t1" reached the handler as the keys
// "order" and "1", and Key gave "order 1": the key a guard claimed and
// the one an outbox Confirm looked up were not the key sent, and keys
// differing only in their whitespace ("order\t1", "order\n1") shared one.
func TestAKeyKeepsItsWhitespace(t *testing.T) {
	for _, keys := range [][]string{{"order\t1"}, {"order\n1"}, {"order\u00a01"}, {"order\u30001", "\tlead"}, {"a", "b"}} {
		ext := &primitive.MessageExt{Message: primitive.Message{Topic: "T"}, MsgId: "id"}
		ext.WithKeys(keys)
		m := newItems([]*primitive.MessageExt{ext}, "", "")[0].m
		if !slices.Equal(m.Keys, keys) {
			t.Errorf("sent keys %q, the handler saw %q", keys, m.Keys)
		}
	}
}
