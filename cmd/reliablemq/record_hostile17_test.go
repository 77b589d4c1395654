package main

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/seed157d4c4d/reliablemq/rmqtest"
)

// TestRecordNameServerFromEnvironment: record's -namesrv says "(default:
// $RMQ_NAMESRV)", and its error says "pass -namesrv or set RMQ_NAMESRV",
// as every command's does; record read only the flag, so with the
// variable set it still failed with "no name server".
func TestRecordNameServerFromEnvironment(t *testing.T) {
	b := rmqtest.Run(t)
	t.Setenv("RMQ_NAMESRV", b.NamesrvAddr())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, errOut := newNotifyBuffer(), newNotifyBuffer()
	done := make(chan struct{})
	var err error
	go func() {
		defer close(done)
		err = run(ctx, []string{"record", "-listen", "127.0.0.1:0", "-out", filepath.Join(t.TempDir(), "rec.jsonl")}, out, errOut)
	}()
	out.waitFor(t, "Ctrl-C", done)
	cancel()
	<-done
	if err != nil {
		t.Fatalf("record with RMQ_NAMESRV set: %v\nstderr: %s", err, errOut.String())
	}
}
