package outbox

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// TestKeyVariantsAndADeadRowMidSequenceUnderEveryDSNVariant: a key's
// middle row goes Dead. Its later row waits through every dispatch until
// the Dead row is replayed and sent, and then follows it; keys that differ
// from it only in case, in a trailing or leading space, or by being empty
// are other keys and are never held by it. Under every DSN option and
// session setting (the key is compared byte for byte: a collation would
// fold case or ignore trailing spaces).
func TestKeyVariantsAndADeadRowMidSequenceUnderEveryDSNVariant(t *testing.T) {
	t.Parallel()
	db := testenv.MySQL(t)
	for i, v := range testenv.MySQLVariants(t, db) {
		t.Run(v.Name, func(t *testing.T) {
			t.Parallel()
			// A table of its own: a relay claims every due row.
			table := fmt.Sprint("mq_log_v", i)
			db.MustExec("CREATE TABLE " + table + " LIKE mq_log")
			db.MustExec("CREATE TABLE " + table + "_order LIKE mq_log_order")
			h := &harness{db: v.DB}
			var healed atomic.Bool
			p := &pub{fail: func(m producer.Message) error {
				if m.Keys[0] == "a-1" && !healed.Load() {
					return sendErr(producer.Permanent, "no permission")
				}
				return nil
			}}
			r := h.relay(t, p, WithTable(table))
			key := "Order"
			ids := map[string]int64{}
			for _, m := range []Message{
				{Key: "a-0", ShardingKey: key},
				{Key: "a-1", ShardingKey: key},
				{Key: "a-2", ShardingKey: key},
				{Key: "lower", ShardingKey: "order"},
				{Key: "trailing", ShardingKey: key + " "},
				{Key: "leading", ShardingKey: " " + key},
				{Key: "unordered"},
			} {
				ids[m.Key] = enqueue(t, h, r, m)
			}
			rep := dispatch(t, r)
			if rep.Sent != 5 || rep.Dead != 1 || rep.Blocked != 1 {
				t.Fatalf("first dispatch %+v, sent %v", rep, p.keys())
			}
			// The blocked row's retry comes due (instead of sleeping
			// through blockedRetry).
			dueNow := func() {
				db.MustExec("UPDATE " + table + " SET next_attempt_at = UTC_TIMESTAMP(6) WHERE status = 0 AND lease_owner = ''")
			}
			dueNow()
			if rep := dispatch(t, r); rep.Blocked != 1 || p.count("a-2") != 0 {
				t.Fatalf("second dispatch %+v, sent %v: a-2 went past a Dead a-1", rep, p.keys())
			}
			healed.Store(true)
			if err := r.Replay(context.Background(), ids["a-1"]); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(10 * time.Second)
			for p.count("a-2") == 0 && time.Now().Before(deadline) {
				dispatch(t, r)
				dueNow()
			}
			var ofKey []string
			for _, m := range p.sent {
				if m.ShardingKey == key {
					ofKey = append(ofKey, m.Keys[0])
				}
			}
			if !slices.Equal(ofKey, []string{"a-0", "a-1", "a-2"}) {
				t.Fatalf("key %q sent %v, want a-0 a-1 a-2 (all sent: %v)", key, ofKey, p.keys())
			}
			for _, k := range []string{"lower", "trailing", "leading", "unordered"} {
				if p.count(k) != 1 {
					t.Errorf("%s sent %d times, want once", k, p.count(k))
				}
			}
		})
	}
}
