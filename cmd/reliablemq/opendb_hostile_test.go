package main

import (
	"strings"
	"testing"
)

// TestReconcileLibraryErrorsAreNotDoubled: the reconcile package's own
// errors start "reconcile: "; as usage errors of the command they read
// "reliablemq: reconcile: reconcile: batch -1 < 1", and a negative
// -confirm-timeout or -retention was "negative duration", naming neither.
// Several bad flags are all named on the one line.
func TestReconcileLibraryErrorsAreNotDoubled(t *testing.T) {
	t.Parallel()
	bin := cliBinary(t)
	dsn := "root@tcp(" + deadAddr(t) + ")/x"
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"-batch", "-1"}, []string{"batch -1"}},
		{[]string{"-confirm-timeout", "-1s"}, []string{"confirm timeout -1s is negative"}},
		{[]string{"-retention", "-1s"}, []string{"retention -1s is negative"}},
		{[]string{"-batch", "0", "-retention", "-2s"}, []string{"batch 0", "retention -2s is negative"}},
	} {
		args := append([]string{"reconcile", "-once", "-namesrv", deadAddr(t), "-dsn", dsn}, c.args...)
		_, errOut, code := runBinary(t, bin, args...)
		ok := code == 2 && strings.Count(errOut, "\n") == 1 && strings.HasPrefix(errOut, "reliablemq: reconcile: ") &&
			!strings.Contains(errOut, "reconcile: reconcile:")
		for _, w := range c.want {
			ok = ok && strings.Contains(errOut, w)
		}
		if !ok {
			t.Errorf("%v: exit %d, stderr %q; want 2, one line naming %q, no \"reconcile: reconcile:\"", c.args, code, errOut, c.want)
		}
	}
}

// TestUsageErrorsComeFirst: a usage error (no database, a bad -table, a
// bad -metrics) is reported before "no name server" (exit 1), and "no name
// server", found without a connection, before the database is dialled:
// reconcile said "no name server" (exit 1) for a bad -table and for no
// database at all, trace and dead replay dialled the database first and
// reported it down.
func TestUsageErrorsComeFirst(t *testing.T) {
	t.Parallel()
	bin := cliBinary(t)
	down := "root@tcp(" + deadAddr(t) + ")/x"
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		// No name server anywhere (runBinary's environment is empty).
		{[]string{"reconcile", "-once", "-table", "bad name", "-dsn", down}, 2, `"bad name"`},
		{[]string{"reconcile", "-once", "-batch", "-1", "-dsn", down}, 2, "batch -1"},
		{[]string{"reconcile", "-once"}, 2, "no database"},
		{[]string{"reconcile", "-once", "-dsn", down}, 1, "no name server"},
		{[]string{"trace", "-dsn", down, "k"}, 1, "no name server"},
		{[]string{"dead", "replay", "1", "-dsn", down}, 1, "no name server"},
		// A -metrics address that cannot be listened on whatever the
		// machine: a usage error, before any connection.
		{[]string{"reconcile", "-once", "-namesrv", deadAddr(t), "-dsn", down, "-metrics", "nonsense"}, 2, "-metrics"},
		{[]string{"reconcile", "-every", "1s", "-namesrv", deadAddr(t), "-dsn", down, "-metrics", "127.0.0.1:99999"}, 2, "-metrics"},
	} {
		_, errOut, code := runBinary(t, bin, c.args...)
		if code != c.code || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, c.want) ||
			strings.Contains(errOut, "unreachable") {
			t.Errorf("%v: exit %d, stderr %q; want %d, one line with %q", c.args, code, errOut, c.code, c.want)
		}
	}
}
