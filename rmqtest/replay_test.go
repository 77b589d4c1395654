package rmqtest_test

// TestReplayRecorded replays the requests of every transcript in
// testdata/ (recorded from a real 4.9.4 broker by TestRecordScenarios)
// against rmqtest and compares each answer with the real broker's:
//
//   - the response code, always;
//   - SEND_MESSAGE: queueId;
//   - GET_MAX_OFFSET and GET_MIN_OFFSET: offset;
//   - QUERY_MESSAGE: per message topic, queueId, reconsumeTimes, body and
//     the properties, except those that name this run's addresses,
//     offsets, ids or clock (volatileProps);
//   - GET_ROUTEINFO_BY_TOPIC: the route with broker addresses masked;
//   - GET_BROKER_CLUSTER_INFO: the brokers' cluster and names;
//   - GET_ALL_SUBSCRIPTIONGROUP_CONFIG: the system groups are the same, and
//     every group rmqtest lists the real broker lists too (a real broker
//     also keeps the groups of earlier runs);
//   - GET_CONSUME_STATS: every queue's topic, broker name, id, max and
//     committed offset, and whether a last consume time is known.
//
// An END_TRANSACTION names a half message sent earlier in the recording
// by its commit log and queue offsets; it is rewritten to rmqtest's.
//
// Not compared: remarks, commit log offsets and the msgIds built from
// them, timestamps, the index extFields of QUERY_MESSAGE, and the
// queueOffset of a SEND_MESSAGE answer (for a delayed message a real
// broker answers with its offset in the schedule topic's queue).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/remoting"
	"github.com/seed157d4c4d/reliablemq/rmqtest"
)

// volatileProps are stored-message properties whose values depend on the
// broker instance or the moment, not on the rule being recorded.
var volatileProps = map[string]bool{
	remoting.PropCluster: true, "MIN_OFFSET": true, "MAX_OFFSET": true, "CONSUME_START_TIME": true,
	remoting.PropOriginMessageID: true, "__STARTDELIVERTIME": true, "TRAN_PREPARED_QUEUE_OFFSET": true,
}

func TestReplayRecorded(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no recordings in testdata/")
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".jsonl"), func(t *testing.T) {
			t.Parallel()
			replayRecording(t, file)
		})
	}
}

// loadRecording returns the frames and close events of a transcript, in
// recorded order.
func loadRecording(t *testing.T, path string) []*frame {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []*frame
	for i, line := range bytes.Split(data, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		f := &frame{}
		if err := json.Unmarshal(line, f); err != nil {
			t.Fatalf("%s:%d: %v", path, i+1, err)
		}
		if (f.Code != nil && f.Dir != "") || f.Event == "close" {
			out = append(out, f)
		}
	}
	return out
}

func replayRecording(t *testing.T, path string) {
	frames := loadRecording(t, path)
	b := rmqtest.Run(t, rmqtest.WithDelayLevels(oneSecondLevels()...))
	responses := map[[2]int]*frame{}
	for _, f := range frames {
		if f.Code != nil && f.Dir == "s>c" && f.Kind == "response" {
			responses[[2]int{f.Conn, int(f.Opaque)}] = f
		}
	}
	conns := map[int]*remoting.Conn{}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	// Commit log and queue offsets differ between the recording and
	// rmqtest: a request that names a message sent earlier in the
	// recording (END_TRANSACTION) is rewritten to rmqtest's copy.
	offsets := map[int64]sentAt{}
	now, replayed := 0.0, 0
	for _, f := range frames {
		if f.Event == "close" {
			if c := conns[f.Conn]; c != nil {
				c.Close()
				delete(conns, f.Conn)
			}
			continue
		}
		if f.Dir != "c>s" || f.Kind == "response" {
			continue
		}
		// rmqtest's clock follows the recording's, so that delayed
		// copies come due between the same requests.
		if f.T > now {
			b.Advance(time.Duration((f.T - now) * float64(time.Second)))
			now = f.T
		}
		c := conns[f.Conn]
		if c == nil {
			addr := b.BrokerAddr()
			if f.Peer == "namesrv" {
				addr = b.NamesrvAddr()
			}
			var err error
			if c, err = remoting.Dial(context.Background(), addr); err != nil {
				t.Fatal(err)
			}
			conns[f.Conn] = c
		}
		req := &remoting.Command{Code: *f.Code, ExtFields: cloneMap(f.ExtFields), Body: f.body(t)}
		if *f.Code == remoting.ReqQueryMessage {
			// The recorded range is the capture's wall clock; rmqtest's
			// is its own (advanced) clock.
			req.ExtFields["beginTimestamp"], req.ExtFields["endTimestamp"] = "0", strconv.FormatInt(1<<62, 10)
		}
		if *f.Code == remoting.ReqEndTransaction {
			translateEndTransaction(req.ExtFields, offsets)
		}
		rec := responses[[2]int{f.Conn, int(f.Opaque)}]
		if f.Kind == "oneway" || rec == nil {
			if err := c.Send(req); err != nil {
				t.Fatalf("t=%.3f send code %d: %v", f.T, *f.Code, err)
			}
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		got, err := c.Invoke(ctx, req)
		cancel()
		if err != nil {
			t.Fatalf("t=%.3f code %d: %v", f.T, *f.Code, err)
		}
		compareRecorded(t, f, rec, got)
		if *f.Code == remoting.ReqSendMessage || *f.Code == remoting.ReqSendBatchMessage {
			noteSent(offsets, rec, got)
		}
		replayed++
	}
	if replayed == 0 {
		t.Fatalf("%s: no request with a recorded answer", path)
	}
}

// sentAt is where rmqtest stored a message the recording sent, and the
// queue offset the recorded answer gave it.
type sentAt struct{ phys, queueOffset, recQueueOffset int64 }

// noteSent maps the commit log offsets of a recorded send answer to
// rmqtest's answer to the same send.
func noteSent(offsets map[int64]sentAt, rec *frame, got *remoting.Command) {
	if *rec.Code != remoting.CodeSuccess || got.Code != remoting.CodeSuccess {
		return
	}
	a, b := strings.Split(rec.ExtFields["msgId"], ","), strings.Split(got.ExtFields["msgId"], ",")
	if len(a) != len(b) {
		return
	}
	q, _ := strconv.ParseInt(got.ExtFields["queueOffset"], 10, 64)
	recQ, _ := strconv.ParseInt(rec.ExtFields["queueOffset"], 10, 64)
	for i := range a {
		_, recPhys, errA := remoting.ParseOffsetMsgID(a[i])
		_, gotPhys, errB := remoting.ParseOffsetMsgID(b[i])
		if errA == nil && errB == nil {
			offsets[recPhys] = sentAt{gotPhys, q + int64(i), recQ + int64(i)}
		}
	}
}

// translateEndTransaction rewrites an END_TRANSACTION's commitLogOffset to
// rmqtest's copy of the half message, and its tranStateTableOffset to that
// copy's queue offset plus whatever the recorded request added to the
// recorded one.
func translateEndTransaction(ext map[string]string, offsets map[int64]sentAt) {
	phys, _ := strconv.ParseInt(ext["commitLogOffset"], 10, 64)
	s, ok := offsets[phys]
	if !ok {
		return
	}
	state, _ := strconv.ParseInt(ext["tranStateTableOffset"], 10, 64)
	ext["commitLogOffset"] = strconv.FormatInt(s.phys, 10)
	ext["tranStateTableOffset"] = strconv.FormatInt(s.queueOffset+state-s.recQueueOffset, 10)
}

func compareRecorded(t *testing.T, req, rec *frame, got *remoting.Command) {
	t.Helper()
	where := fmt.Sprintf("t=%.3f conn %d code %d", req.T, req.Conn, *req.Code)
	switch *req.Code {
	case remoting.ReqSendMessage, remoting.ReqGetMaxOffset, remoting.ReqGetMinOffset, remoting.ReqQueryMessage:
		where += " " + req.ExtFields["topic"]
	}
	if got.Code != *rec.Code {
		t.Errorf("%s: rmqtest answered code %d (%s), the real broker %d (%s)", where, got.Code, got.Remark, *rec.Code, rec.Remark)
		return
	}
	if got.Code != remoting.CodeSuccess {
		return
	}
	switch *req.Code {
	case remoting.ReqGetRouteInfoByTopic:
		if a, b := normRoute(got.Body), normRoute(rec.body(t)); a != b {
			t.Errorf("%s: route\n rmqtest %s\n    real %s", where, a, b)
		}
	case remoting.ReqSendMessage:
		if got.ExtFields["queueId"] != rec.ExtFields["queueId"] {
			t.Errorf("%s: queueId %q, the real broker %q", where, got.ExtFields["queueId"], rec.ExtFields["queueId"])
		}
	case remoting.ReqGetBrokerClusterInfo:
		a, errA := remoting.DecodeClusterInfo(got.Body)
		b, errB := remoting.DecodeClusterInfo(rec.body(t))
		for i := range a {
			a[i].Addr = "ADDR"
		}
		for i := range b {
			b[i].Addr = "ADDR"
		}
		if errA != nil || errB != nil || fmt.Sprint(a) != fmt.Sprint(b) {
			t.Errorf("%s: brokers\n rmqtest %v %v\n    real %v %v", where, a, errA, b, errB)
		}
	case remoting.ReqGetAllSubscriptionGroupConfig:
		a, errA := remoting.DecodeSubscriptionGroups(got.Body)
		b, errB := remoting.DecodeSubscriptionGroups(rec.body(t))
		if errA != nil || errB != nil {
			t.Errorf("%s: decode: rmqtest %v, real %v", where, errA, errB)
			return
		}
		for _, g := range a {
			if !slices.Contains(b, g) {
				t.Errorf("%s: rmqtest lists group %s, the real broker does not", where, g)
			}
		}
		for _, g := range b {
			if remoting.IsSystemGroup(g) && !slices.Contains(a, g) {
				t.Errorf("%s: the real broker lists system group %s, rmqtest does not", where, g)
			}
		}
	case remoting.ReqGetConsumeStats:
		if a, b := statsSummary(t, got.Body), statsSummary(t, rec.body(t)); a != b {
			t.Errorf("%s: consume stats\n rmqtest %s\n    real %s", where, a, b)
		}
	case remoting.ReqGetMaxOffset, remoting.ReqGetMinOffset:
		if got.ExtFields["offset"] != rec.ExtFields["offset"] {
			t.Errorf("%s: offset %q, the real broker %q", where, got.ExtFields["offset"], rec.ExtFields["offset"])
		}
	case remoting.ReqQueryMessage:
		a, err := remoting.DecodeStoredMessages(got.Body)
		if err != nil {
			t.Errorf("%s: decode rmqtest's messages: %v", where, err)
			return
		}
		b, err := remoting.DecodeStoredMessages(rec.body(t))
		if err != nil {
			t.Fatalf("%s: decode recorded messages: %v", where, err)
		}
		if len(a) != len(b) {
			t.Errorf("%s: %d messages, the real broker %d", where, len(a), len(b))
			return
		}
		for i := range a {
			if x, y := storedSummary(a[i]), storedSummary(b[i]); x != y {
				t.Errorf("%s: message %d\n rmqtest %s\n    real %s", where, i, x, y)
			}
		}
	}
}

// statsSummary is what TestReplayRecorded compares of consume stats.
func statsSummary(t *testing.T, body []byte) string {
	t.Helper()
	s, err := remoting.DecodeConsumeStats(body)
	if err != nil {
		return "undecodable: " + err.Error()
	}
	var b strings.Builder
	for _, q := range s.Queues {
		fmt.Fprintf(&b, "[%s %s %d max %d committed %d last time known %t]", q.Topic, q.BrokerName, q.QueueID,
			q.BrokerOffset, q.ConsumerOffset, q.LastTimestamp > 0)
	}
	return b.String()
}

// storedSummary is what TestReplayRecorded compares of a stored message.
func storedSummary(m *remoting.StoredMessage) string {
	props := remoting.DecodeProperties(m.Properties)
	keys := make([]string, 0, len(props))
	for k := range props {
		if !volatileProps[k] {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var p strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&p, " %s=%s", k, props[k])
	}
	return fmt.Sprintf("topic %s queue %d reconsumeTimes %d body %q properties:%s", m.Topic, m.QueueID, m.ReconsumeTimes, m.Body, p.String())
}
