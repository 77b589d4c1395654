package deadletter_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/deadletter"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// heldPublisher counts sends; each send signals entered and then waits
// for release.
type heldPublisher struct {
	sends   atomic.Int32
	entered chan struct{}
	release chan struct{}
}

func (p *heldPublisher) Send(ctx context.Context, _ producer.Message) (producer.Result, error) {
	p.sends.Add(1)
	p.entered <- struct{}{}
	select {
	case <-p.release:
	case <-ctx.Done():
		return producer.Result{}, ctx.Err()
	}
	return producer.Result{MsgID: "replayed"}, nil
}

// TestReplayRacingADiscardOrAReplayActsOnce: an operator replays a dead
// letter while another discards it, or replays it too. The message must
// not be sent and then recorded Discarded (a decision not to process it,
// while the replayed copy is processed), nor be sent twice by two
// replays; the loser is told ErrNotParked.
func TestReplayRacingADiscardOrAReplayActsOnce(t *testing.T) {
	t.Parallel()
	db := testenv.MySQL(t)
	dead, err := deadletter.NewTable(db)
	if err != nil {
		t.Fatal(err)
	}
	for _, second := range []string{"discard", "replay"} {
		t.Run(second, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			dl := &consumer.DeadLetter{Group: "g", Topic: "orders", MsgID: "m-" + second, Keys: []string{"refund-1"},
				Body: []byte("b"), Attempts: 3, LastError: "boom", Cause: consumer.CauseRetries}
			if _, err := dead.Park(ctx, dl); err != nil {
				t.Fatal(err)
			}
			pub := &heldPublisher{entered: make(chan struct{}, 2), release: make(chan struct{})}
			var wg sync.WaitGroup
			var replayErr, secondErr error
			wg.Go(func() { replayErr = dead.Replay(ctx, dl.ID, pub, "fixed") })
			<-pub.entered // the first replay is sending
			wg.Go(func() {
				if second == "discard" {
					secondErr = dead.Discard(ctx, dl.ID, "refund must not happen")
				} else {
					secondErr = dead.Replay(ctx, dl.ID, pub, "fixed too")
				}
			})
			select {
			case <-pub.entered:
				// A second send started: release both.
			case <-time.After(300 * time.Millisecond):
			}
			close(pub.release)
			wg.Wait()
			got, err := dead.Get(ctx, dl.ID)
			if err != nil {
				t.Fatal(err)
			}
			if replayErr != nil || !errors.Is(secondErr, deadletter.ErrNotParked) || pub.sends.Load() != 1 ||
				got.Status != deadletter.Replaying || got.Reason != "fixed" {
				t.Fatalf("replay: %v; %s: %v; %d sends; the row is %s (%q)\nwant one send, the row Replaying, the %s refused",
					replayErr, second, secondErr, pub.sends.Load(), got.Status, got.Reason, second)
			}
		})
	}
}
