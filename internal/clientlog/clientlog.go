// Package clientlog contains the official RocketMQ client's process-wide
// logger (rlog). The client logs at Info by default, including message
// bodies on some paths; [Install] replaces it with a logger that forwards
// only warnings and errors to a *slog.Logger, discarding everything when
// that logger discards.
//
// Every call takes one mutex, as the client's own logrus logger does. The
// client v2.1.2 relies on that lock without knowing it: its rebalance
// writes SubscriptionData.SubVersion while the route refresh goroutine
// clones it, and the only thing ordering the two is that both log through
// a locked logger in between. A logger without the lock turns that into a
// data race the race detector reports in every test that starts a push
// consumer.
package clientlog

import (
	"context"
	"log/slog"
	"sync"

	"github.com/apache/rocketmq-client-go/v2/rlog"
)

type logger struct {
	mu  sync.Mutex
	out *slog.Logger
}

var (
	installMu sync.Mutex
	current   *logger
)

// Install makes out the client's logger (slog.New(slog.DiscardHandler) for
// none). Only warnings and errors are forwarded, at slog Warn and Error.
// It affects the whole process; the last call wins.
func Install(out *slog.Logger) {
	if out == nil {
		out = slog.New(slog.DiscardHandler)
	}
	installMu.Lock()
	defer installMu.Unlock()
	if current != nil {
		current.mu.Lock()
		current.out = out
		current.mu.Unlock()
		return
	}
	current = &logger{out: out}
	rlog.SetLogger(current)
}

// log forwards one client log line. The client's logger interface carries
// no context, so there is none to pass on.
func (l *logger) log(level slog.Level, msg string, fields map[string]interface{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if level < slog.LevelWarn || !l.out.Enabled(context.Background(), level) {
		return
	}
	attrs := make([]slog.Attr, 0, len(fields))
	for k, v := range fields {
		if k == rlog.LogKeyMessages {
			continue // message bodies never reach our logs
		}
		attrs = append(attrs, slog.Any(k, v))
	}
	l.out.LogAttrs(context.Background(), level, "rocketmq client: "+msg, attrs...)
}

func (l *logger) Debug(msg string, fields map[string]interface{}) {
	l.log(slog.LevelDebug, msg, fields)
}
func (l *logger) Info(msg string, fields map[string]interface{}) { l.log(slog.LevelInfo, msg, fields) }
func (l *logger) Warning(msg string, fields map[string]interface{}) {
	l.log(slog.LevelWarn, msg, fields)
}
func (l *logger) Error(msg string, fields map[string]interface{}) {
	l.log(slog.LevelError, msg, fields)
}
func (l *logger) Fatal(msg string, fields map[string]interface{}) {
	l.log(slog.LevelError, msg, fields)
}
func (l *logger) Level(string)            {}
func (l *logger) OutputPath(string) error { return nil }

// Contain installs the discarding logger unless one is installed already.
// Every package that creates a client calls it, so the client's Info chatter
// (and its message bodies) never reach stdout, while an explicit [Install]
// made earlier, by cmd/ or a test, stays in place.
func Contain() {
	installMu.Lock()
	defer installMu.Unlock()
	if current == nil {
		current = &logger{out: slog.New(slog.DiscardHandler)}
		rlog.SetLogger(current)
	}
}
