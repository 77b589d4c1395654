package outbox_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"github.com/go-sql-driver/mysql"
	"github.com/seed157d4c4d/reliablemq/internal/sqldb"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/outbox"
)

// TestBodyPastTheBudgetCannotInjectUnderAMultibyteCharset pins a fix found by hostile testing. What it guarded
// against: the doc
// says no value, whatever its bytes, can change the statement, in any
// sql_mode or character set. A body past sqldb.InlineBudget goes as a
// statement argument; with interpolateParams=true the driver writes it in
// with backslash escapes, and under charset=gbk (which the driver accepts
// with interpolateParams: it only refuses unsafe *collations*) the byte
// 0xbf swallows the escaping backslash. The body then closes its string
// and writes SQL: here one enqueue of a message to "orders" also enqueues
// a forged message to another topic, which the relay would send.
func TestBodyPastTheBudgetCannotInjectUnderAMultibyteCharset(t *testing.T) {
	t.Parallel()
	pub := newFake()
	db, _ := setup(t, pub)
	for _, cs := range []struct{ charset, lead string }{{"gbk", "\xbf"}, {"sjis", "\x81"}, {"big5", "\xa1"}} {
		t.Run(cs.charset, func(t *testing.T) {
			gdb := testenv.MySQLWith(t, db, testenv.Interpolated(cs.charset))
			r := relayOn(t, gdb, pub)
			forged := "forged_" + cs.charset
			h := sha256.Sum256([]byte("forged-key"))
			// The columns after body: delay_ms, status, attempts,
			// next_attempt_at, lease_owner, last_error, msg_id, created_at,
			// updated_at. The rest of the real statement is commented out.
			tail := ", 0, 0, 0, UTC_TIMESTAMP(6), SPACE(0), SPACE(0), SPACE(0), UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))" +
				", (0x" + hex.EncodeToString([]byte(forged)) + ", 0x" + hex.EncodeToString(h[:]) + ", 0x" + hex.EncodeToString([]byte("forged-key")) +
				", SPACE(0), SPACE(0), 0x" + hex.EncodeToString(sqldb.Hash("")) + ", 0x7b7d, 0x" + hex.EncodeToString([]byte("forged body")) +
				", 0, 0, 0, UTC_TIMESTAMP(6), SPACE(0), SPACE(0), SPACE(0), UTC_TIMESTAMP(6), UTC_TIMESTAMP(6)) -- "
			body := cs.lead + "'" + tail + strings.Repeat("a", sqldb.InlineBudget)
			_, _, err := r.Enqueue(bg, gdb, outbox.Message{Topic: "orders", Key: "k-" + cs.charset, Body: []byte(body)})
			n := count(t, db, "SELECT COUNT(*) FROM mq_log WHERE topic = ?", forged)
			if n != 0 {
				t.Fatalf("an enqueue of one message to orders also wrote %d row(s) to topic %s (enqueue error %v)", n, forged, err)
			}
			if err != nil {
				t.Fatalf("enqueue: %v", err)
			}
			rows, err := r.Find(bg, "k-"+cs.charset)
			if err != nil || len(rows) != 1 || !bytes.Equal(rows[0].Message.Body, []byte(body)) {
				t.Fatalf("the body did not come back as written (%d rows, %v)", len(rows), err)
			}
		})
	}
}

// TestLargeBodyUnderInterpolateParamsKeepsTheCallersTx pins a fix found by hostile testing. What it guarded
// against: the doc
// promises that a row fits max_allowed_packet whenever its values do, and
// that the caller's transaction survives an enqueue. A 9 MiB body past the
// budget goes as an argument; with interpolateParams=true the driver
// interpolates it (escaped: a zero byte takes two) into an 18 MiB
// statement, under the driver's own 64 MiB bound but over MariaDB's
// default 16 MiB: the server drops the connection, and the caller's
// transaction with it.
func TestLargeBodyUnderInterpolateParamsKeepsTheCallersTx(t *testing.T) {
	t.Parallel()
	pub := newFake()
	db, _ := setup(t, pub)
	var packet int
	if err := db.Get(&packet, "SELECT @@max_allowed_packet"); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, 9<<20) // zero bytes: escaped as \0
	if 2*len(body) < packet {
		t.Skipf("max_allowed_packet %d holds the escaped body", packet)
	}
	idb := testenv.MySQLWith(t, db, func(c *mysql.Config) { c.InterpolateParams = true })
	r := relayOn(t, idb, pub)
	tx := idb.MustBegin()
	defer tx.Rollback()
	if _, err := tx.Exec("INSERT INTO orders (id, amount) VALUES ('o-big', 10)"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Enqueue(bg, tx, outbox.Message{Topic: "orders", Key: "k-big", Body: body}); err != nil {
		t.Fatalf("enqueue a %d-byte body (max_allowed_packet %d): %v", len(body), packet, err)
	}
	if _, err := tx.Exec("UPDATE orders SET amount = 11 WHERE id = 'o-big'"); err != nil {
		t.Fatalf("the caller's transaction after the enqueue: %v", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

// TestBodiesAtTheBudgetEdgeHostile5: bodies one byte under, at and over
// what the budget leaves, with the owner (Transact) after them, under
// every DSN variant, inside the caller's transaction, and the 4 MiB and
// 9 MiB bodies without interpolation.
func TestBodiesAtTheBudgetEdgeHostile5(t *testing.T) {
	t.Parallel()
	pub := newFake()
	db, _ := setup(t, pub)
	for vi, v := range testenv.MySQLVariants(t, db) {
		t.Run(v.Name, func(t *testing.T) {
			r := relayOn(t, v.DB, pub)
			topic := testenv.Name(t, "T")
			key := "k"
			// Inlined before the body: topic, key hash, key, tag, sharding
			// key, its hash, properties ("{}").
			before := len(topic) + 32 + len(key) + 32 + 2
			for _, d := range []int{-1, 0, 1} {
				for _, transact := range []bool{false, true} {
					body := bytes.Repeat([]byte{0, '\'', '\\', 0xbf}, (sqldb.InlineBudget-before+d+3)/4)[:sqldb.InlineBudget-before+d]
					m := outbox.Message{Topic: topic, Key: fmt.Sprintf("%c", 'a'+2*(d+1)+boolInt(transact)), Body: body}
					var err error
					if transact {
						err = r.Transact(bg, func(ctx context.Context, tx *outbox.Tx) error {
							if _, err := tx.ExecContext(ctx, "INSERT INTO orders (id, amount) VALUES (?, 1)", fmt.Sprint(vi, m.Key)); err != nil {
								return err
							}
							_, err := tx.Enqueue(ctx, m)
							if err != nil {
								return err
							}
							_, err = tx.ExecContext(ctx, "UPDATE orders SET amount = 2 WHERE id = ?", fmt.Sprint(vi, m.Key))
							return err
						})
					} else {
						_, _, err = r.Enqueue(bg, v.DB, m)
					}
					if err != nil {
						t.Fatalf("body %+d at the budget (transact %v): %v", d, transact, err)
					}
					rows, err := r.Find(bg, m.Key)
					var got []byte
					for _, row := range rows {
						if row.Topic == topic {
							got = row.Message.Body
						}
					}
					if err != nil || !bytes.Equal(got, body) {
						t.Fatalf("body %+d at the budget (transact %v) came back altered: %d bytes, %v", d, transact, len(got), err)
					}
				}
			}
		})
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestFindUnderAMultibyteCharsetWithInterpolation pins a fix found by hostile testing. What it guarded
// against: the same
// driver escaping corrupts the binary arguments of the read paths (a key
// hash holding a lead byte before 0x5c or 0x27): under sjis with
// interpolateParams some rows just enqueued are not found.
func TestFindUnderAMultibyteCharsetWithInterpolation(t *testing.T) {
	t.Parallel()
	pub := newFake()
	db, _ := setup(t, pub)
	sdb := testenv.MySQLWith(t, db, testenv.Interpolated("sjis"))
	r := relayOn(t, sdb, pub)
	var missing []string
	for i := range 100 {
		k := fmt.Sprint("key-", i)
		if _, _, err := r.Enqueue(bg, sdb, outbox.Message{Topic: "orders", Key: k, Body: []byte("b")}); err != nil {
			t.Fatal(err)
		}
		if rows, err := r.Find(bg, k); err != nil || len(rows) != 1 {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%d of 100 rows just enqueued not found: %v", len(missing), missing)
	}
}
