package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/deadletter"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/outbox"
	"github.com/seed157d4c4d/reliablemq/producer"
	"github.com/seed157d4c4d/reliablemq/rmqtest"
)

// The CLI is built once per test binary, on first use, into binDir.
var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// cliBinary returns the path of the built reliablemq binary.
func cliBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "reliablemq-cli-test"); buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "reliablemq")
		if out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// cliTimeout bounds one run of the binary; none should come near it.
const cliTimeout = 2 * time.Minute

// notifyBuffer is a buffer safe for concurrent use that tells waiters
// when what it holds changes.
type notifyBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{}
}

func newNotifyBuffer() *notifyBuffer { return &notifyBuffer{changed: make(chan struct{})} }

func (n *notifyBuffer) Write(p []byte) (int, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	close(n.changed)
	n.changed = make(chan struct{})
	return n.b.Write(p)
}

func (n *notifyBuffer) String() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.b.String()
}

// waitFor blocks until the buffer contains s, and fails the test if the
// process exits (done closes) or cliTimeout passes first.
func (n *notifyBuffer) waitFor(t *testing.T, s string, done <-chan struct{}) {
	t.Helper()
	deadline := time.After(cliTimeout)
	for {
		n.mu.Lock()
		has, changed := strings.Contains(n.b.String(), s), n.changed
		n.mu.Unlock()
		if has {
			return
		}
		select {
		case <-changed:
		case <-done:
			if !strings.Contains(n.String(), s) {
				t.Fatalf("the process exited before printing %q; it printed:\n%s", s, n.String())
			}
			return
		case <-deadline:
			t.Fatalf("no %q after %v; printed:\n%s", s, cliTimeout, n.String())
		}
	}
}

// proc is a running reliablemq.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr *notifyBuffer
	done           chan struct{}
	code           int
}

// startCLI starts the binary with exactly env as its environment.
func startCLI(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	cmd := exec.CommandContext(ctx, cliBinary(t), args...)
	cmd.Env = env
	p := &proc{cmd: cmd, stdout: newNotifyBuffer(), stderr: newNotifyBuffer(), done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() {
		defer close(p.done)
		defer cancel()
		err := cmd.Wait()
		var exit *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &exit):
			p.code = exit.ExitCode()
		default:
			p.code = -1
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-p.done
	})
	return p
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait() int {
	<-p.done
	return p.code
}

// interrupt sends SIGINT and waits for the exit.
func (p *proc) interrupt(t *testing.T) int {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	return p.wait()
}

// deadAddr returns a loopback address nothing listens on: port 1, which
// no listener asking for a free port is given (a port closed after such a
// listen can be given to another test binary running meanwhile).
func deadAddr(t *testing.T) string {
	t.Helper()
	const addr = "127.0.0.1:1"
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Skipf("something listens on %s, the address these tests need unreachable", addr)
	}
	return addr
}

func randomHex(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// passwordDSN creates a MySQL user with a password that may use the
// database dbDSN names and reliablemq_bench (for bench), and returns a
// DSN for it and the password; the user is dropped when the test ends.
func passwordDSN(t *testing.T, dbDSN string) (string, string) {
	t.Helper()
	cfg, err := mysql.ParseDSN(dbDSN)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := sql.Open("mysql", dbDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	user, pw := "rmqcli_"+randomHex(t), "S3cret-pw-"+randomHex(t)
	hosts := []string{"%", "localhost"}
	for _, h := range hosts {
		for _, q := range []string{
			fmt.Sprintf("CREATE USER '%s'@'%s' IDENTIFIED BY '%s'", user, h, pw),
			fmt.Sprintf("GRANT ALL ON `%s`.* TO '%s'@'%s'", cfg.DBName, user, h),
			fmt.Sprintf("GRANT ALL ON `reliablemq_bench`.* TO '%s'@'%s'", user, h),
		} {
			if _, err := admin.Exec(q); err != nil {
				t.Skipf("cannot create a MySQL user with a password (MYSQL_DSN needs CREATE USER): %v", err)
			}
		}
	}
	t.Cleanup(func() {
		a, err := sql.Open("mysql", dbDSN)
		if err != nil {
			t.Error(err)
			return
		}
		defer a.Close()
		for _, h := range hosts {
			if _, err := a.Exec(fmt.Sprintf("DROP USER '%s'@'%s'", user, h)); err != nil {
				t.Errorf("drop user %s: %v", user, err)
			}
		}
	})
	cfg.User, cfg.Passwd = user, pw
	return cfg.FormatDSN(), pw
}

// cliCase is one run of the binary.
type cliCase struct {
	name string
	args []string
	code int
	// stdout must contain this; for a failure stderr must be one line
	// starting with "reliablemq: <args[0]>:" (or errPrefix) and
	// containing errText.
	stdout, errPrefix, errText string
	// before runs before the binary; interruptOn, when set, is waited for
	// on stdout and the process is then interrupted with SIGINT.
	before      func(t *testing.T)
	interruptOn string
}

// TestCLI runs the built binary for every command: good runs (exit 0),
// failed work (1), usage errors (2), flags before and after the action, -h.
// A DSN with a password is in MYSQL_DSN for every run and in -dsn for
// many, the broker's secret key in RMQ_SECRET_KEY: neither appears in any
// output. Every failure is exactly one line on stderr naming the command.
func TestCLI(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t, rmqtest.WithoutAutoCreateTopics())
	topic := testenv.Name(t, "T")
	env.CreateTopic(t, topic, 1)
	db := testenv.MySQL(t)
	dsn, pw := passwordDSN(t, testenv.MySQLDSN(t, db))
	secretKey := "SecretKey-" + randomHex(t)
	wrongPW := "Wrong-pw-" + randomHex(t)
	secrets := []string{pw, secretKey, wrongPW}
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	withAddr := func(addr, pass string) string {
		c := *cfg
		c.Addr, c.Passwd = addr, pass
		return c.FormatDSN()
	}
	unreachableDB := withAddr(deadAddr(t), pw)
	wrongPassword := withAddr(cfg.Addr, wrongPW)
	// A DSN the driver refuses, with the password where the driver's
	// parse error would quote it (no "@": it is read as the network).
	malformed := cfg.User + ":" + pw + "/tcp(" + cfg.Addr + ")/" + cfg.DBName
	ns, deadNS := env.Namesrv, deadAddr(t)
	baseEnv := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "MYSQL_DSN=" + dsn,
		"RMQ_ACCESS_KEY=rmqcli-ak", "RMQ_SECRET_KEY=" + secretKey}
	if gocache := os.Getenv("GOCACHE"); gocache != "" {
		baseEnv = append(baseEnv, "GOCACHE="+gocache)
	}
	dir := t.TempDir()

	enqueue := func(topic string, keys ...string) func(t *testing.T) {
		return func(t *testing.T) {
			relay, err := outbox.NewRelay(db, &producer.Producer{})
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range keys {
				if _, _, err := relay.Enqueue(context.Background(), db, outbox.Message{Topic: topic, Key: k, Body: []byte(k)}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	dead, err := deadletter.NewTable(db)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"m-1", "m-2"} {
		if _, err := dead.Park(context.Background(), &consumer.DeadLetter{Group: "coupons", Topic: topic, MsgID: id,
			Keys: []string{"order-" + id}, Body: []byte("poison"), Attempts: 4, LastError: "boom", Cause: consumer.CauseRetries}); err != nil {
			t.Fatal(err)
		}
	}
	sendsFail := func(t *testing.T) {
		b := env.Embedded
		if b == nil {
			t.Skip("needs rmqtest to fail sends (RMQ_NAMESRV is set)")
		}
		enqueue(topic, "fails-1")(t)
		b.Inject(rmqtest.SendMessage, rmqtest.Fault{Code: rmqtest.CodeServiceNotAvailable, Remark: "busy", Times: 100})
		t.Cleanup(b.ClearFaults)
	}

	cases := []cliCase{
		// No command.
		{name: "no command", code: 2, errPrefix: "reliablemq: no command"},
		{name: "unknown command", args: []string{"nope"}, code: 2, errText: "unknown command"},
		{name: "help", args: []string{"-h"}, stdout: "Exit status: 0 ok; 1 the work failed; 2 usage error"},

		// migrate
		{name: "migrate -h", args: []string{"migrate", "-h"}, stdout: "usage: reliablemq migrate"},
		{name: "help migrate", args: []string{"help", "migrate"}, stdout: "usage: reliablemq migrate"},
		{name: "help dead", args: []string{"help", "dead"}, stdout: "usage: reliablemq dead"},
		{name: "help of an unknown command", args: []string{"help", "sideways"}, code: 2, errText: "unknown command"},
		{name: "help, two commands", args: []string{"help", "dead", "lag"}, code: 2, errText: `unexpected argument "lag"`},
		{name: "migrate status from MYSQL_DSN", args: []string{"migrate", "status"}, stdout: "00007_text_and_tags.sql"},
		{name: "migrate up, -dsn after the action", args: []string{"migrate", "up", "-dsn", dsn}, stdout: "already up to date"},
		{name: "migrate status, -dsn before the action", args: []string{"migrate", "-dsn", dsn, "status"}, stdout: "applied"},
		{name: "migrate -dsn=", args: []string{"migrate", "-dsn=" + dsn, "status"}, stdout: "applied"},
		{name: "migrate missing action", args: []string{"migrate"}, code: 2, errText: "missing action"},
		{name: "migrate unknown action", args: []string{"migrate", "sideways"}, code: 2, errText: `unknown action "sideways"`},
		{name: "migrate extra argument", args: []string{"migrate", "up", "extra"}, code: 2, errText: `unexpected argument "extra"`},
		{name: "migrate DSN as an argument", args: []string{"migrate", "up", dsn}, code: 2, errText: "unexpected argument"},
		{name: "migrate unknown flag", args: []string{"migrate", "-bogus", "up"}, code: 2, errText: "-bogus"},
		{name: "migrate flag without value", args: []string{"migrate", "up", "-dsn"}, code: 2, errText: "-dsn"},
		{name: "migrate malformed DSN", args: []string{"migrate", "-dsn", malformed, "up"}, code: 2, errText: "bad -dsn"},
		{name: "migrate database unreachable", args: []string{"migrate", "-dsn", unreachableDB, "up"}, code: 1, errText: "unreachable"},
		{name: "migrate wrong password", args: []string{"migrate", "status", "-dsn", wrongPassword}, code: 1, errText: "Access denied"},

		// reconcile
		{name: "reconcile -h", args: []string{"reconcile", "-h"}, stdout: "usage: reliablemq reconcile"},
		{name: "reconcile -once sends", args: []string{"reconcile", "-namesrv", ns, "-once"}, stdout: "sent 2, failed 0, dead 0",
			before: enqueue(topic, "o-1", "o-2")},
		{name: "reconcile -once idle, -dsn", args: []string{"reconcile", "-once", "-dsn", dsn, "-namesrv", ns}, stdout: "sent 0, failed 0"},
		{name: "reconcile -once failed sends", args: []string{"reconcile", "-once", "-namesrv", ns}, code: 1,
			stdout: "failed 1", errText: "1 sends failed (transient 1)", before: sendsFail},
		{name: "reconcile name server unreachable", args: []string{"reconcile", "-once", "-namesrv", deadNS}, code: 1,
			errText: "name server unreachable: dial tcp " + deadNS},
		{name: "reconcile missing table", args: []string{"reconcile", "-once", "-namesrv", ns, "-table", "nosuch"}, code: 1,
			errText: "table nosuch"},
		{name: "reconcile -every missing table", args: []string{"reconcile", "-every", "1s", "-namesrv", ns, "-table", "nosuch"},
			code: 1, errText: "table nosuch"},
		{name: "reconcile bad table name", args: []string{"reconcile", "-once", "-namesrv", ns, "-table", "no such"}, code: 2},
		{name: "reconcile database unreachable", args: []string{"reconcile", "-once", "-namesrv", ns, "-dsn", unreachableDB},
			code: 1, errText: "unreachable"},
		{name: "reconcile no name server", args: []string{"reconcile", "-once"}, code: 1, errText: "RMQ_NAMESRV"},
		{name: "reconcile no mode", args: []string{"reconcile", "-namesrv", ns}, code: 2, errText: "exactly one of -once, -every, -cron"},
		{name: "reconcile two modes", args: []string{"reconcile", "-once", "-every", "1s"}, code: 2, errText: "exactly one"},
		{name: "reconcile -once extra", args: []string{"reconcile", "-once", "extra"}, code: 2, errText: `unexpected argument "extra"`},
		{name: "reconcile extra -once", args: []string{"reconcile", "extra", "-once"}, code: 2, errText: `unexpected argument "extra"`},
		{name: "reconcile negative -every", args: []string{"reconcile", "-every", "-5s"}, code: 2, errText: "negative"},
		{name: "reconcile bad -every", args: []string{"reconcile", "-every", "soon"}, code: 2, errText: "-every"},
		{name: "reconcile bad -cron", args: []string{"reconcile", "-cron", "every tuesday"}, code: 2, errText: "-cron"},
		{name: "reconcile unknown flag", args: []string{"reconcile", "-bogus"}, code: 2, errText: "-bogus"},

		// dead
		{name: "dead -h", args: []string{"dead", "-h"}, stdout: "usage: reliablemq dead"},
		{name: "dead list", args: []string{"dead", "list"}, stdout: "order-m-2"},
		{name: "dead list, flags before", args: []string{"dead", "-dsn", dsn, "-group", "coupons", "list"}, stdout: "order-m-1"},
		{name: "dead show, flags after", args: []string{"dead", "show", "1", "-dsn", dsn}, stdout: "last error:\nboom"},
		{name: "dead discard", args: []string{"dead", "discard", "1", "-reason", "test"}, stdout: "discarded 1"},
		{name: "dead discard again", args: []string{"dead", "-reason", "test", "discard", "1"}, code: 1, errText: "not parked"},
		{name: "dead replay name server unreachable", args: []string{"dead", "-reason", "x", "replay", "2", "-namesrv", deadNS},
			code: 1, errText: "name server unreachable"},
		{name: "dead replay", args: []string{"dead", "-namesrv", ns, "-reason", "fixed", "replay", "2"}, stdout: "replayed 2"},
		{name: "dead show missing", args: []string{"dead", "show", "999"}, code: 1, errText: "not found"},
		{name: "dead missing table", args: []string{"dead", "list", "-table", "nosuch"}, code: 1, errText: "nosuch"},
		{name: "dead database unreachable", args: []string{"dead", "list", "-dsn", unreachableDB}, code: 1, errText: "unreachable"},
		{name: "dead missing action", args: []string{"dead"}, code: 2, errText: "missing action"},
		{name: "dead unknown action", args: []string{"dead", "frob"}, code: 2, errText: `unknown action "frob"`},
		{name: "dead bad id", args: []string{"dead", "show", "abc"}, code: 2, errText: `bad id "abc"`},
		{name: "dead zero id", args: []string{"dead", "replay", "0"}, code: 2, errText: `bad id "0"`},
		{name: "dead missing id", args: []string{"dead", "show"}, code: 2, errText: "missing ID"},
		{name: "dead extra argument", args: []string{"dead", "list", "extra"}, code: 2, errText: `unexpected argument "extra"`},
		{name: "dead show extra argument", args: []string{"dead", "show", "1", "2"}, code: 2, errText: `unexpected argument "2"`},
		{name: "dead discard without reason", args: []string{"dead", "discard", "2"}, code: 2, errText: "-reason"},
		{name: "dead bad status", args: []string{"dead", "list", "-status", "lost"}, code: 2, errText: "-status"},

		// lag
		{name: "lag -h", args: []string{"lag", "-h"}, stdout: "usage: reliablemq lag"},
		{name: "lag", args: []string{"lag", "-namesrv", ns}, stdout: "TOTAL"},
		{name: "lag -json", args: []string{"lag", "-json", "-namesrv", ns}, stdout: `"total_lag"`},
		{name: "lag name server unreachable", args: []string{"lag", "-namesrv", deadNS}, code: 1, errText: "name server unreachable"},
		{name: "lag no name server", args: []string{"lag"}, code: 1, errText: "RMQ_NAMESRV"},
		{name: "lag extra argument", args: []string{"lag", "extra"}, code: 2, errText: `unexpected argument "extra"`},
		{name: "lag unknown flag", args: []string{"lag", "-dsn", dsn}, code: 2, errText: "-dsn"},

		// dev-broker
		{name: "dev-broker -h", args: []string{"dev-broker", "-h"}, stdout: "usage: reliablemq dev-broker"},
		{name: "dev-broker", args: []string{"dev-broker", "-namesrv", "127.0.0.1:0", "-broker", "127.0.0.1:0"},
			interruptOn: "Ctrl-C", stdout: "stopped"},
		{name: "dev-broker address in use", args: []string{"dev-broker", "-namesrv", ns, "-broker", "127.0.0.1:0"}, code: 1},
		{name: "dev-broker extra argument", args: []string{"dev-broker", "extra"}, code: 2, errText: `unexpected argument "extra"`},
		{name: "dev-broker bad -delay-levels", args: []string{"dev-broker", "-delay-levels", "1s,x"}, code: 2, errText: "-delay-levels"},

		// record
		{name: "record -h", args: []string{"record", "-h"}, stdout: "usage: reliablemq record"},
		{name: "record", args: []string{"record", "-namesrv", ns, "-listen", "127.0.0.1:0", "-out", filepath.Join(dir, "t.jsonl")},
			interruptOn: "Ctrl-C", stdout: "stopped; transcript in"},
		{name: "record existing file", args: []string{"record", "-namesrv", ns, "-listen", "127.0.0.1:0", "-out", filepath.Join(dir, "t.jsonl")},
			code: 1, errText: "exists"},
		{name: "record without -out", args: []string{"record", "-namesrv", ns}, code: 2, errText: "-out"},
		{name: "record extra argument", args: []string{"record", "-out", "x", "extra"}, code: 2, errText: `unexpected argument "extra"`},

		// bench
		{name: "bench -quick", args: []string{"bench", "-quick", "-ops", "50", "-drain-rows", "100"}, stdout: "PAIR"},
		{name: "bench -h", args: []string{"bench", "-h"}, stdout: "usage: reliablemq bench"},
		{name: "bench extra argument", args: []string{"bench", "-quick", "extra"}, code: 2, errText: `unexpected argument "extra"`},
		{name: "bench zero size", args: []string{"bench", "-quick", "-ops", "0"}, code: 2, errText: "-ops 0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.before != nil {
				c.before(t)
			}
			p := startCLI(t, baseEnv, c.args...)
			var code int
			if c.interruptOn != "" {
				p.stdout.waitFor(t, c.interruptOn, p.done)
				code = p.interrupt(t)
			} else {
				code = p.wait()
			}
			out, errOut := p.stdout.String(), p.stderr.String()
			for _, s := range secrets {
				if strings.Contains(out+errOut, s) {
					t.Errorf("a secret was printed:\nstdout:\n%s\nstderr:\n%s", out, errOut)
				}
			}
			if code != c.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, c.code, out, errOut)
			}
			if !strings.Contains(out, c.stdout) {
				t.Errorf("stdout does not contain %q:\n%s", c.stdout, out)
			}
			if code == 0 {
				if errOut != "" {
					t.Errorf("stderr of a good run: %q", errOut)
				}
				return
			}
			prefix := c.errPrefix
			if prefix == "" {
				prefix = "reliablemq: " + c.args[0] + ":"
			}
			if strings.Count(errOut, "\n") != 1 || !strings.HasSuffix(errOut, "\n") || !strings.HasPrefix(errOut, prefix) ||
				!strings.Contains(errOut, c.errText) {
				t.Errorf("stderr %q, want one line starting with %q containing %q", errOut, prefix, c.errText)
			}
		})
	}
}
