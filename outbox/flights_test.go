package outbox_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/outbox"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// TestARowWaitsForTheEarlierRowOfItsKeyInFlight: a Transact whose key's
// earlier row another Transact of the relay is still sending handed its
// row back for reconcile, a second later at best; it waits for that send
// now and sends its row after it. Waiting ends with ctx (the row is handed
// back, no attempt counted) and with the claim's lease (the row is due
// again).
func TestARowWaitsForTheEarlierRowOfItsKeyInFlight(t *testing.T) {
	t.Parallel()
	enqueue := func(key string) func(context.Context, *outbox.Tx) error {
		return func(ctx context.Context, tx *outbox.Tx) error {
			_, err := tx.Enqueue(ctx, outbox.Message{Topic: "orders", Key: key, ShardingKey: "a", Body: []byte("x")})
			return err
		}
	}
	for _, tc := range []struct {
		name string
		// second runs the second Transact; it returns once that Transact
		// is waiting, or has returned, and the first send may go on.
		second     func(t *testing.T, r *outbox.Relay) (done <-chan error, hold time.Duration)
		wantStatus int
		wantOwner  bool
	}{
		{"sent after the earlier row", func(t *testing.T, r *outbox.Relay) (<-chan error, time.Duration) {
			done := make(chan error, 1)
			go func() { done <- r.Transact(bg, enqueue("a-2")) }()
			return done, 200 * time.Millisecond
		}, 1, false},
		{"ctx ends while waiting", func(t *testing.T, r *outbox.Relay) (<-chan error, time.Duration) {
			ctx, cancel := context.WithTimeout(bg, 200*time.Millisecond)
			t.Cleanup(cancel)
			done := make(chan error, 1)
			go func() { done <- r.Transact(ctx, enqueue("a-2")) }()
			return done, 400 * time.Millisecond
		}, 0, false},
		{"the lease ends while waiting", func(t *testing.T, r *outbox.Relay) (<-chan error, time.Duration) {
			done := make(chan error, 1)
			go func() { done <- r.Transact(bg, enqueue("a-2")) }()
			return done, 1500 * time.Millisecond
		}, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pub := newFake()
			started, release := make(chan struct{}), make(chan struct{})
			var once sync.Once
			pub.fail = func(m producer.Message) error {
				if m.Keys[0] == "a-1" {
					once.Do(func() { close(started) })
					<-release
				}
				return nil
			}
			db, r := setup(t, pub, outbox.WithLease(time.Second))
			first := make(chan error, 1)
			go func() { first <- r.Transact(bg, enqueue("a-1")) }()
			<-started
			done, hold := tc.second(t, r)
			time.Sleep(hold)
			if n := pub.count("a-2"); n != 0 {
				t.Fatalf("a-2 sent %d times while a-1 was being sent", n)
			}
			close(release)
			if err := <-first; err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			var row struct {
				Status   int
				Attempts int
				Owner    string `db:"lease_owner"`
			}
			if err := db.Get(&row, "SELECT status, attempts, lease_owner FROM mq_log WHERE biz_key = 'a-2'"); err != nil {
				t.Fatal(err)
			}
			if row.Status != tc.wantStatus || row.Attempts != tc.wantStatus || (row.Owner != "") != tc.wantOwner {
				t.Fatalf("a-2: status %d, %d attempts, owner %q; want status %d, owner set %v",
					row.Status, row.Attempts, row.Owner, tc.wantStatus, tc.wantOwner)
			}
			if got := pub.order(); tc.wantStatus == 1 && (len(got) != 2 || got[0] != "a-1") {
				t.Fatalf("sent %v, want a-1 then a-2", got)
			}
		})
	}
}

// TestAnOrderedSendReadsOnlyItsKeysUnsentRows: before it sends a row with
// a sharding key, the relay looks for an earlier row of the key not Sent
// yet. That read went through every earlier row of the key, Sent ones
// included (until the retention purge), so each send of a busy key cost
// more as its history grew. Counted in rows the server reads (its Handler
// counters, on the relay's only connection), sending a key's next row
// must not depend on how many of its rows were sent before.
func TestAnOrderedSendReadsOnlyItsKeysUnsentRows(t *testing.T) {
	t.Parallel()
	db, r := setup(t, newFake())
	db.SetMaxOpenConns(1)
	reads := func() int {
		t.Helper()
		var rows []struct {
			Name  string `db:"Variable_name"`
			Value int    `db:"Value"`
		}
		if err := db.Select(&rows, "SHOW SESSION STATUS LIKE 'Handler_read%'"); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, v := range rows {
			n += v.Value
		}
		return n
	}
	send := func(key string) int {
		t.Helper()
		if _, _, err := r.Enqueue(bg, db, outbox.Message{Topic: "orders", Key: key, ShardingKey: "busy", Body: []byte("x")}); err != nil {
			t.Fatal(err)
		}
		before := reads()
		rep, err := r.DispatchDue(bg, 10)
		if err != nil || rep.Sent != 1 {
			t.Fatalf("dispatch: %+v, %v", rep, err)
		}
		return reads() - before
	}
	first := send("first")
	// 2,000 more Sent rows of the key, and a backlog of 2,000 Pending rows
	// of other keys, due later (each index the read could take before
	// 00010 then holds thousands of rows to go through).
	db.MustExec(`INSERT INTO mq_log (topic, key_hash, biz_key, tag, sharding_key, sharding_hash, properties, body, delay_ms,
		status, attempts, next_attempt_at, lease_owner, last_error, msg_id, created_at, updated_at)
		SELECT 'orders', UNHEX(SHA2(CONCAT('h', s.n), 256)), CONCAT('h', s.n), '', IF(s.n % 2 = 0, 'busy', CONCAT('other', s.n)),
			UNHEX(SHA2(IF(s.n % 2 = 0, 'busy', CONCAT('other', s.n)), 256)), '{}', 'x', 0, 1 - s.n % 2, 1,
			IF(s.n % 2 = 0, UTC_TIMESTAMP(6), '9999-01-01'), '', '', 'm', UTC_TIMESTAMP(6), UTC_TIMESTAMP(6)
		FROM (SELECT a.n * 100 + b.n * 10 + c.n + d.n * 1000 AS n FROM
			(SELECT 0 n UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) a,
			(SELECT 0 n UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) b,
			(SELECT 0 n UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) c,
			(SELECT 0 n UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3) d) s`)
	db.MustExec("ANALYZE TABLE mq_log")
	if later := send("later"); later > first+50 {
		t.Fatalf("sending a row of a key read %d rows with 2,000 of the key's rows Sent before it, %d with none", later, first)
	}
}

// TestARowBehindABackingOffRowIsDueWithItOnMySQL: the store's half of
// TestARowBehindABackingOffRowIsDueWithIt: the time until the earlier row
// is due comes from the database.
func TestARowBehindABackingOffRowIsDueWithItOnMySQL(t *testing.T) {
	t.Parallel()
	pub := newFake()
	pub.fail = func(m producer.Message) error {
		if m.Keys[0] == "k-1" {
			return &producer.SendError{Outcome: producer.Transient, Err: errors.New("broker busy")}
		}
		return nil
	}
	db, r := setup(t, pub, outbox.WithBackoff(time.Minute, time.Hour))
	for _, k := range []string{"k-1", "k-2"} {
		if _, _, err := r.Enqueue(bg, db, outbox.Message{Topic: "orders", Key: k, ShardingKey: "k", Body: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	if rep, err := r.DispatchDue(bg, 10); err != nil || rep.Failed != 1 {
		t.Fatalf("first dispatch: %+v, %v", rep, err)
	}
	// The second handed back for a second with the first's failure: due now.
	db.MustExec("UPDATE mq_log SET next_attempt_at = UTC_TIMESTAMP(6) WHERE biz_key = 'k-2'")
	if rep, err := r.DispatchDue(bg, 10); err != nil || rep.Blocked != 1 {
		t.Fatalf("second dispatch: %+v, %v", rep, err)
	}
	var gap, ahead float64
	if err := db.QueryRow(`SELECT TIMESTAMPDIFF(MICROSECOND, a.next_attempt_at, b.next_attempt_at) / 1e6,
		TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), b.next_attempt_at) / 1e6
		FROM mq_log a, mq_log b WHERE a.biz_key = 'k-1' AND b.biz_key = 'k-2'`).Scan(&gap, &ahead); err != nil {
		t.Fatal(err)
	}
	if gap < 0 || gap > 1 || ahead < 20 {
		t.Fatalf("k-2 due %.3f s after k-1, %.3f s from now; want with k-1, 30 s or more away", gap, ahead)
	}
}
