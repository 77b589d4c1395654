// Package sqldb holds the MySQL conventions the stores share, so that
// they hold whatever DSN options and session settings a caller's handle
// was opened with:
//
//   - every time the stores write is UTC_TIMESTAMP(6) arithmetic in SQL,
//     never NOW() (which follows each session's time_zone) and never a Go
//     time.Time parameter (which the driver converts to its loc);
//   - every DATETIME they read is selected as text (CAST(col AS CHAR))
//     and scanned through [Time] as a UTC wall clock, whatever parseTime and
//     loc say (a DATETIME the driver parses in a loc with DST shifts inside
//     the zone's gap hour); [Time] also takes a parsed time.Time's wall
//     clock, for columns read without the cast;
//   - an insert that may hit a unique key is a plain INSERT whose duplicate
//     error [IsDuplicate] recognises, never ON DUPLICATE KEY UPDATE with
//     affected-row counting (which clientFoundRows changes).
package sqldb

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/seed157d4c4d/reliablemq/internal/token"
)

// Time is a DATETIME column holding a UTC wall clock.
type Time struct{ time.Time }

// datetime is MySQL's text form of a DATETIME(6).
const datetime = "2006-01-02 15:04:05.999999"

// Scan implements sql.Scanner.
func (t *Time) Scan(v any) error {
	switch v := v.(type) {
	case time.Time:
		// The driver read the wall clock in its loc; the column holds UTC.
		t.Time = time.Date(v.Year(), v.Month(), v.Day(), v.Hour(), v.Minute(), v.Second(), v.Nanosecond(), time.UTC)
	case []byte:
		return t.parse(string(v))
	case string:
		return t.parse(v)
	case nil:
		t.Time = time.Time{}
	default:
		return fmt.Errorf("sqldb: cannot scan %T into a time", v)
	}
	return nil
}

func (t *Time) parse(s string) error {
	p, err := time.ParseInLocation(datetime, s, time.UTC)
	if err != nil {
		return fmt.Errorf("sqldb: %w", err)
	}
	t.Time = p
	return nil
}

// NullTime is a nullable [Time]; Valid is false for NULL.
type NullTime struct {
	Time  time.Time
	Valid bool
}

// Scan implements sql.Scanner.
func (n *NullTime) Scan(v any) error {
	if v == nil {
		n.Time, n.Valid = time.Time{}, false
		return nil
	}
	var t Time
	if err := t.Scan(v); err != nil {
		return err
	}
	n.Time, n.Valid = t.Time, true
	return nil
}

// Ptr returns the time or nil for NULL.
func (n NullTime) Ptr() *time.Time {
	if !n.Valid {
		return nil
	}
	return &n.Time
}

// IsDuplicate reports whether err is MySQL's duplicate-key error (1062).
func IsDuplicate(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == 1062
}

// IsDeadlock reports whether err is InnoDB giving up on a lock: chosen as
// a deadlock victim (1213) or a lock wait timeout (1205). The statement
// (or with 1213 the whole transaction) was rolled back: try again.
func IsDeadlock(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && (me.Number == 1213 || me.Number == 1205)
}

// identifier is what the stores accept as a table name: a plain,
// unquoted MySQL identifier.
var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)

// ValidTable reports whether name can be a table name in the stores' SQL:
// table names are configuration, validated once, never quoted user input.
func ValidTable(name string) bool { return identifier.MatchString(name) }

// Quote returns a valid table name as a quoted identifier, so a name that
// is a reserved word ("order", "group") works too. Backticks quote in
// every sql_mode, ANSI_QUOTES included.
func Quote(name string) string { return "`" + name + "`" }

// Hash is the SHA-256 of s, the fixed-width index key the stores use for
// business and sharding keys of any length and bytes.
func Hash(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

// Token returns a random 128-bit hex string ([token.New]), for the stores'
// fencing tokens and claim owners.
func Token() string { return token.New() }
