package deadletter_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/deadletter"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// ackThenCancel accepts every send, and then runs cancel: the operator's
// Ctrl-C (or the command's deadline) arriving just after the broker's ack.
type ackThenCancel struct {
	sends  atomic.Int32
	cancel context.CancelFunc
}

func (p *ackThenCancel) Send(context.Context, producer.Message) (producer.Result, error) {
	p.sends.Add(1)
	if p.cancel != nil {
		p.cancel()
	}
	return producer.Result{MsgID: "replayed"}, nil
}

// TestReplayMarksWhatTheBrokerAcceptedAfterItsCtxEnds: the mark ran on
// the replay's ctx (and its transaction ended with it), so a replay whose
// ctx ended right after the broker's ack left the dead letter Parked: the
// operator, told the replay failed, replayed it again and the message
// was sent twice. The mark outlives ctx, as the outbox's marks do. Also
// with a pool of one connection, which Replay holds across the send.
func TestReplayMarksWhatTheBrokerAcceptedAfterItsCtxEnds(t *testing.T) {
	t.Parallel()
	base := testenv.MySQL(t)
	for _, pool := range []int{0, 1} {
		db := testenv.MySQLWith(t, base, func(*mysql.Config) {})
		db.SetMaxOpenConns(pool)
		dead, err := deadletter.NewTable(db)
		if err != nil {
			t.Fatal(err)
		}
		dl := &consumer.DeadLetter{Group: "g", Topic: "refunds", MsgID: "m-" + time.Duration(pool).String(), Keys: []string{"refund-1"},
			Body: []byte("b"), Attempts: 3, LastError: "boom", Cause: consumer.CauseRetries}
		if _, err := dead.Park(context.Background(), dl); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		pub := &ackThenCancel{cancel: cancel}
		if err := dead.Replay(ctx, dl.ID, pub, "fixed"); err != nil {
			t.Errorf("pool %d: replay: %v, want nil: the broker has the message", pool, err)
		}
		cancel()
		got, err := dead.Get(context.Background(), dl.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != deadletter.Replaying {
			t.Fatalf("pool %d: the dead letter is %s after its replay was accepted, want Replaying", pool, got.Status)
		}
		pub.cancel = nil
		if err := dead.Replay(context.Background(), dl.ID, pub, "again"); !errors.Is(err, deadletter.ErrNotParked) || pub.sends.Load() != 1 {
			t.Fatalf("pool %d: second replay: %v after %d sends, want ErrNotParked and one send", pool, err, pub.sends.Load())
		}
	}
}

// TestReplayWaitingForTheRowEndsWithItsCtx: a replay waiting for the row
// another replay holds across a hung send gives up when its ctx ends (its
// transaction is not bound to ctx, its statements are), sends nothing,
// and leaves the row to the first.
func TestReplayWaitingForTheRowEndsWithItsCtx(t *testing.T) {
	t.Parallel()
	db := testenv.MySQL(t)
	dead, err := deadletter.NewTable(db)
	if err != nil {
		t.Fatal(err)
	}
	dl := &consumer.DeadLetter{Group: "g", Topic: "refunds", MsgID: "m-held", Keys: []string{"refund-2"},
		Body: []byte("b"), Attempts: 3, LastError: "boom", Cause: consumer.CauseRetries}
	if _, err := dead.Park(context.Background(), dl); err != nil {
		t.Fatal(err)
	}
	held := &heldPublisher{entered: make(chan struct{}, 2), release: make(chan struct{})}
	first := make(chan error, 1)
	go func() { first <- dead.Replay(context.Background(), dl.ID, held, "fixed") }()
	<-held.entered
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	other := &ackThenCancel{}
	err = dead.Replay(ctx, dl.ID, other, "impatient")
	if took := time.Since(start); err == nil || took > 5*time.Second || other.sends.Load() != 0 {
		t.Fatalf("waiting replay: %v after %v and %d sends; want its ctx's error at once, nothing sent", err, took, other.sends.Load())
	}
	close(held.release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if got, _ := dead.Get(context.Background(), dl.ID); got.Status != deadletter.Replaying || got.Reason != "fixed" {
		t.Fatalf("row %s (%q), want Replaying by the first", got.Status, got.Reason)
	}
}
