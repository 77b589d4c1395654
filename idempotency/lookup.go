package idempotency

import (
	"context"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/internal/sqldb"
)

// KeyState is what a [MySQLStore] holds for a business key in one group.
type KeyState struct {
	Group string
	// Done is true once the effect was recorded; false while a claim holds
	// or held the key (a lease that ended without Complete means the last
	// attempt failed or crashed).
	Done bool
	// Attempts counts the claims since the key was last completed.
	Attempts int
	// Expires is when the lease (processing) or the retention (done) ends.
	Expires time.Time
	Updated time.Time
}

type keyStateRow struct {
	Group    string     `db:"consumer_group"`
	Status   int        `db:"status"`
	Attempts int        `db:"attempts"`
	Expires  sqldb.Time `db:"expires_at"`
	Updated  sqldb.Time `db:"updated_at"`
}

// Lookup returns key's state in each of groups that holds it, for an
// operator asking where a message is (`reliablemq trace`). Each group is
// one primary-key lookup.
func (s *MySQLStore) Lookup(ctx context.Context, key string, groups ...string) ([]KeyState, error) {
	if len(groups) == 0 {
		return nil, nil
	}
	q, args, err := sqlx.In("SELECT consumer_group, status, attempts, CAST(expires_at AS CHAR) AS expires_at,"+
		" CAST(updated_at AS CHAR) AS updated_at FROM "+sqldb.Quote(s.table)+" WHERE consumer_group IN (?) AND key_hash = ? AND biz_key = ?"+
		" ORDER BY consumer_group", groups, sqldb.Hash(key), []byte(key))
	if err != nil {
		return nil, fmt.Errorf("idempotency: lookup %s: %w", quoted(key), err)
	}
	var rows []keyStateRow
	if err := sqldb.Select(ctx, s.db, &rows, q, args...); err != nil {
		return nil, fmt.Errorf("idempotency: lookup %s: %w", quoted(key), err)
	}
	out := make([]KeyState, len(rows))
	for i, r := range rows {
		out[i] = KeyState{Group: r.Group, Done: r.Status == statusDone, Attempts: r.Attempts, Expires: r.Expires.Time,
			Updated: r.Updated.Time}
	}
	return out, nil
}
