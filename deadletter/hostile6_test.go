package deadletter_test

import (
	"context"
	"strings"
	"testing"

	"github.com/go-sql-driver/mysql"
	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/deadletter"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

// TestHasParkedOnAReservedWordTable pins a fix found by hostile testing. What it guarded
// against: table names are quoted
// (sqldb.Quote) "so a name that is a reserved word works too", and Park,
// List, Get and the transitions do quote it; HasParked writes the bare
// name. On a table named order every HasParked is a syntax error, and an
// orderly consumer under ParkKey retries every message with a sharding key
// as a failing store, forever.
func TestHasParkedOnAReservedWordTable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.MySQL(t)
	db.MustExec("CREATE TABLE `order` LIKE mq_dead_letter")
	dead, err := deadletter.NewTable(db, deadletter.WithTable("order"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dead.Park(ctx, &consumer.DeadLetter{Group: "g", Topic: "T", MsgID: "m", Keys: []string{"k"},
		ShardingKey: "s", Body: []byte("b"), Cause: consumer.CauseRetries}); err != nil {
		t.Fatal(err)
	}
	if has, err := dead.HasParked(ctx, "g", "s", 0); err != nil || !has {
		t.Fatalf("HasParked on table `order`: %v, %v; want true", has, err)
	}
}

// TestParkTakesWhateverTheConsumerHandsIt pins a fix found by hostile testing. What it guarded
// against: Park writes the
// consumer's values as they come into columns that cannot take all of
// them: last_error is a TEXT (65,535 bytes; in utf8mb4, valid UTF-8 only),
// tags a VARBINARY(255); and the text columns (last_error, and reason on
// Discard) go as connection-charset strings, not bytes. A strict session
// refuses the park (the consumer then retries the message, running its
// handler again on every delivery), and a loose one (an empty sql_mode) cuts the
// tag, so a replay sends another tag than the message had.
func TestParkTakesWhateverTheConsumerHandsIt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.MySQL(t)
	dl := func(id string) *consumer.DeadLetter {
		return &consumer.DeadLetter{Group: "g", Topic: "T", MsgID: id, Keys: []string{"k"}, Body: []byte("b"),
			Attempts: 1, LastError: "boom", Cause: consumer.CausePermanent}
	}
	for _, tc := range []struct {
		name   string
		mutate func(*mysql.Config)
		edit   func(*consumer.DeadLetter)
	}{
		{"error text not UTF-8", nil, func(d *consumer.DeadLetter) { d.LastError = "cannot decode payload \xff\xfe" }},
		{"error text over 64 KiB", nil, func(d *consumer.DeadLetter) { d.LastError = strings.Repeat("x", 70_000) }},
		{"tag over 255 bytes", nil, func(d *consumer.DeadLetter) { d.Tag = strings.Repeat("t", 300) }},
		{"tag over 255 bytes, sql_mode=''", func(c *mysql.Config) { c.Params = map[string]string{"sql_mode": "''"} },
			func(d *consumer.DeadLetter) { d.Tag = strings.Repeat("t", 300) }},
		{"UTF-8 error text, charset=gbk", func(c *mysql.Config) { c.Params = map[string]string{"charset": "gbk"} },
			func(d *consumer.DeadLetter) { d.LastError = "库存不足 ✓" }},
		{"UTF-8 error text, charset=latin1", func(c *mysql.Config) { c.Params = map[string]string{"charset": "latin1"} },
			func(d *consumer.DeadLetter) { d.LastError = "库存不足 ✓" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vdb := db
			if tc.mutate != nil {
				vdb = testenv.MySQLWith(t, db, tc.mutate)
			}
			dead, err := deadletter.NewTable(vdb)
			if err != nil {
				t.Fatal(err)
			}
			in := dl(tc.name)
			tc.edit(in)
			if _, err := dead.Park(ctx, in); err != nil {
				t.Fatalf("park: %.300v", err)
			}
			// Read back through a plain utf8mb4 session (the CLI's).
			plain, err := deadletter.NewTable(db)
			if err != nil {
				t.Fatal(err)
			}
			got, err := plain.Get(ctx, in.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Tag != in.Tag {
				t.Errorf("tag stored as %d bytes, parked with %d", len(got.Tag), len(in.Tag))
			}
			if strings.Contains(tc.name, "charset") && got.LastError != in.LastError {
				t.Errorf("last_error reads %q in a utf8mb4 session, parked as %q", got.LastError, in.LastError)
			}
		})
	}
}
