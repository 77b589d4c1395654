package deadletter_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/deadletter"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// fastConsumer is a publisher whose message reaches its group before
// Send returns, as a consumer long-polling the queue may receive it
// before the broker's reply reaches Replay: it reports the replay
// received, and returns once that report is done or waits for a lock.
type fastConsumer struct {
	t      *testing.T
	db     *sqlx.DB
	dead   *deadletter.Table
	group  string
	of     int64
	report chan error
}

func (p *fastConsumer) Send(ctx context.Context, _ producer.Message) (producer.Result, error) {
	report := make(chan error, 1)
	p.report = report
	go func() { report <- p.dead.ReplayReceived(context.Background(), p.group, p.of) }()
	// Polled every 150 ms: MariaDB 10.11 refreshes its view of
	// transactions (INNODB_TRX and the lock tables) only after 100 ms
	// without a read, so a 10 ms poll kept seeing its first read, from
	// before the report's wait began (the test failed in about half of
	// its runs). Bounded under the server's 50 s lock wait.
	for deadline := time.Now().Add(40 * time.Second); time.Now().Before(deadline); {
		select {
		case err := <-report:
			report <- err
			return producer.Result{MsgID: "x"}, nil
		case <-time.After(150 * time.Millisecond):
		}
		var waiting int
		if err := p.db.GetContext(ctx, &waiting, "SELECT COUNT(*) FROM information_schema.INNODB_TRX t"+
			" JOIN information_schema.PROCESSLIST l ON l.ID = t.trx_mysql_thread_id"+
			" WHERE t.trx_state = 'LOCK WAIT' AND l.DB = DATABASE()"); err != nil {
			p.t.Error(err)
			return producer.Result{MsgID: "x"}, nil
		}
		if waiting > 0 {
			return producer.Result{MsgID: "x"}, nil
		}
	}
	// What the database's sessions were doing, to tell why.
	var sessions []string
	if err := p.db.SelectContext(ctx, &sessions, "SELECT CONCAT_WS(' | ', ID, COMMAND, TIME, STATE, INFO)"+
		" FROM information_schema.PROCESSLIST WHERE DB = DATABASE()"); err != nil {
		p.t.Log(err)
	}
	p.t.Logf("sessions of the test's database:\n%s", strings.Join(sessions, "\n"))
	p.t.Error("the report neither ended nor waited for a lock")
	return producer.Result{MsgID: "x"}, nil
}

// TestAReplayReceivedBeforeReplayCommitsIsNotLost: a consumer that
// receives a replay, and reports it, while Replay has sent it but not yet
// committed its mark (the row locked from the read to the mark) must
// still end the dead letter Replayed: a report that found nothing to mark
// and let the mark land after it left the dead letter Replaying for ever,
// its key held (HasParked) with no replay left to release it. The same
// holds for a replay of a replay parked again (the chain's next row).
func TestAReplayReceivedBeforeReplayCommitsIsNotLost(t *testing.T) {
	t.Parallel()
	db := testenv.MySQL(t)
	dead, err := deadletter.NewTable(db)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	park := func(msgID string, replayOf int64) int64 {
		t.Helper()
		dl := &consumer.DeadLetter{Group: "ledger", Topic: "postings", MsgID: msgID, Keys: []string{msgID},
			ShardingKey: "acct-7", Body: []byte(msgID), Attempts: 3, Cause: consumer.CauseRetries, ReplayOf: replayOf}
		if _, err := dead.Park(ctx, dl); err != nil {
			t.Fatal(err)
		}
		return dl.ID
	}
	replay := func(id, origin int64) {
		t.Helper()
		pub := &fastConsumer{t: t, db: db, dead: dead, group: "ledger", of: origin}
		if err := dead.Replay(ctx, id, pub, "fixed"); err != nil {
			t.Fatal(err)
		}
		if err := <-pub.report; err != nil {
			t.Fatal(err)
		}
		if e, err := dead.Get(ctx, id); err != nil || e.Status != deadletter.Replayed {
			t.Fatalf("dead letter %d after its replay was received: %v, %v; want replayed", id, e, err)
		}
		if held, err := dead.HasParked(ctx, "ledger", "acct-7", 0); err != nil || held {
			t.Fatalf("key still held after the replay was received: %v, %v", held, err)
		}
	}
	first := park("m-1", 0)
	replay(first, first)
	replay(park("m-1-again", first), first)
}
