package outbox

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// TestBatchMarkGivesEachRowItsOwnIDInEveryShapeHostile18: the batched mark
// (a tree of CASE expressions split by id) is driven directly, under every
// DSN variant and sql_modes that change how literals read (ANSI_QUOTES,
// NO_BACKSLASH_ESCAPES, ORACLE), with batches of every size around the
// tree's leaves and splits, ids unsorted with gaps, a repeated row, rows
// whose lease another relay took, message ids of quotes, backslashes, NUL
// and non-ASCII bytes, and in resend mode. Each row held gets its own id,
// no other row changes, and the count is the rows held.
func TestBatchMarkGivesEachRowItsOwnIDInEveryShapeHostile18(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.MySQL(t)
	const pool = 620
	s := newMySQLStore(db, "mq_log", time.Minute)
	var ids []int64
	for i := range pool {
		id, _, err := s.enqueue(ctx, db, Message{Topic: "T", Key: fmt.Sprint("k", i), Body: []byte("x")}, "")
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	variants := testenv.MySQLVariants(t, db)
	variants = append(variants, testenv.Variant{Name: "sql_mode ANSI_QUOTES,NO_BACKSLASH_ESCAPES,STRICT_ALL_TABLES",
		DB: testenv.MySQLWith(t, db, func(c *mysql.Config) {
			c.Params = map[string]string{"sql_mode": "'ANSI_QUOTES,NO_BACKSLASH_ESCAPES,STRICT_ALL_TABLES'"}
		})})
	var sizes []int
	for n := 1; n <= 20; n++ {
		sizes = append(sizes, n)
	}
	sizes = append(sizes, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257, 499, 500)
	rng := rand.New(rand.NewPCG(18, 18))
	const owner = "0123456789abcdef0123456789abcdef"
	for _, v := range variants {
		t.Run(v.Name, func(t *testing.T) {
			vs := newMySQLStore(v.DB, "mq_log", time.Minute)
			for _, resend := range []bool{false, true} {
				for _, size := range sizes {
					status := Pending
					if resend {
						status = Sent
					}
					if _, err := db.Exec("UPDATE mq_log SET status = ?, lease_owner = ?, msg_id = ''", int(status), owner); err != nil {
						t.Fatal(err)
					}
					pick := rng.Perm(pool)[:size]
					want := map[int64]string{}
					var sent []sentRow
					var lost []any
					for j, p := range pick {
						id := ids[p]
						m := fmt.Sprintf("q'\"\\%%_\x00é\xff`-%d-%d", id, size)
						sent = append(sent, sentRow{id, m})
						if j%7 == 3 {
							lost = append(lost, id)
							continue
						}
						want[id] = m
					}
					if size > 2 { // a row listed twice (with its own id)
						sent = append(sent, sent[size/2])
						rng.Shuffle(len(sent), func(a, b int) { sent[a], sent[b] = sent[b], sent[a] })
					}
					if len(lost) > 0 {
						q, args, err := sqlx.In("UPDATE mq_log SET lease_owner = 'another relay' WHERE id IN (?)", lost)
						if err != nil {
							t.Fatal(err)
						}
						db.MustExec(q, args...)
					}
					n, err := vs.markSentBatch(ctx, []string{owner}, sent, resend)
					if err != nil {
						t.Fatalf("resend %v, %d rows: %v", resend, size, err)
					}
					if int(n) != len(want) {
						t.Fatalf("resend %v, %d rows: marked %d, want %d", resend, size, n, len(want))
					}
					var got []struct {
						ID     int64  `db:"id"`
						Status int    `db:"status"`
						MsgID  []byte `db:"msg_id"`
						Owner  string `db:"lease_owner"`
					}
					if err := db.Select(&got, "SELECT id, status, msg_id, lease_owner FROM mq_log"); err != nil {
						t.Fatal(err)
					}
					for _, g := range got {
						m, ok := want[g.ID]
						switch {
						case ok && (string(g.MsgID) != m || g.Status != int(Sent) || g.Owner != ""):
							t.Fatalf("resend %v, %d rows: row %d marked %q status %d owner %q, want %q", resend, size, g.ID, g.MsgID, g.Status, g.Owner, m)
						case !ok && (len(g.MsgID) != 0 || g.Status != int(status)):
							t.Fatalf("resend %v, %d rows: row %d not held changed: %q status %d", resend, size, g.ID, g.MsgID, g.Status)
						}
					}
				}
			}
		})
	}
}

// TestSlowResendOfAKeyKeepsItsEarlierResendsClaimedHostile18: the resends
// of one sharding key are one group, sent one after the other, and their
// marks were collected until the whole group was sent: a row resent at
// once stayed unmarked while a later row of its key took longer than the
// lease, and another instance claimed it and resent it again, though its
// own resend took no time. Here row b's resend runs another instance
// until row a's resend is recorded or a is claimed again.
func TestSlowResendOfAKeyKeepsItsEarlierResendsClaimedHostile18(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := &harness{db: testenv.MySQL(t)}
	p := &pub{}
	slow := h.relay(t, p, WithLease(time.Second), WithConcurrency(1))
	other := h.relay(t, p, WithLease(time.Second))
	enqueue(t, h, slow, Message{Key: "a", ShardingKey: "k"})
	enqueue(t, h, slow, Message{Key: "b", ShardingKey: "k"})
	if rep := dispatch(t, slow); rep.Sent != 2 {
		t.Fatalf("first sends: %+v", rep)
	}
	const timeout = 10 * time.Millisecond
	time.Sleep(50 * time.Millisecond)
	var waitErr error
	var slowed atomic.Bool
	p.onSend = func(m producer.Message) {
		if m.Keys[0] != "b" || p.count("b") != 1 || slowed.Swap(true) {
			return
		}
		waitErr = untilMarkedOrClaimed(h, "SELECT attempts = 1 FROM mq_log WHERE biz_key = 'a'", func() (BatchReport, error) {
			return other.ResendUnconfirmed(ctx, timeout, 10)
		})
	}
	rep, err := slow.ResendUnconfirmed(ctx, timeout, 10)
	if err != nil || waitErr != nil {
		t.Fatalf("resend: %+v %v; wait: %v", rep, err, waitErr)
	}
	if n := p.count("a"); n != 2 {
		t.Fatalf("row a sent %d times, want 2 (sent, resent once; report %+v): its resend stayed unmarked while its key's next row outlived the lease",
			n, rep)
	}
}

// TestFailedResendKeepsTheMarksOfItsKeysEarlierResendsHostile18: a key's
// unconfirmed rows are resent as one group; when a row's resend fails,
// the rows after it wait, but the rows before it were resent all the
// same, and their resends must be recorded. They were dropped: the row
// resent stayed claimed, its attempts never counted, and it was resent on
// every pass, never given up on, while the failing row went its way.
func TestFailedResendKeepsTheMarksOfItsKeysEarlierResendsHostile18(t *testing.T) {
	t.Parallel()
	onStores(t, func(t *testing.T, h *harness) {
		ctx := context.Background()
		p := &pub{}
		r := h.relay(t, p, WithLease(time.Second), WithMaxAttempts(3), WithBackoff(time.Millisecond, time.Millisecond))
		for _, k := range []string{"a", "b", "c"} {
			enqueue(t, h, r, Message{Key: k, ShardingKey: "k"})
		}
		if rep := dispatch(t, r); rep.Sent != 3 {
			t.Fatalf("first sends: %+v", rep)
		}
		p.mu.Lock()
		p.fail = func(m producer.Message) error {
			if m.Keys[0] == "b" {
				return sendErr(producer.OutcomeUnknown, "timeout")
			}
			return nil
		}
		p.mu.Unlock()
		h.wait(20 * time.Millisecond)
		rep, err := r.ResendUnconfirmed(ctx, 10*time.Millisecond, 10)
		if err != nil {
			t.Fatal(err)
		}
		a := rowsOfStatus(t, r, Sent)[0]
		if a.Key != "a" || rep.Sent != 1 || a.Attempts != 2 {
			t.Errorf("resend pass %+v: row %s has %d attempts after %d sends; want a's resend recorded (Sent 1, 2 attempts)",
				rep, a.Key, a.Attempts, p.count("a"))
		}
		for range 4 { // past every lease and backoff
			h.wait(1100 * time.Millisecond)
			if _, err := r.ResendUnconfirmed(ctx, 10*time.Millisecond, 10); err != nil {
				t.Fatal(err)
			}
		}
		if n := p.count("a"); n > 3 {
			t.Fatalf("row a sent %d times with at most 3 attempts allowed", n)
		}
	})
}

// TestTwoRelaysDrainAtOnceHostile18: two relays (one sending one row at a
// time, one sixteen) drain 1,001 rows (unordered, and keys of many rows
// with a failing row mid-key) at once, in claims of 500. Every row is sent
// once at most, each Sent row carries its own message id, and the Sent
// counts the two report add up to the rows Sent.
func TestTwoRelaysDrainAtOnceHostile18(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := &harness{db: testenv.MySQL(t)}
	var mu sync.Mutex
	sends := map[string]int{}
	p := &pub{onSend: func(m producer.Message) {
		mu.Lock()
		sends[m.Keys[0]]++
		mu.Unlock()
	}, fail: func(m producer.Message) error {
		if strings.HasSuffix(m.Keys[0], "3") {
			return sendErr(producer.OutcomeUnknown, "refused")
		}
		return nil
	}}
	one := h.relay(t, p, WithConcurrency(1), WithBackoff(time.Hour, time.Hour))
	many := h.relay(t, p, WithConcurrency(16), WithBackoff(time.Hour, time.Hour))
	db := h.db
	const rows = 1001
	for i := range rows {
		m := Message{Topic: "T", Key: fmt.Sprintf("r%d", i), Body: []byte("x")}
		if i%3 == 0 {
			m.ShardingKey = fmt.Sprint("s", i%17)
		}
		enqueue(t, h, one, m)
	}
	var wg sync.WaitGroup
	var total [2]BatchReport
	var errs [2]error
	for j, r := range []*Relay{one, many} {
		wg.Go(func() {
			for range 50 {
				rep, err := r.DispatchDue(ctx, 500)
				if err != nil {
					errs[j] = err
					return
				}
				total[j].Add(rep)
				if rep.Claimed == 0 {
					return
				}
			}
		})
	}
	wg.Wait()
	if errs[0] != nil || errs[1] != nil {
		t.Fatal(errs)
	}
	var got []struct {
		Key    string `db:"biz_key"`
		MsgID  string `db:"msg_id"`
		Status int    `db:"status"`
	}
	if err := db.Select(&got, "SELECT biz_key, msg_id, status FROM mq_log"); err != nil {
		t.Fatal(err)
	}
	sent := 0
	for _, g := range got {
		if n := sends[g.Key]; n > 1 {
			t.Errorf("row %s sent %d times", g.Key, n)
		}
		if g.Status == int(Sent) {
			sent++
			if g.MsgID != "id-"+g.Key {
				t.Errorf("row %s marked with %q", g.Key, g.MsgID)
			}
		}
	}
	if sent < rows/2 || total[0].Sent+total[1].Sent != sent || total[0].LostClaims+total[1].LostClaims != 0 {
		t.Fatalf("%d rows Sent; reports %+v and %+v", sent, total[0], total[1])
	}
}

// untilMarkedOrClaimed stands for a send the broker holds up: it polls,
// for 20 s at most, until unmarked (a query of one boolean) says the row
// is no longer waiting for its mark, or claim, another relay's, takes it.
func untilMarkedOrClaimed(h *harness, unmarked string, claim func() (BatchReport, error)) error {
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		var waiting bool
		if err := h.db.Get(&waiting, unmarked); err != nil || !waiting {
			return err
		}
		if rep, err := claim(); err != nil || rep.Claimed > 0 {
			return err
		}
	}
	return errors.New("row a neither marked nor claimed in 20 s")
}
