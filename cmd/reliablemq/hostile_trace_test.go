package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"github.com/seed157d4c4d/reliablemq/producer"
)

// TestHostileTraceShowsOnlyTheKeysOwnCopies: a real broker's key index
// (QUERY_MESSAGE) matches on the Java hash of "topic#key" only, and the
// official clients filter the answer by key. "order-Aa" and "order-BB"
// have the same Java hashCode, so `reliablemq trace order-Aa` must not
// list order-BB's message as a copy of order-Aa on the broker: an
// operator would conclude the payment was sent when it never was.
func TestHostileTraceShowsOnlyTheKeysOwnCopies(t *testing.T) {
	t.Parallel()
	testenv.SkipUnderRace(t)
	bin := cliBinary(t)
	env := testenv.NewRocketMQ(t)
	db := testenv.MySQL(t)
	topic := testenv.Name(t, "T")
	env.CreateTopic(t, topic, 1)
	p, err := producer.New(env.NameServers())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sfx := testenv.Name(t, "")
	if javaHash(topic+"#order-Aa"+sfx) != javaHash(topic+"#order-BB"+sfx) {
		t.Fatal("test bug: keys do not collide")
	}
	if _, err := p.Send(ctx, producer.Message{Topic: topic, Keys: []string{"order-BB" + sfx}, Body: []byte("other order")}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // the index is built asynchronously by the broker
	dsn := testenv.MySQLDSN(t, db)
	out, errOut, code := runBinary(t, bin, "trace", "-dsn", dsn, "-namesrv", env.Namesrv, "-group", "nobody",
		"-topic", topic, "order-Aa"+sfx)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q\n%s", code, errOut, out)
	}
	broker := out[strings.Index(out, "broker:"):strings.Index(out, "consume log")]
	if strings.Contains(broker, topic) {
		t.Errorf("trace order-Aa lists a broker copy, but only order-BB (same Java hash) was sent:\n%s", broker)
	}
}

func javaHash(s string) int32 {
	var h int32
	for _, r := range s { // ASCII keys: UTF-16 units are the bytes
		h = 31*h + int32(r)
	}
	return h
}
