package migrations_test

import (
	"strings"
	"testing"

	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

// TestOutboxLeaseOwnerIsStoredAtFullWidth pins migration 11: a claim
// stamps lease_owner on its rows and the mark clears it, and InnoDB
// updates a record in place only when no field changes length. The column
// must be a CHAR of a single-byte character set (stored at its full
// width), still compare owners byte for byte, and read back empty for an
// unclaimed row.
func TestOutboxLeaseOwnerIsStoredAtFullWidth(t *testing.T) {
	t.Parallel()
	db := testenv.MySQL(t)
	var col struct {
		Type    string `db:"DATA_TYPE"`
		Charset string `db:"CHARACTER_SET_NAME"`
		Length  int    `db:"CHARACTER_MAXIMUM_LENGTH"`
		Octets  int    `db:"CHARACTER_OCTET_LENGTH"`
	}
	if err := db.Get(&col, `SELECT DATA_TYPE, COALESCE(CHARACTER_SET_NAME, '') AS CHARACTER_SET_NAME, CHARACTER_MAXIMUM_LENGTH,
		CHARACTER_OCTET_LENGTH FROM information_schema.COLUMNS
		WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'mq_log' AND COLUMN_NAME = 'lease_owner'`); err != nil {
		t.Fatal(err)
	}
	if !strings.EqualFold(col.Type, "char") || col.Length != 32 || col.Octets != 32 {
		t.Fatalf("lease_owner is %s(%d) in %q (%d bytes): its length changes with its value", col.Type, col.Length, col.Charset, col.Octets)
	}
	owner := strings.Repeat("ab", 16)
	db.MustExec(`INSERT INTO mq_log (topic, key_hash, biz_key, tag, sharding_key, sharding_hash, properties, body, delay_ms,
		status, attempts, next_attempt_at, lease_owner, last_error, msg_id, created_at, updated_at)
		VALUES ('T', REPEAT('k', 32), 'k', '', '', REPEAT('s', 32), '{}', 'b', 0, 0, 0, NOW(6), ?, '', '', NOW(6), NOW(6)),
		       ('T', REPEAT('j', 32), 'j', '', '', REPEAT('s', 32), '{}', 'b', 0, 0, 0, NOW(6), '', '', '', NOW(6), NOW(6))`, owner)
	var n int
	if err := db.Get(&n, "SELECT COUNT(*) FROM mq_log WHERE lease_owner = ?", strings.ToUpper(owner)); err != nil || n != 0 {
		t.Fatalf("owner %s matches its upper case: %d %v", owner, n, err)
	}
	var got []string
	if err := db.Select(&got, "SELECT lease_owner FROM mq_log WHERE lease_owner IN ('', ?) ORDER BY biz_key", owner); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != "" || got[1] != owner {
		t.Fatalf("lease owners read back as %q, want [\"\" %q]", got, owner)
	}
}
