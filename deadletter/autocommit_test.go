package deadletter_test

import (
	"context"
	"errors"
	"testing"

	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/deadletter"
	"github.com/seed157d4c4d/reliablemq/internal/sqldb"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

// TestTableRefusesAutocommitOff: a message parked through a handle whose
// sessions run with autocommit=0 would be acknowledged with its dead
// letter never committed, and lost when the connection closes. Park
// refuses the handle (the consumer then retries the message).
func TestTableRefusesAutocommitOff(t *testing.T) {
	t.Parallel()
	db := testenv.MySQL(t)
	dead, err := deadletter.NewTable(testenv.MySQLAutocommitOff(t, db))
	if err != nil {
		t.Fatal(err)
	}
	group := testenv.Name(t, "G")
	inserted, err := dead.Park(context.Background(), &consumer.DeadLetter{Group: group, Topic: "T", MsgID: "M1",
		Keys: []string{"k"}, Body: []byte("b"), Attempts: 3, LastError: "boom", Cause: consumer.CauseRetries})
	if inserted || !errors.Is(err, sqldb.ErrAutocommitOff) {
		t.Fatalf("park: inserted %v, %v; want the handle refused", inserted, err)
	}
	var n int
	if err := db.Get(&n, "SELECT COUNT(*) FROM mq_dead_letter WHERE consumer_group = ?", []byte(group)); err != nil || n != 0 {
		t.Fatalf("%d dead letters written through the refused handle (%v)", n, err)
	}
}
