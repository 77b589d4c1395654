package idempotency_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/go-sql-driver/mysql"
	"github.com/seed157d4c4d/reliablemq/idempotency"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

// TestBatchOfLongKeysFitsAOneMiBPacket pins a fix found by hostile testing. What it guarded
// against: keys up to 65,535
// bytes are accepted, and a batch's values go inline up to the 512 KiB
// budget, the rest as arguments. Hex doubles the inlined half to 1 MiB,
// plus the statement's own text: with max_allowed_packet 1 MiB (the DSN's
// maxAllowedPacket, as for a server configured so) nine such keys in one
// batch make a prepared statement the driver cannot send. It reports
// driver.ErrBadConn for a prepare, so database/sql throws away a pooled
// connection per try, and every key of the batch (the consumer combines
// concurrent batches into one) fails, on every redelivery.
func TestBatchOfLongKeysFitsAOneMiBPacket(t *testing.T) {
	t.Parallel()
	db := testenv.MySQL(t)
	pdb := testenv.MySQLWith(t, db, func(c *mysql.Config) { c.MaxAllowedPacket = 1 << 20 })
	s, err := idempotency.NewMySQLStore(pdb)
	if err != nil {
		t.Fatal(err)
	}
	g, err := idempotency.NewGuard("g", s)
	if err != nil {
		t.Fatal(err)
	}
	keys := []string{"short-1", "short-2"}
	for i := range 9 {
		keys = append(keys, fmt.Sprint(i, strings.Repeat("k", 65_400)))
	}
	_, errs := g.ClaimBatch(context.Background(), keys)
	var failed []string
	for i, err := range errs {
		if err != nil {
			failed = append(failed, fmt.Sprintf("key %d (%d bytes): %v", i, len(keys[i]), errors.Unwrap(err)))
		}
	}
	if len(failed) > 0 {
		t.Fatalf("claims of a batch with nine 65,400-byte keys under max_allowed_packet 1 MiB failed:\n%s", strings.Join(failed, "\n"))
	}
}
