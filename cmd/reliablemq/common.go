package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jmoiron/sqlx"
	"github.com/seed157d4c4d/reliablemq/internal/clientlog"
	"github.com/seed157d4c4d/reliablemq/internal/namespace"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// errUsage matches every usage error (exit status 2): the command line, or
// MYSQL_DSN, cannot be understood, so nothing was attempted.
var errUsage = errors.New("usage")

// usageError is a usage error; its text names what is wrong.
type usageError struct{ msg string }

func (e *usageError) Error() string        { return e.msg }
func (e *usageError) Is(target error) bool { return target == errUsage }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// exitStatus is these footers' common text, in every command's -h.
const exitStatus = `
Exit status: 0 ok; 1 the work failed (one line on stderr: "reliablemq: <command>: ...");
2 usage error (also one line). -h prints this help on stdout and exits 0.
`

// setUsage makes fs's usage text head, the flags and the exit statuses,
// written to fs.Output().
func setUsage(fs *flag.FlagSet, head string) {
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), head)
		fs.PrintDefaults()
		fmt.Fprint(fs.Output(), exitStatus)
	}
}

// parseFlags parses args into fs. Flags may come before or after the
// positional arguments ("dead list -group g" and "dead -group g list" are
// the same); fs.Args() holds the positional ones afterwards. For -h it
// prints the usage on stdout and reports errHelp; a bad flag is a usage
// error naming it, and nothing is printed.
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) error {
	fs.SetOutput(io.Discard) // the flag package's own messages are multi-line
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.SetOutput(stdout)
				fs.Usage()
				return errHelp
			}
			return usagef("%s: %v; see \"reliablemq %s -h\"", fs.Name(), err, fs.Name())
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
	if err := fs.Parse(append([]string{"--"}, positional...)); err != nil {
		return usagef("%s: %v", fs.Name(), err)
	}
	return nil
}

var errHelp = errors.New("help shown")

// dsnFlag's default is not shown in usage text: a DSN may hold a
// password. openDB falls back to MYSQL_DSN.
func dsnFlag(fs *flag.FlagSet) *string {
	return fs.String("dsn", "", "MySQL DSN, e.g. user:pass@tcp(host:3306)/db (default: $MYSQL_DSN, never printed)")
}

func namesrvFlag(fs *flag.FlagSet) *string {
	return fs.String("namesrv", "", "RocketMQ name servers, ';'-separated (default: $RMQ_NAMESRV)")
}

// namespaceFlag is the RocketMQ namespace flag of the commands that talk
// to the broker; resolve it with brokerNamespace.
// Its default is $RMQ_NAMESPACE, so -namespace "" selects none.
func namespaceFlag(fs *flag.FlagSet) *string {
	return fs.String("namespace", os.Getenv("RMQ_NAMESPACE"), "RocketMQ namespace of the topics and groups, as the clients' namespace option (default: $RMQ_NAMESPACE)")
}

// brokerNamespace checks the namespace flag's value.
func brokerNamespace(ns string) (string, error) {
	if err := namespace.Validate(ns); err != nil {
		return "", usagef("%v", err)
	}
	return ns, nil
}

// inNamespace reports whether a broker resource name belongs to ns (every
// name does when ns is empty).
func inNamespace(ns, name string) bool { return ns == "" || namespace.Strip(ns, name) != name }

// dbTimeout bounds connecting to the database and the first ping.
const dbTimeout = 10 * time.Second

// openDB opens and pings the database dsn names (MYSQL_DSN when dsn is
// empty). A malformed DSN is a usage error; its text never quotes the DSN,
// which may hold a password. build, unless nil, makes what the command
// needs of the handle, and checks what else it needs without a
// connection (its name servers), before any connection, so that a bad
// option (a -table) or a missing setting is reported as such, not as the
// database being down; its error is returned as it is.
func openDB(ctx context.Context, dsn string, build func(*sqlx.DB) error) (*sqlx.DB, error) {
	if dsn == "" {
		dsn = os.Getenv("MYSQL_DSN")
	}
	if dsn == "" {
		return nil, usagef("no database: pass -dsn or set MYSQL_DSN")
	}
	// The driver's parse errors may quote parts of the DSN (the network
	// name, which a malformed DSN can make the password), so they are not
	// passed on.
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, usagef("bad -dsn or MYSQL_DSN: want [user[:password]@][tcp(host:port)|unix(path)]/dbname[?param=value]")
	}
	switch cfg.Net {
	case "tcp", "tcp4", "tcp6", "unix":
	default:
		return nil, usagef("bad -dsn or MYSQL_DSN: the network must be tcp or unix, as in user:password@tcp(host:port)/dbname")
	}
	cfg.ParseTime = true
	if cfg.Timeout == 0 {
		cfg.Timeout = dbTimeout
	}
	db, err := sqlx.Open("mysql", cfg.FormatDSN())
	if err != nil {
		return nil, err
	}
	if build != nil {
		if err := build(db); err != nil {
			db.Close()
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, dbTimeout)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		if errors.As(err, new(*net.OpError)) || errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("database %s unreachable: %w", cfg.Addr, err)
		}
		return nil, fmt.Errorf("database %s: %w", cfg.Addr, err)
	}
	return db, nil
}

// checkListenAddr reports what makes addr, a host:port to listen on,
// malformed, without resolving the host.
func checkListenAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err == nil && port != "" {
		_, err = net.LookupPort("tcp", port)
	}
	return err
}

func nameServers(s string) ([]string, error) {
	if s == "" {
		s = os.Getenv("RMQ_NAMESRV")
	}
	if s == "" {
		return nil, errors.New("no name server: pass -namesrv or set RMQ_NAMESRV")
	}
	clientlog.Contain()
	return strings.Split(s, ";"), nil
}

// probeTimeout bounds each name server probe.
const probeTimeout = 3 * time.Second

// probeNameServers connects to each name server in turn and reports, when
// none accepts a connection, that they are unreachable: the official
// client would only say "route info not found" for every send.
func probeNameServers(ctx context.Context, names []string) error {
	var errs []error
	for _, ns := range names {
		d := net.Dialer{Timeout: probeTimeout}
		c, err := d.DialContext(ctx, "tcp", ns)
		if err == nil {
			c.Close()
			return nil
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("name server unreachable: %w", errors.Join(errs...))
}

// newProducer returns a producer for names in namespace ns with the broker
// credentials from the environment and the options extra. Its per-attempt
// log lines are discarded (the library's default is slog.Default, which
// would print them on stderr): a failed send reaches the user once, as the
// command's error.
func newProducer(names []string, ns string, extra ...producer.Option) (*producer.Producer, error) {
	opts := append([]producer.Option{producer.WithLogger(slog.New(slog.DiscardHandler)), producer.WithNamespace(ns)}, extra...)
	if cr := brokerCredentials(); cr.AccessKey != "" {
		opts = append(opts, producer.WithCredentials(cr))
	}
	return producer.New(names, opts...)
}

// brokerCredentials reads an ACL account from RMQ_ACCESS_KEY and
// RMQ_SECRET_KEY (and RMQ_SECURITY_TOKEN), from the environment only:
// flags would show the secret in ps. The zero value when unset.
func brokerCredentials() producer.Credentials {
	return producer.Credentials{AccessKey: os.Getenv("RMQ_ACCESS_KEY"), SecretKey: os.Getenv("RMQ_SECRET_KEY"),
		SecurityToken: os.Getenv("RMQ_SECURITY_TOKEN")}
}
