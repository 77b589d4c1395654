package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/remoting"
	"github.com/seed157d4c4d/reliablemq/rmqtest"
)

// TestRecordCommand runs "record" in front of rmqtest, sends through the
// address it prints, interrupts it and reads the transcript.
func TestRecordCommand(t *testing.T) {
	t.Parallel()
	b := rmqtest.Run(t)
	if err := b.CreateTopic("RecCmd", 1); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "rec.jsonl")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	var errOut bytes.Buffer
	done := make(chan error, 1)
	go func() {
		err := run(ctx, []string{"record", "-namesrv", b.NamesrvAddr(), "-listen", "127.0.0.1:0",
			"-out", file, "-scenario", "cmd-test"}, pw, &errOut)
		pw.Close()
		done <- err
	}()
	lines := bufio.NewScanner(pr)
	var addr string
	for lines.Scan() {
		if f := strings.Fields(lines.Text()); len(f) == 2 && f[0] == "namesrv" {
			addr = f[1]
		}
		if strings.Contains(lines.Text(), "Ctrl-C") {
			break
		}
	}
	rest := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(pr)
		rest <- string(b)
	}()
	if addr == "" {
		cancel()
		t.Fatalf("record printed no namesrv address: %v %s", <-done, errOut.String())
	}

	route, err := remoting.FetchRoute(ctx, addr, "RecCmd")
	if err != nil {
		t.Fatal(err)
	}
	broker := route.MasterAddr("broker-a")
	if broker == "" || broker == b.BrokerAddr() {
		t.Fatalf("route through record names broker %q (real %s)", broker, b.BrokerAddr())
	}
	c, err := remoting.Dial(ctx, broker)
	if err != nil {
		t.Fatal(err)
	}
	ictx, icancel := context.WithTimeout(ctx, 5*time.Second)
	resp, err := c.Invoke(ictx, &remoting.Command{Code: remoting.ReqGetMaxOffset,
		ExtFields: map[string]string{"topic": "RecCmd", "queueId": "0"}})
	icancel()
	c.Close()
	if err != nil || resp.Code != remoting.CodeSuccess {
		t.Fatalf("GET_MAX_OFFSET through record: %v %+v", err, resp)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("record: %v\n%s", err, errOut.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("record did not stop when interrupted")
	}
	if s := <-rest; !strings.Contains(s, "stopped") {
		t.Errorf("record did not report a clean stop: %q", s)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"scenario":"cmd-test"`, `"event":"connect"`, `"reqCode":105`, `"reqCode":30`,
		`"proxyRewroteBrokerAddr"`} {
		if !bytes.Contains(data, []byte(want)) {
			t.Errorf("transcript lacks %s:\n%s", want, data)
		}
	}

	// The transcript file is never overwritten.
	out, err := runCmd(t, "record", "-namesrv", b.NamesrvAddr(), "-listen", "127.0.0.1:0", "-out", file)
	if err == nil || !strings.HasPrefix(err.Error(), "record:") {
		t.Errorf("record over an existing file: %v\n%s", err, out)
	}
}

func TestRecordBadInput(t *testing.T) {
	t.Setenv("RMQ_NAMESRV", "")
	dir := t.TempDir()
	for _, args := range [][]string{
		{"record", "-out", filepath.Join(dir, "a.jsonl")},
		{"record", "-namesrv", "127.0.0.1:1"},
		{"record", "-namesrv", "127.0.0.1:1;127.0.0.1:2", "-out", filepath.Join(dir, "b.jsonl")},
		{"record", "-namesrv", "127.0.0.1:1", "-out", filepath.Join(dir, "c.jsonl"), "extra"},
		{"record", "-namesrv", "127.0.0.1:1", "-listen", "not an address", "-out", filepath.Join(dir, "d.jsonl")},
		{"record", "-bogus"},
	} {
		out, err := runCmd(t, args...)
		switch {
		case err == nil:
			t.Errorf("%v: no error\n%s", args, out)
		case errors.Is(err, errUsage):
		case !strings.HasPrefix(err.Error(), "record:") || strings.Contains(err.Error(), "\n"):
			t.Errorf("%v: error %q, want one line naming the command", args, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "d.jsonl")); !os.IsNotExist(err) {
		t.Errorf("a failed start left its transcript file behind: %v", err)
	}
}
