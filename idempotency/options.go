package idempotency

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/sqldb"
)

// Each constructor takes its own option type, so an option that would not
// apply does not compile. An option that applies to two constructors
// returns an interface that is both.

// GuardOption configures a [Guard] ([NewGuard]).
type GuardOption interface{ applyGuard(*settings) }

// TxGuardOption configures a [TxGuard] ([NewTxGuard]).
type TxGuardOption interface{ applyTxGuard(*settings) }

// MySQLOption configures a [MySQLStore] ([NewMySQLStore]).
type MySQLOption interface{ applyMySQL(*settings) }

// RedisOption configures a [RedisStore] ([NewRedisStore]).
type RedisOption interface{ applyRedis(*settings) }

// RetentionOption is [WithRetention]'s type: it configures a [Guard] and
// a [TxGuard].
type RetentionOption interface {
	GuardOption
	TxGuardOption
}

// TableOption is [WithTable]'s type: it configures a [MySQLStore] and a
// [TxGuard].
type TableOption interface {
	MySQLOption
	TxGuardOption
}

// settings holds every constructor's settings; each reads its own.
type settings struct {
	lease, retention time.Duration
	table, prefix    string
}

func defaults() settings {
	return settings{lease: time.Minute, retention: 7 * 24 * time.Hour, table: "mq_consume_log",
		prefix: "reliablemq:idem:"}
}

// setting implements every option interface; the constructors' option
// types let each option through only where it applies.
type setting func(*settings)

func (f setting) applyGuard(s *settings)   { f(s) }
func (f setting) applyTxGuard(s *settings) { f(s) }
func (f setting) applyMySQL(s *settings)   { f(s) }
func (f setting) applyRedis(s *settings)   { f(s) }

// WithLease sets how long a claim holds a key before another consumer may
// take it over: longer than the handler's worst-case run time, short
// enough that a crash mid-handler does not hold the key for long.
// Default 1 minute.
func WithLease(d time.Duration) GuardOption { return setting(func(s *settings) { s.lease = d }) }

// WithRetention sets how long a done marker suppresses duplicates. It must
// cover the longest span over which a duplicate can arrive: the consumer's
// redelivery span (see consumer.RedeliverySpan), outbox resends, and
// upstream retries. Default 7 days.
func WithRetention(d time.Duration) RetentionOption {
	return setting(func(s *settings) { s.retention = d })
}

// WithTable sets the consume-log table, a plain identifier. Default
// "mq_consume_log" (created by the migrations package).
func WithTable(name string) TableOption { return setting(func(s *settings) { s.table = name }) }

// WithPrefix sets the prefix of the store's Redis keys. Default
// "reliablemq:idem:". Braces are refused: a hash tag there would put
// every key in one cluster slot.
func WithPrefix(p string) RedisOption { return setting(func(s *settings) { s.prefix = p }) }

// check validates the settings; leased for a Guard.
func (c settings) check(leased bool) error {
	var errs []error
	if c.lease < time.Millisecond {
		errs = append(errs, fmt.Errorf("idempotency: lease %v < 1ms", c.lease))
	}
	if c.retention <= 0 {
		errs = append(errs, fmt.Errorf("idempotency: retention %v <= 0", c.retention))
	}
	if leased && c.retention < c.lease {
		errs = append(errs, fmt.Errorf("idempotency: retention %v shorter than the lease %v", c.retention, c.lease))
	}
	if !sqldb.ValidTable(c.table) {
		errs = append(errs, fmt.Errorf("idempotency: table name %q is not a plain identifier", c.table))
	}
	if c.prefix == "" || strings.ContainsAny(c.prefix, "{}") {
		errs = append(errs, fmt.Errorf("idempotency: redis key prefix %q is empty or holds a brace (a hash tag would pin every key to one slot)", c.prefix))
	}
	return errors.Join(errs...)
}
