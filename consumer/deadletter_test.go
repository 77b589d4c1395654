package consumer_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/seed157d4c4d/reliablemq/consumer"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

func TestDeadLettersStoreEverythingVerbatim(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dead, err := consumer.NewDeadLetters(testenv.MySQL(t), "")
	if err != nil {
		t.Fatal(err)
	}
	in := &consumer.DeadLetter{Group: "g", Topic: "orders", MsgID: "m-1",
		Keys: []string{`it's"quoted"`, "ключ🔑", strings.Repeat("k", 1024)}, Tag: "t'ag",
		ShardingKey: "'; DROP TABLE mq_dead_letter; --", Properties: map[string]string{"a": "\x00b\"c"},
		Body: []byte{0, 1, 2, 0xff}, Attempts: 4, LastError: "boom\nstack", Cause: consumer.CauseRetries}
	for i, want := range []bool{true, false} { // parking the same delivery twice keeps one row
		inserted, err := dead.Park(ctx, in)
		if err != nil || inserted != want {
			t.Fatalf("park %d: inserted %v, %v; want %v", i, inserted, err, want)
		}
	}
	other := *in
	other.MsgID, other.Group = "m-2", "g2"
	if _, err := dead.Park(ctx, &other); err != nil {
		t.Fatal(err)
	}
	list, err := dead.List(ctx, consumer.Filter{Group: "g"})
	if err != nil || len(list) != 1 {
		t.Fatalf("list: %d, %v", len(list), err)
	}
	got := list[0]
	if got.MsgID != in.MsgID || strings.Join(got.Keys, "|") != strings.Join(in.Keys, "|") || got.Tag != in.Tag ||
		got.ShardingKey != in.ShardingKey || got.Properties["a"] != in.Properties["a"] || string(got.Body) != string(in.Body) ||
		got.Attempts != 4 || got.LastError != in.LastError || got.Cause != in.Cause || got.Status != consumer.Parked {
		t.Fatalf("stored %+v\nwant %+v", got, in)
	}
	if has, err := dead.HasParked(ctx, "g", in.ShardingKey, 0); err != nil || !has {
		t.Fatalf("HasParked: %v %v", has, err)
	}
	if err := dead.Discard(ctx, got.ID, "duplicate of #7"); err != nil {
		t.Fatal(err)
	}
	if has, _ := dead.HasParked(ctx, "g", in.ShardingKey, 0); has {
		t.Fatal("a discarded message still parks its key")
	}
	if err := dead.Discard(ctx, got.ID, "again"); !errors.Is(err, consumer.ErrNotParked) {
		t.Fatalf("second discard: %v", err)
	}
	if _, err := dead.Get(ctx, 999999); !errors.Is(err, consumer.ErrNotFound) {
		t.Fatalf("get missing: %v", err)
	}
	if err := dead.Discard(ctx, 999999, ""); !errors.Is(err, consumer.ErrNotFound) {
		t.Fatalf("discard missing: %v", err)
	}
	page, err := dead.List(ctx, consumer.Filter{AfterID: got.ID, Status: consumer.Parked})
	if err != nil || len(page) != 1 || page[0].Group != "g2" {
		t.Fatalf("page after %d: %v %v", got.ID, page, err)
	}
	if _, err := consumer.NewDeadLetters(nil, ""); err == nil {
		t.Fatal("nil db accepted")
	}
}
