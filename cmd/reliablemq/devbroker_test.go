package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

// TestDevBrokerProcess runs the real binary and talks to it from this
// process with the official client, then stops it with SIGINT.
func TestDevBrokerProcess(t *testing.T) {
	testenv.QuietClientLogs()
	bin := cliBinary(t)
	cmd := exec.Command(bin, "dev-broker", "-namesrv", "127.0.0.1:0", "-broker", "127.0.0.1:0", "-delay-levels", "1s,2s")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() }) // no-op once it has exited
	lines := bufio.NewScanner(stdout)
	var namesrv string
	for lines.Scan() {
		if f := strings.Fields(lines.Text()); len(f) == 2 && f[0] == "namesrv" {
			namesrv = f[1]
		}
		if strings.HasPrefix(lines.Text(), "Ctrl-C") {
			break
		}
	}
	if namesrv == "" {
		t.Fatal("dev-broker printed no namesrv address")
	}
	p, err := rocketmq.NewProducer(producer.WithNameServer([]string{namesrv}), producer.WithGroupName("pg-dev"),
		producer.WithInstanceName("dev-broker-test"))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := p.SendSync(ctx, primitive.NewMessage("DevTopic", []byte("hi")))
	if err != nil || r.Status != primitive.SendOK {
		t.Fatalf("send through the dev broker: %v", err)
	}
	if err := p.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	var rest strings.Builder
	for lines.Scan() {
		rest.WriteString(lines.Text())
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("dev-broker exit: %v", err)
	}
	if !strings.Contains(rest.String(), "stopped") {
		t.Fatalf("dev-broker did not report a clean stop: %q", rest.String())
	}
}

func TestRunUsageErrors(t *testing.T) {
	for _, args := range [][]string{nil, {"nope"}, {"dev-broker", "-delay-levels", "x"}, {"dev-broker", "extra"}} {
		var out, errOut strings.Builder
		if err := run(context.Background(), args, &out, &errOut); err == nil {
			t.Errorf("run %q: no error", args)
		}
	}
}
