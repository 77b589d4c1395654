// Package delaylevel maps durations to RocketMQ delay levels.
package delaylevel

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// Default is the broker's default messageDelayLevel table
// (1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h), the one
// table every package uses. Never modified: options that take a table
// copy it.
var Default = []time.Duration{
	time.Second, 5 * time.Second, 10 * time.Second, 30 * time.Second,
	time.Minute, 2 * time.Minute, 3 * time.Minute, 4 * time.Minute, 5 * time.Minute,
	6 * time.Minute, 7 * time.Minute, 8 * time.Minute, 9 * time.Minute, 10 * time.Minute,
	20 * time.Minute, 30 * time.Minute, time.Hour, 2 * time.Hour,
}

// ErrTooLong is returned for a delay beyond the largest level.
var ErrTooLong = errors.New("delay beyond the largest delay level")

// Validate checks a level table: non-empty, positive, ascending.
func Validate(levels []time.Duration) error {
	if len(levels) == 0 || !slices.IsSorted(levels) || levels[0] <= 0 {
		return errors.New("delay levels must be positive and ascending")
	}
	return nil
}

// Level returns the smallest level (1-based) whose delay is >= d, 0 for
// d <= 0, and ErrTooLong beyond the last level.
func Level(levels []time.Duration, d time.Duration) (int, error) {
	if d <= 0 {
		return 0, nil
	}
	i, _ := slices.BinarySearch(levels, d)
	if i == len(levels) {
		return 0, fmt.Errorf("%w: %v > %v", ErrTooLong, d, levels[len(levels)-1])
	}
	return i + 1, nil
}

// Of returns the delay of a 1-based level, clamped to the table as the
// broker does.
func Of(levels []time.Duration, level int) time.Duration {
	return levels[min(max(level, 1), len(levels))-1]
}
