package outbox_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/outbox"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// TestReview22RowWithAShardingKeyPropertyFromAnOlderVersion: SHARDING_KEY
// (the client's sharding key) became a reserved property in 6d88de1; a
// row an older version accepted with it among its properties goes Dead at
// its first send after the upgrade, saying why, and the way out
// docs/operations.md gives (remove the property with JSON_REMOVE, replay)
// sends it.
func TestReview22RowWithAShardingKeyPropertyFromAnOlderVersion(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t)
	topic := testenv.Name(t, "T")
	env.CreateTopic(t, topic, 2)
	p, err := producer.New(env.NameServers())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	db := testenv.MySQL(t)
	r, err := outbox.NewRelay(db, p, outbox.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id, _, err := r.Enqueue(ctx, db, outbox.Message{Topic: topic, Key: "o-1", Body: []byte("1"),
		Properties: map[string]string{"origin": "web"}})
	if err != nil {
		t.Fatal(err)
	}
	// What an older version wrote: the client's property among the user ones.
	db.MustExec(`UPDATE mq_log SET properties = '{"origin":"web","SHARDING_KEY":"o-1"}' WHERE id = ?`, id)
	var pending int
	if err := db.Get(&pending, "SELECT COUNT(*) FROM mq_log WHERE status = 0 AND "+
		"JSON_CONTAINS_PATH(CONVERT(properties USING utf8mb4), 'one', '$.SHARDING_KEY')"); err != nil || pending != 1 {
		t.Fatalf("the documented query finds %d rows (%v), want 1", pending, err)
	}
	if _, err := r.DispatchDue(ctx, 10); err != nil {
		t.Fatal(err)
	}
	row, err := r.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if row.Status != outbox.Dead || !strings.Contains(row.LastError, "SHARDING_KEY") {
		t.Fatalf("row %s (%q): want Dead, naming the property", row.Status, row.LastError)
	}
	db.MustExec("UPDATE mq_log SET properties = JSON_REMOVE(CONVERT(properties USING utf8mb4), '$.SHARDING_KEY') "+
		"WHERE id = ? AND status = 3", id)
	if err := r.Replay(ctx, id); err != nil {
		t.Fatal(err)
	}
	for giveUp := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := r.DispatchDue(ctx, 10); err != nil {
			t.Fatal(err)
		}
		if row, err = r.Get(ctx, id); err != nil {
			t.Fatal(err)
		}
		if row.Status == outbox.Sent {
			break
		}
		if time.Now().After(giveUp) {
			t.Fatalf("row is %s after the documented fix and a replay (%q), want Sent", row.Status, row.LastError)
		}
	}
	if row.Properties["origin"] != "web" || len(row.Properties) != 1 {
		t.Fatalf("properties after the fix: %v", row.Properties)
	}
}
