package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/seed157d4c4d/reliablemq/internal/record"
	"github.com/seed157d4c4d/reliablemq/internal/remoting"
)

const recordUsage = `usage: reliablemq record -out FILE [flags]

Proxies a real name server and its brokers, writing every request and
response frame to a transcript (JSON lines), until interrupted.

`

// recordCmd runs the recording proxy (package internal/record) in front
// of a real name server until ctx ends, writing the transcript to -out.
func recordCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("record", flag.ContinueOnError)
	setUsage(fs, recordUsage)
	namesrv := namesrvFlag(fs)
	listen := fs.String("listen", "127.0.0.1:9877", "address clients use as their name server")
	out := fs.String("out", "", "transcript file to create (JSON lines; an existing file is not overwritten), \"-\" for standard output")
	scenario := fs.String("scenario", "", "scenario name written to the transcript's meta line")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("record: unexpected argument %q", fs.Arg(0))
	}
	if *namesrv == "" {
		*namesrv = os.Getenv("RMQ_NAMESRV") // as every command's -namesrv
	}
	addrs := remoting.SplitAddrs(*namesrv)
	switch {
	case len(addrs) == 0:
		return errors.New("record: no name server: pass -namesrv or set RMQ_NAMESRV")
	case len(addrs) > 1:
		return usagef("record: -namesrv names %d name servers; the proxy fronts one", len(addrs))
	case *out == "":
		return usagef("record: no transcript file: pass -out FILE")
	}
	w, closeOut := stdout, func() error { return nil }
	if *out != "-" {
		f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return fmt.Errorf("record: %w", err)
		}
		w, closeOut = f, f.Close
	}
	var opts []record.Option
	if *listen != "" {
		opts = append(opts, record.WithListenAddr(*listen))
	}
	if *scenario != "" {
		opts = append(opts, record.WithMeta("scenario", *scenario))
	}
	p, err := record.Start(ctx, addrs[0], w, opts...)
	if err != nil {
		closeOut()
		if *out != "-" {
			os.Remove(*out) // nothing was recorded into it
		}
		return err // "record: ..." already
	}
	info := stderr
	if *out != "-" {
		info = stdout
	}
	fmt.Fprintf(info, "recording %s\n  namesrv %s\nPoint clients at that name server. Ctrl-C to stop.\n", addrs[0], p.NamesrvAddr())
	<-ctx.Done()
	if err := p.Close(); err != nil {
		closeOut()
		return err // "record: ..." already
	}
	if err := closeOut(); err != nil {
		return fmt.Errorf("record: close %s: %w", *out, err)
	}
	fmt.Fprintf(info, "stopped; transcript in %s\n", *out)
	return nil
}
