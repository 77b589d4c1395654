// Package safely runs the program's report callbacks (an Event hook, an
// alert) so that a panic in one changes nothing it reports on.
package safely

import (
	"context"
	"log/slog"
	"runtime/debug"
)

// Report runs report, containing a panic in it: logged at Error with its
// stack under what ("event hook", "alert"), it goes no further. A report
// tells of what already happened (a send the broker took, a message
// settled, a row marked); it often runs on a goroutine nothing could
// recover it on, and must not undo or hide what it reports.
func Report(ctx context.Context, logger *slog.Logger, what string, report func()) {
	defer func() {
		if v := recover(); v != nil {
			logger.LogAttrs(ctx, slog.LevelError, what+" panicked", slog.Any("panic", v),
				slog.String("stack", string(debug.Stack())))
		}
	}()
	report()
}
