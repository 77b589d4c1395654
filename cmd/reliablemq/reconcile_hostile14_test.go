package main

import (
	"errors"
	"strings"
	"testing"
)

// TestReconcileCronThatNeverFiresIsAUsageError: robfig/cron parses an
// expression that matches no date ("0 0 30 2 *", the 30th of February)
// and its Next returns the zero time; the command's timer for it fires at
// once, so -cron ran the job back to back without end.
func TestReconcileCronThatNeverFiresIsAUsageError(t *testing.T) {
	t.Parallel()
	for _, expr := range []string{"0 0 30 2 *", "0 0 31 4,6,9,11 *", "CRON_TZ=Europe/Berlin 0 0 30 2 *"} {
		out, err := runCmd(t, "reconcile", "-cron", expr, "-namesrv", "127.0.0.1:1", "-dsn", "root@tcp(127.0.0.1:1)/x")
		if !errors.Is(err, errUsage) || !strings.HasPrefix(err.Error(), "reconcile: -cron") || !strings.Contains(err.Error(), "never") ||
			out != "" {
			t.Errorf("-cron %q: %v\n%s\nwant a usage error saying it never runs, before any connection", expr, err, out)
		}
	}
	// A date that exists only in leap years is fine.
	if _, err := runCmd(t, "reconcile", "-cron", "0 0 29 2 *", "-namesrv", "127.0.0.1:1", "-dsn", "root@tcp(127.0.0.1:1)/x"); errors.Is(err, errUsage) {
		t.Errorf("-cron for the 29th of February: %v", err)
	}
}
