package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// runBinary runs the built CLI and returns its stdout, stderr and exit
// code. The environment carries no RocketMQ credentials or name server.
func runBinary(t *testing.T, bin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return out.String(), errOut.String(), 0
	case errors.As(err, &exit):
		return out.String(), errOut.String(), exit.ExitCode()
	}
	t.Fatalf("%v: %v", args, err)
	return "", "", -1
}

// TestLagCommand builds the CLI and runs "lag" against the test's broker
// (rmqtest, or the real one RMQ_NAMESRV names): N messages produced, K
// consumed and committed by a group, so the group's lag is N-K.
func TestLagCommand(t *testing.T) {
	t.Parallel()
	bin := cliBinary(t)
	env := testenv.NewRocketMQ(t)
	topic, group := testenv.Name(t, "T"), testenv.Name(t, "CG")
	env.CreateTopic(t, topic, 1)
	const n, k = 7, 3
	p, err := producer.New(env.NameServers())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for i := 0; i < n; i++ {
		if _, err := p.Send(context.Background(), producer.Message{Topic: topic, Keys: []string{fmt.Sprint("k", i)},
			Body: []byte("lag")}); err != nil {
			t.Fatal(err)
		}
	}
	env.PullAndCommit(t, group, topic, 0, k)

	t.Run("one group", func(t *testing.T) {
		out, errOut, code := runBinary(t, bin, "lag", "-group", group, "-namesrv", env.Namesrv)
		if code != 0 || errOut != "" {
			t.Fatalf("exit %d, stderr %q\n%s", code, errOut, out)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 3 || !strings.HasPrefix(lines[0], "GROUP") {
			t.Fatalf("want a header, one queue and a total:\n%s", out)
		}
		row := strings.Fields(lines[1])
		// GROUP TOPIC BROKER QUEUE BROKER-OFFSET CONSUMER-OFFSET LAG DATE TIME
		if len(row) != 9 || row[0] != group || row[1] != topic || row[3] != "0" ||
			row[4] != fmt.Sprint(n) || row[5] != fmt.Sprint(k) || row[6] != fmt.Sprint(n-k) {
			t.Fatalf("queue row %q, want max %d, committed %d, lag %d", lines[1], n, k, n-k)
		}
		if total := strings.Fields(lines[2]); total[0] != "TOTAL" || total[len(total)-1] != fmt.Sprint(n-k) {
			t.Fatalf("total line %q, want lag %d", lines[2], n-k)
		}
	})

	t.Run("a group no broker knows", func(t *testing.T) {
		// A misspelt group must not read as a group with no lag.
		out, errOut, code := runBinary(t, bin, "lag", "-group", group+"-typo", "-namesrv", env.Namesrv)
		if code != 1 || !strings.Contains(errOut, group+"-typo") || !strings.Contains(errOut, "no broker knows it") {
			t.Fatalf("exit %d, stderr %q\n%s", code, errOut, out)
		}
	})

	t.Run("all groups as JSON", func(t *testing.T) {
		out, errOut, code := runBinary(t, bin, "lag", "-json", "-namesrv", env.Namesrv)
		if code != 0 || errOut != "" {
			t.Fatalf("exit %d, stderr %q\n%s", code, errOut, out)
		}
		var res struct {
			Queues []lagRow `json:"queues"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		found := false
		for _, r := range res.Queues {
			if r.Group == "TOOLS_CONSUMER" {
				t.Errorf("system group listed without -system: %+v", r)
			}
			if r.Group == group && r.Topic == topic {
				found = r.Lag == n-k && r.LastConsumed != nil
			}
		}
		if !found {
			t.Fatalf("no row for %s/%s with lag %d and a last consume time:\n%s", group, topic, n-k, out)
		}
	})

	t.Run("name server unreachable", func(t *testing.T) {
		dead := deadAddr(t)
		out, errOut, code := runBinary(t, bin, "lag", "-group", group, "-namesrv", dead)
		if code != 1 || out != "" {
			t.Fatalf("exit %d, stdout %q; want 1 and nothing", code, out)
		}
		if strings.Count(errOut, "\n") != 1 || !strings.HasPrefix(errOut, "reliablemq: lag: name server unreachable") ||
			!strings.Contains(errOut, dead) {
			t.Fatalf("stderr %q, want one line naming the name server %s", errOut, dead)
		}
	})

	t.Run("usage", func(t *testing.T) {
		for _, args := range [][]string{{"lag", "-bogus"}, {"lag", "extra"}} {
			if _, errOut, code := runBinary(t, bin, args...); code != 2 || !strings.HasPrefix(errOut, "reliablemq: lag: ") ||
				strings.Count(errOut, "\n") != 1 {
				t.Errorf("%v: exit %d, stderr %q; want 2 and one line naming the problem", args, code, errOut)
			}
		}
		if _, errOut, code := runBinary(t, bin, "lag"); code != 1 || !strings.Contains(errOut, "RMQ_NAMESRV") {
			t.Errorf("no name server: exit %d, stderr %q; want 1 naming RMQ_NAMESRV", code, errOut)
		}
	})
}
