package outbox_test

import (
	"context"
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
