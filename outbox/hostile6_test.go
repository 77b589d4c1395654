package outbox_test

import (
	"cmp"
	"errors"
	"time"

	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"github.com/seed157d4c4d/reliablemq/producer"

	"github.com/go-sql-driver/mysql"
	"github.com/seed157d4c4d/reliablemq/internal/sqldb"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/outbox"
)

// hostile6Keys are valid UTF-8 message keys (no spaces: the producer
// accepts them) whose last byte before the quote is, in the client
// character set, the lead byte of a two-byte character whose second byte
// may be 0x5c: the backslash the driver's interpolateParams writes before
// the quote becomes part of that character, and the quote ends the
// string.
var hostile6Keys = map[string]string{
	"gbk":  "中'OR(1=1)#", // e4 b8 | ad 5c
	"big5": "中'OR(1=1)#",
	"sjis": "功'OR(1=1)#", // e5 8a | 9f 5c
}

// TestConfirmThroughTheOutboxTxCannotInject pins a fix found by hostile testing. What it guarded
// against: the stores' arguments
// now go only by statements they prepare; "a handle without
// PrepareContext gets the arguments as they are", and the driver
// interpolates them. The library's own *outbox.Tx is such a handle: it is
// an Execer (ExecContext, QueryRowContext) with no PrepareContext. A
// consumer that records its effects and confirms the consumed message in
// one outbox transaction (relay.Transact, then relay.Confirm(ctx, tx,
// topic, key)) sends Confirm's key as an argument; under
// interpolateParams with gbk, big5 or sjis a valid UTF-8 key rewrites the
// UPDATE: here one Confirm of a key that is not in the outbox confirms
// every Sent row of the topic, and reconcile stops resending them.
func TestConfirmThroughTheOutboxTxCannotInject(t *testing.T) {
	t.Parallel()
	pub := newFake()
	db, _ := setup(t, pub)
	for _, cs := range []string{"gbk", "big5", "sjis"} {
		t.Run(cs, func(t *testing.T) {
			cdb := testenv.MySQLWith(t, db, testenv.Interpolated(cs))
			r := relayOn(t, cdb, pub)
			topic := "confirm_" + cs
			for i := range 3 {
				if _, _, err := r.Enqueue(bg, cdb, outbox.Message{Topic: topic, Key: fmt.Sprint("k", i), Body: []byte("b")}); err != nil {
					t.Fatal(err)
				}
			}
			if rep, err := r.DispatchDue(bg, 10); err != nil || rep.Sent != 3 {
				t.Fatalf("dispatch: %+v %v", rep, err)
			}
			var confirmed bool
			err := r.Transact(bg, func(ctx context.Context, tx *outbox.Tx) error {
				var err error
				confirmed, err = r.Confirm(ctx, tx, topic, hostile6Keys[cs])
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if n := count(t, db, "SELECT COUNT(*) FROM mq_log WHERE topic = ? AND status = 2", topic); n != 0 || confirmed {
				t.Fatalf("Confirm of the absent key %q through *outbox.Tx (reported %v) confirmed %d of the topic's 3 Sent rows",
					hostile6Keys[cs], confirmed, n)
			}
		})
	}
}

// TestEnqueueThroughTheOutboxTxCannotInject pins a fix found by hostile testing. What it guarded
// against: the same hole for a body
// past the inline budget (hostile5's attack, now through *outbox.Tx
// instead of a *sql.Tx): passing the outbox transaction to another
// relay's (another table's) or the same relay's Enqueue writes a forged
// row to a second topic.
func TestEnqueueThroughTheOutboxTxCannotInject(t *testing.T) {
	t.Parallel()
	pub := newFake()
	db, _ := setup(t, pub)
	gdb := testenv.MySQLWith(t, db, testenv.Interpolated("gbk"))
	r := relayOn(t, gdb, pub)
	forged := "forged_outbox_tx"
	h := sha256.Sum256([]byte("forged-key"))
	tail := ", 0, 0, 0, UTC_TIMESTAMP(6), SPACE(0), SPACE(0), SPACE(0), UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))" +
		", (0x" + hex.EncodeToString([]byte(forged)) + ", 0x" + hex.EncodeToString(h[:]) + ", 0x" + hex.EncodeToString([]byte("forged-key")) +
		", SPACE(0), SPACE(0), 0x" + hex.EncodeToString(sqldb.Hash("")) + ", 0x7b7d, 0x" + hex.EncodeToString([]byte("forged body")) +
		", 0, 0, 0, UTC_TIMESTAMP(6), SPACE(0), SPACE(0), SPACE(0), UTC_TIMESTAMP(6), UTC_TIMESTAMP(6)) -- "
	body := "中'" + tail + strings.Repeat("a", sqldb.InlineBudget)
	err := r.Transact(bg, func(ctx context.Context, tx *outbox.Tx) error {
		_, _, err := r.Enqueue(ctx, tx, outbox.Message{Topic: "orders", Key: "big", Body: []byte(body)})
		return err
	})
	if n := count(t, db, "SELECT COUNT(*) FROM mq_log WHERE topic = ?", forged); n != 0 {
		t.Fatalf("an enqueue through *outbox.Tx of one message to orders also wrote %d row(s) to topic %s (%v)", n, forged, err)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestStatementsFitAOneMiBPacket pins a fix found by hostile testing. What it guarded
// against: InlineBudget says an
// inlined statement "stays near 1 MiB, under any server's
// max_allowed_packet". Near is over: values at the 512 KiB budget double
// in hex to 1 MiB, and the statement's own text goes on top. A handle
// whose max_allowed_packet is 1 MiB (the DSN's maxAllowedPacket, as for a
// server configured so) refuses an enqueue of a body just under the
// budget, while a larger body (sent as an argument) and a smaller one
// pass: which messages can be written depends on a window of sizes.
func TestStatementsFitAOneMiBPacket(t *testing.T) {
	t.Parallel()
	pub := newFake()
	db, _ := setup(t, pub)
	pdb := testenv.MySQLWith(t, db, func(c *mysql.Config) { c.MaxAllowedPacket = 1 << 20 })
	r := relayOn(t, pdb, pub)
	topic, key := "orders", "k"
	before := len(topic) + 32 + len(key) + 32 + len("{}") // inlined ahead of the body
	var failed []string
	for _, size := range []int{sqldb.InlineBudget - before - 1000, sqldb.InlineBudget - before, sqldb.InlineBudget - before + 1, 900 << 10} {
		k := fmt.Sprint(key, size)
		body := make([]byte, size-(len(k)-len(key)))
		if _, _, err := r.Enqueue(bg, pdb, outbox.Message{Topic: topic, Key: k, Body: body}); err != nil {
			failed = append(failed, fmt.Sprintf("%d bytes: %v", len(body), err))
		}
	}
	if len(failed) > 0 {
		t.Fatalf("with max_allowed_packet 1 MiB, enqueues failed:\n%s", strings.Join(failed, "\n"))
	}
}

// TestTagsTheTableCannotHoldAreRefused pins a fix found by hostile testing. What it guarded
// against: the idempotency stores now refuse a
// key their column cannot hold, since "a loose [session] would store it
// cut". The outbox has the same column limits (tag VARBINARY(255), biz_key
// and sharding_key BLOB) and checks none: under an empty sql_mode an enqueue of
// a 300-byte tag (which the producer sends as it is) succeeds, and the
// relay sends the message with its tag cut to 255 bytes, so consumers
// subscribed to the tag never see it.
func TestTagsTheTableCannotHoldAreRefused(t *testing.T) {
	t.Parallel()
	pub := newFake()
	db, _ := setup(t, pub)
	ldb := testenv.MySQLWith(t, db, func(c *mysql.Config) { c.Params = map[string]string{"sql_mode": "''"} })
	r := relayOn(t, ldb, pub)
	tag := strings.Repeat("t", 300)
	if _, _, err := r.Enqueue(bg, ldb, outbox.Message{Topic: "orders", Key: "long-tag", Tag: tag, Body: []byte("b")}); err != nil {
		return // refused: the message was not written
	}
	if _, err := r.DispatchDue(bg, 10); err != nil {
		t.Fatal(err)
	}
	pub.mu.Lock()
	defer pub.mu.Unlock()
	for _, m := range pub.sent {
		if m.Keys[0] == "long-tag" && m.Tag != tag {
			t.Fatalf("enqueued with a %d-byte tag, sent with a %d-byte one", len(tag), len(m.Tag))
		}
	}
}

// TestAnySendErrorTextIsRecorded pins a fix found by hostile testing. What it guarded
// against: a failed send is
// recorded by retryLater/markDead with the error's text as an argument
// into last_error, a TEXT (utf8mb4 here). A Publisher error holding bytes that
// are not UTF-8 (plain DSN), or UTF-8 text outside the session's charset
// (charset=gbk, "✓"), fails that UPDATE: the attempt is never counted,
// the row is never made Dead, and once the claim's lease ends it is sent
// again, for ever (here: 4 sends in 4 lease periods with WithMaxAttempts(2)).
func TestAnySendErrorTextIsRecorded(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, text string
		mutate     func(*mysql.Config)
	}{
		{"not UTF-8", "broker refused \xff", nil},
		{"charset=gbk", "发送失败 ✓", func(c *mysql.Config) { c.Params = map[string]string{"charset": "gbk"} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pub := newFake()
			pub.fail = func(producer.Message) error { return errors.New(tc.text) }
			db, _ := setup(t, pub)
			vdb := db
			if tc.mutate != nil {
				vdb = testenv.MySQLWith(t, db, tc.mutate)
			}
			r := relayOn(t, vdb, pub, outbox.WithMaxAttempts(2), outbox.WithLease(time.Second))
			if _, _, err := r.Enqueue(bg, vdb, outbox.Message{Topic: "orders", Key: "k", Body: []byte("b")}); err != nil {
				t.Fatal(err)
			}
			var first error
			failures, sends := 0, 0
			for range 4 {
				rep, err := r.DispatchDue(bg, 10)
				sends += rep.Claimed
				if err != nil {
					failures++
					first = cmp.Or(first, err)
				}
				time.Sleep(1100 * time.Millisecond) // past the lease, as a reconcile loop would be
			}
			row, err := r.Get(bg, 1)
			if err != nil {
				t.Fatal(err)
			}
			if row.Status != outbox.Dead || sends > 2 {
				t.Fatalf("row %s after %d attempts counted, sent %d times with WithMaxAttempts(2); %d dispatch errors, the first: %.160v",
					row.Status, row.Attempts, sends, failures, first)
			}
		})
	}
}
