package sqldb

import (
	"testing"
	"time"
)

func TestTimeReadsTheWallClockAsUTC(t *testing.T) {
	want := time.Date(2026, 3, 29, 1, 30, 0, 123456000, time.UTC)
	shanghai := time.FixedZone("UTC+8", 8*3600)
	for _, v := range []any{
		want,
		time.Date(2026, 3, 29, 1, 30, 0, 123456000, shanghai), // parseTime with loc=Asia/Shanghai
		[]byte("2026-03-29 01:30:00.123456"),                  // no parseTime
		"2026-03-29 01:30:00.123456",
	} {
		var got Time
		if err := got.Scan(v); err != nil || !got.Equal(want) || got.Location() != time.UTC {
			t.Errorf("Scan(%v) = %v, %v; want %v", v, got.Time, err, want)
		}
	}
	var n NullTime
	if err := n.Scan(nil); err != nil || n.Valid || n.Ptr() != nil {
		t.Errorf("NULL: %+v %v", n, err)
	}
	if err := n.Scan([]byte("2026-03-29 01:30:00")); err != nil || !n.Valid || !n.Ptr().Equal(want.Truncate(time.Second)) {
		t.Errorf("non-NULL: %+v %v", n, err)
	}
	if err := new(Time).Scan(42); err == nil {
		t.Error("an int scanned as a time")
	}
}
