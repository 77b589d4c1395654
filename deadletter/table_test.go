package deadletter_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/deadletter"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/migrations"
	"github.com/seed157d4c4d/reliablemq/producer"
)

func TestDeadLettersStoreEverythingVerbatim(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dead, err := deadletter.NewTable(testenv.MySQL(t))
	if err != nil {
		t.Fatal(err)
	}
	in := &consumer.DeadLetter{Group: "g", Topic: "orders", MsgID: "m-1",
		Keys: []string{`it's"quoted"`, "ключ🔑", strings.Repeat("k", 1024)}, Tag: "t'ag",
		ShardingKey: "'; DROP TABLE mq_dead_letter; --", Properties: map[string]string{"a": "\x00b\"c"},
		Body: []byte{0, 1, 2, 0xff}, Attempts: 4, LastError: "boom\nstack", Cause: consumer.CauseRetries}
	// Parking the same delivery again keeps one row, and reports it
	// inserted until the record is marked reported.
	for i, want := range []bool{true, true, false} {
		if i == 2 {
			if err := dead.Reported(ctx, in); err != nil {
				t.Fatal(err)
			}
		}
		inserted, err := dead.Park(ctx, in)
		if err != nil || inserted != want {
			t.Fatalf("park %d: inserted %v, %v; want %v", i, inserted, err, want)
		}
	}
	other := *in
	other.MsgID, other.Group = "m-2", "g2"
	if _, err := dead.Park(ctx, &other); err != nil {
		t.Fatal(err)
	}
	list, err := dead.List(ctx, deadletter.Filter{Group: "g"})
	if err != nil || len(list) != 1 {
		t.Fatalf("list: %d, %v", len(list), err)
	}
	got := list[0]
	if got.MsgID != in.MsgID || strings.Join(got.Keys, "|") != strings.Join(in.Keys, "|") || got.Tag != in.Tag ||
		got.ShardingKey != in.ShardingKey || got.Properties["a"] != in.Properties["a"] || string(got.Body) != string(in.Body) ||
		got.Attempts != 4 || got.LastError != in.LastError || got.Cause != in.Cause || got.Status != deadletter.Parked {
		t.Fatalf("stored %+v\nwant %+v", got, in)
	}
	if has, err := dead.HasParked(ctx, "g", in.ShardingKey, 0); err != nil || !has {
		t.Fatalf("HasParked: %v %v", has, err)
	}
	if err := dead.Discard(ctx, got.ID, "duplicate of #7"); err != nil {
		t.Fatal(err)
	}
	if has, _ := dead.HasParked(ctx, "g", in.ShardingKey, 0); has {
		t.Fatal("a discarded message still parks its key")
	}
	if err := dead.Discard(ctx, got.ID, "again"); !errors.Is(err, deadletter.ErrNotParked) {
		t.Fatalf("second discard: %v", err)
	}
	if _, err := dead.Get(ctx, 999999); !errors.Is(err, deadletter.ErrNotFound) {
		t.Fatalf("get missing: %v", err)
	}
	if err := dead.Discard(ctx, 999999, ""); !errors.Is(err, deadletter.ErrNotFound) {
		t.Fatalf("discard missing: %v", err)
	}
	page, err := dead.List(ctx, deadletter.Filter{AfterID: got.ID, Status: deadletter.Parked})
	if err != nil || len(page) != 1 || page[0].Group != "g2" {
		t.Fatalf("page after %d: %v %v", got.ID, page, err)
	}
	if _, err := deadletter.NewTable(nil); err == nil {
		t.Fatal("nil db accepted")
	}
}

// TestDeadLettersUnderEveryDSNVariantAndCase parks, re-parks, reads back
// and lists through handles opened with each DSN option and session
// setting; groups differing only in case keep separate rows.
func TestDeadLettersUnderEveryDSNVariantAndCase(t *testing.T) {
	t.Parallel()
	db := testenv.MySQL(t)
	ctx := context.Background()
	for _, v := range testenv.MySQLVariants(t, db) {
		t.Run(v.Name, func(t *testing.T) {
			dead, err := deadletter.NewTable(v.DB)
			if err != nil {
				t.Fatal(err)
			}
			group := testenv.Name(t, "G")
			for _, g := range []string{group, strings.ToLower(group)} {
				dl := &consumer.DeadLetter{Group: g, Topic: "T", MsgID: "M1", Keys: []string{"k"}, ShardingKey: "s",
					Body: []byte("b"), Attempts: 3, LastError: "boom", Cause: consumer.CauseRetries}
				inserted, err := dead.Park(ctx, dl)
				if err != nil || !inserted || dl.ID == 0 {
					t.Fatalf("park in group %s: inserted %v, id %d, %v", g, inserted, dl.ID, err)
				}
				id := dl.ID
				if again, err := dead.Park(ctx, dl); err != nil || !again || dl.ID != id {
					t.Fatalf("re-park before it is reported: inserted %v, id %d (want %d), %v", again, dl.ID, id, err)
				}
				if err := dead.Reported(ctx, dl); err != nil {
					t.Fatal(err)
				}
				if again, err := dead.Park(ctx, dl); err != nil || again {
					t.Fatalf("re-park once reported: inserted %v, %v", again, err)
				}
				got, err := dead.Get(ctx, dl.ID)
				if err != nil || got.Group != g || time.Since(got.CreatedAt).Abs() > time.Minute {
					t.Fatalf("get: %+v %v", got, err)
				}
				if has, err := dead.HasParked(ctx, g, "s", 0); err != nil || !has {
					t.Fatalf("has parked: %v %v", has, err)
				}
			}
			if list, err := dead.List(ctx, deadletter.Filter{Group: group}); err != nil || len(list) != 1 {
				t.Fatalf("list of %s: %d rows, %v", group, len(list), err)
			}
		})
	}
}

func TestListByKeyMatchesWholeKeysOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dead, err := deadletter.NewTable(testenv.MySQL(t))
	if err != nil {
		t.Fatal(err)
	}
	for i, keys := range [][]string{{"order-1"}, {"order-10"}, {"a", "order-1"}, {"order_1"}, {"50%"}} {
		if _, err := dead.Park(ctx, &consumer.DeadLetter{Group: "g", Topic: "T", MsgID: fmt.Sprint("m", i), Keys: keys,
			Body: []byte("b"), Cause: consumer.CauseRetries}); err != nil {
			t.Fatal(err)
		}
	}
	for key, want := range map[string]int{"order-1": 2, "order_1": 1, "order-": 0, "50%": 1, "5": 0, "a order-1": 1, "order-1 a": 0} {
		list, err := dead.List(ctx, deadletter.Filter{Key: key})
		if err != nil || len(list) != want {
			t.Errorf("key %q: %d entries, %v; want %d", key, len(list), err, want)
		}
	}
}

// TestListWithoutBodies: Filter.NoBody lists everything but the body.
func TestListWithoutBodies(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dead, err := deadletter.NewTable(testenv.MySQL(t))
	if err != nil {
		t.Fatal(err)
	}
	in := &consumer.DeadLetter{Group: "g", Topic: "T", MsgID: "m", Keys: []string{"k"}, Body: []byte("body"),
		Attempts: 3, LastError: "boom", Cause: consumer.CauseRetries}
	if _, err := dead.Park(ctx, in); err != nil {
		t.Fatal(err)
	}
	for _, noBody := range []bool{false, true} {
		list, err := dead.List(ctx, deadletter.Filter{Group: "g", NoBody: noBody})
		if err != nil || len(list) != 1 {
			t.Fatalf("NoBody %v: %d entries, %v", noBody, len(list), err)
		}
		got := list[0]
		if wantBody := !noBody; (got.Body != nil) != wantBody || got.MsgID != "m" || got.LastError != "boom" || got.Attempts != 3 ||
			got.Keys[0] != "k" || got.Status != deadletter.Parked {
			t.Errorf("NoBody %v: listed %+v (body %q)", noBody, got, got.Body)
		}
	}
}

// TestListByNamespaceMatchesItsGroupsOnly: a namespace's groups are
// "ns%group"; LIKE's wildcards in a namespace name match themselves only.
func TestListByNamespaceMatchesItsGroupsOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dead, err := deadletter.NewTable(testenv.MySQL(t))
	if err != nil {
		t.Fatal(err)
	}
	for i, g := range []string{"a_b%G", "axb%G", "a%G", "ab%G", "G", "a_b"} {
		if _, err := dead.Park(ctx, &consumer.DeadLetter{Group: g, Topic: "T", MsgID: fmt.Sprint("m", i), Keys: []string{"k"},
			Body: []byte("b"), Cause: consumer.CauseRetries}); err != nil {
			t.Fatal(err)
		}
	}
	for ns, want := range map[string]int{"a_b": 1, "a": 1, "ab": 1, "b": 0, "": 6} {
		list, err := dead.List(ctx, deadletter.Filter{Namespace: ns})
		if err != nil || len(list) != want {
			t.Errorf("namespace %q: %d entries, %v; want %d", ns, len(list), err, want)
		}
	}
}

// TestReplayRefusesAPublisherOfAnotherNamespace: a dead letter of group
// ns%G (its topic bare) replayed through a producer in no namespace, or in
// another one, would land in another namespace's topic: refused, and the
// letter stays parked. A publisher that does not tell its namespace is
// trusted.
func TestReplayRefusesAPublisherOfAnotherNamespace(t *testing.T) {
	t.Parallel()
	dead, err := deadletter.NewTable(testenv.MySQL(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := dead.Park(ctx, &consumer.DeadLetter{Group: "prod%coupons", Topic: "orders", MsgID: "m1", Keys: []string{"k"},
		Body: []byte("b"), Attempts: 1, Cause: consumer.CausePermanent}); err != nil {
		t.Fatal(err)
	}
	list, err := dead.List(ctx, deadletter.Filter{Group: "prod%coupons"})
	if err != nil || len(list) != 1 {
		t.Fatalf("list: %v %v", list, err)
	}
	id := list[0].ID
	for _, ns := range []string{"", "dev"} {
		p, err := producer.New([]string{"127.0.0.1:1"}, producer.WithNamespace(ns))
		if err != nil {
			t.Fatal(err)
		}
		err = dead.Replay(ctx, id, p, "retry")
		p.Close()
		if !errors.Is(err, deadletter.ErrWrongNamespace) {
			t.Errorf("replay through a producer in namespace %q: %v, want ErrWrongNamespace", ns, err)
		}
	}
	var sent []producer.Message
	if err := dead.Replay(ctx, id, publishFunc(func(m producer.Message) { sent = append(sent, m) }), "retry"); err != nil ||
		len(sent) != 1 || sent[0].Topic != "orders" {
		t.Fatalf("replay through a publisher that does not tell its namespace: %v, sent %+v", err, sent)
	}
}

type publishFunc func(producer.Message)

func (f publishFunc) Send(_ context.Context, m producer.Message) (producer.Result, error) {
	f(m)
	return producer.Result{MsgID: "x"}, nil
}

// TestParksAnyTextInALatin1Database: in a database whose default
// character set is latin1 (before migration 00007 the error text and
// reason columns took it), a dead letter whose error text is not latin1
// (CJK, an emoji, invalid UTF-8) and whose tag is longer than 255 bytes is
// parked and read back as written (invalid UTF-8 replaced), and so is a
// discard reason.
func TestParksAnyTextInALatin1Database(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.MySQL(t)
	var name string
	if err := db.Get(&name, "SELECT DATABASE()"); err != nil {
		t.Fatal(err)
	}
	p, err := migrations.NewProvider(db.DB)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.DownTo(ctx, 0); err != nil {
		t.Fatal(err)
	}
	db.MustExec("ALTER DATABASE `" + name + "` CHARACTER SET latin1")
	if err := migrations.Up(ctx, db.DB); err != nil {
		t.Fatal(err)
	}
	table, err := deadletter.NewTable(db)
	if err != nil {
		t.Fatal(err)
	}
	tag := strings.Repeat("t", 300)
	dl := &consumer.DeadLetter{Group: "g", Topic: "orders", MsgID: "m-1", Tag: tag,
		LastError: "库存不足 ✓ 🎉 \xff", Cause: consumer.CausePermanent}
	if ok, err := table.Park(ctx, dl); !ok || err != nil {
		t.Fatalf("park: %v %v", ok, err)
	}
	if err := table.Discard(ctx, dl.ID, "重复 ✓"); err != nil {
		t.Fatal(err)
	}
	e, err := table.Get(ctx, dl.ID)
	if err != nil {
		t.Fatal(err)
	}
	if e.Tag != tag || e.LastError != "库存不足 ✓ 🎉 \uFFFD" || e.Reason != "重复 ✓" {
		t.Fatalf("read back tag of %d bytes, error %q, reason %q", len(e.Tag), e.LastError, e.Reason)
	}
}

// TestParksTextPastTheInlineBudget: with large properties and body the
// error text is past the statement's inline budget and goes as an
// argument converted from utf8mb4; it is stored and read back whole, on a
// plain connection and on a gbk one with interpolateParams.
func TestParksTextPastTheInlineBudget(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.MySQL(t)
	gbk := testenv.MySQLWith(t, db, testenv.Interpolated("gbk"))
	for name, h := range map[string]*sqlx.DB{"plain": db, "gbk": gbk} {
		table, err := deadletter.NewTable(h)
		if err != nil {
			t.Fatal(err)
		}
		text := strings.Repeat("库存不足 ✓ ", 1000)
		dl := &consumer.DeadLetter{Group: "g", Topic: "orders", MsgID: "m-" + name, Tag: "t",
			Properties: map[string]string{"big": strings.Repeat("p", 250<<10)}, Body: make([]byte, 300<<10),
			LastError: text, Cause: consumer.CauseRetries}
		if ok, err := table.Park(ctx, dl); !ok || err != nil {
			t.Fatalf("%s: park: %v %v", name, ok, err)
		}
		e, err := table.Get(ctx, dl.ID)
		if err != nil {
			t.Fatal(err)
		}
		if e.LastError != text || len(e.Body) != 300<<10 || len(e.Properties["big"]) != 250<<10 {
			t.Fatalf("%s: read back error text of %d bytes (equal %v), body %d, property %d", name, len(e.LastError),
				e.LastError == text, len(e.Body), len(e.Properties["big"]))
		}
	}
}

// TestAReplayHoldsItsKeyUntilItsGroupReceivesIt: a replay is Replaying,
// and holds its place in its key's order for messages of the key queued
// before it, until its own group reports it received; then it is
// Replayed. The report of another group, or of another chain, changes
// nothing; a replay parked again and replayed is reported by its chain's
// first id.
func TestAReplayHoldsItsKeyUntilItsGroupReceivesIt(t *testing.T) {
	t.Parallel()
	dead, err := deadletter.NewTable(testenv.MySQL(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	park := func(msgID string, replayOf int64) int64 {
		t.Helper()
		dl := &consumer.DeadLetter{Group: "sync", Topic: "binlog", MsgID: msgID, Keys: []string{msgID}, ShardingKey: "row-1",
			Body: []byte(msgID), Attempts: 1, Cause: consumer.CauseRetries, ReplayOf: replayOf}
		if _, err := dead.Park(ctx, dl); err != nil {
			t.Fatal(err)
		}
		return dl.ID
	}
	held := func(before int64, want bool) {
		t.Helper()
		if got, err := dead.HasParked(ctx, "sync", "row-1", before); err != nil || got != want {
			t.Fatalf("HasParked(before %d) = %v, %v; want %v", before, got, err, want)
		}
	}
	status := func(id int64, want deadletter.Status) {
		t.Helper()
		if e, err := dead.Get(ctx, id); err != nil || e.Status != want {
			t.Fatalf("dead letter %d: %v, %v; want %s", id, e, err, want)
		}
	}
	noop := publishFunc(func(producer.Message) {})
	first := park("step-1", 0)
	if err := dead.Replay(ctx, first, noop, "fixed"); err != nil {
		t.Fatal(err)
	}
	status(first, deadletter.Replaying)
	held(0, true)      // a message of the key queued before the replay
	held(first, false) // the replay itself
	for _, report := range []struct {
		group string
		of    int64
	}{{"Sync", first}, {"other", first}, {"sync", first + 1000}} {
		if err := dead.ReplayReceived(ctx, report.group, report.of); err != nil {
			t.Fatal(err)
		}
		status(first, deadletter.Replaying)
	}
	if err := dead.ReplayReceived(ctx, "sync", first); err != nil {
		t.Fatal(err)
	}
	status(first, deadletter.Replayed)
	held(0, false)
	if err := dead.ReplayReceived(ctx, "sync", first); err != nil { // received again
		t.Fatal(err)
	}
	status(first, deadletter.Replayed)

	// The replay failed again and was parked as the chain's next row.
	again := park("step-1-again", first)
	held(0, true)
	held(first, false)
	if err := dead.Replay(ctx, again, noop, "fixed again"); err != nil {
		t.Fatal(err)
	}
	status(again, deadletter.Replaying)
	if err := dead.ReplayReceived(ctx, "sync", first); err != nil {
		t.Fatal(err)
	}
	status(again, deadletter.Replayed)
	held(0, false)

	// A replay no consumer will report (an older one ran it) is marked
	// received by hand; only a Replaying one.
	last := park("step-2", 0)
	if err := dead.MarkReceived(ctx, last, "ran"); !errors.Is(err, deadletter.ErrNotReplaying) {
		t.Fatalf("mark received of a parked dead letter: %v, want ErrNotReplaying", err)
	}
	if err := dead.Replay(ctx, last, noop, "fixed"); err != nil {
		t.Fatal(err)
	}
	held(0, true)
	if err := dead.MarkReceived(ctx, last, "ran on an older consumer"); err != nil {
		t.Fatal(err)
	}
	status(last, deadletter.Replayed)
	held(0, false)
	if err := dead.MarkReceived(ctx, last, "again"); !errors.Is(err, deadletter.ErrNotReplaying) {
		t.Fatalf("mark received twice: %v, want ErrNotReplaying", err)
	}
}

// TestColumnCommentsNameEveryValue: the schema's comments on the status
// and cause columns, what an operator reading the table goes by, name
// every status the table writes (by its number and its name) and every
// cause the consumer parks with.
func TestColumnCommentsNameEveryValue(t *testing.T) {
	t.Parallel()
	db := testenv.MySQL(t)
	comment := func(column string) string {
		var c string
		if err := db.Get(&c, "SELECT COLUMN_COMMENT FROM information_schema.COLUMNS"+
			" WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'mq_dead_letter' AND COLUMN_NAME = ?", column); err != nil {
			t.Fatal(err)
		}
		return c
	}
	status := comment("status")
	for _, s := range []deadletter.Status{deadletter.Parked, deadletter.Replayed, deadletter.Discarded, deadletter.Replaying} {
		if want := fmt.Sprintf("%d %s", int(s), s); !strings.Contains(status, want) {
			t.Errorf("status comment %q does not name %q", status, want)
		}
	}
	cause := comment("cause")
	for _, c := range []consumer.Cause{consumer.CauseRetries, consumer.CausePermanent, consumer.CauseDLQ,
		consumer.CauseKeyParked, consumer.CauseRetryRefused} {
		if !strings.Contains(cause, string(c)) {
			t.Errorf("cause comment %q does not name %q", cause, c)
		}
	}
}

// TestAnUnreportedEntryAlreadyHandledIsNotReportedLate: a record its
// parker never reported is reported by a later park of the message only
// while it is still parked: one an operator has already replayed or
// discarded (found by listing the table) needs no one told of it.
func TestAnUnreportedEntryAlreadyHandledIsNotReportedLate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dead, err := deadletter.NewTable(testenv.MySQL(t))
	if err != nil {
		t.Fatal(err)
	}
	group := testenv.Name(t, "G")
	for _, msgID := range []string{"parked", "discarded"} {
		dl := &consumer.DeadLetter{Group: group, Topic: "T", MsgID: msgID, Body: []byte("b"), Cause: consumer.CauseRetries}
		if inserted, err := dead.Park(ctx, dl); err != nil || !inserted {
			t.Fatalf("%s: park: inserted %v, %v", msgID, inserted, err)
		}
		if msgID == "discarded" {
			if err := dead.Discard(ctx, dl.ID, "handled by hand"); err != nil {
				t.Fatal(err)
			}
		}
		again := &consumer.DeadLetter{Group: group, Topic: "T", MsgID: msgID, Body: []byte("b"), Cause: consumer.CauseRetries}
		late, err := dead.Park(ctx, again)
		if err != nil || late != (msgID == "parked") {
			t.Fatalf("%s: parked again unreported: inserted %v, %v; want %v", msgID, late, err, msgID == "parked")
		}
	}
}
