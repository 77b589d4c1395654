package rmqtest_test

// Golden tests: the client side of each transcript captured between the
// official Go client v2.1.2 and a real 4.9.4 broker is replayed against
// rmqtest, and every reply is compared with the recorded one in the fields
// the client reads.
//
// Harmless differences that are not compared, and why:
//   - addresses and commit log offsets (the capture broker had other
//     traffic; offsets are translated where requests carry them) and the
//     msgId values that encode them (their count and format are compared);
//   - timestamps;
//   - NOTIFY_CONSUMER_IDS_CHANGED and CHECK_TRANSACTION_STATE, which the
//     broker sends on its own (the conformance suite covers them);
//   - END_TRANSACTION sent in answer to a check-back (the check arrives
//     after 60 s on a real broker).
// Pulls that the real broker held are replayed at the time it answered
// them, without the suspend flag.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/remoting"
	"github.com/seed157d4c4d/reliablemq/rmqtest"
)

const transcriptDir = "../../shared/rocketmq/transcripts"

type frame struct {
	T         float64           `json:"t"`
	Event     string            `json:"event"`
	Conn      int               `json:"conn"`
	Peer      string            `json:"peer"`
	Dir       string            `json:"dir"`
	Kind      string            `json:"kind"`
	Code      *int              `json:"code"`
	ReqCode   int               `json:"reqCode"`
	Opaque    int32             `json:"opaque"`
	Flag      int               `json:"flag"`
	Remark    string            `json:"remark"`
	ExtFields map[string]string `json:"extFields"`
	Body      string            `json:"body"`
	BodyEnc   string            `json:"bodyEnc"`
	Decoded   []json.RawMessage `json:"decodedMessages"`
}

func (f *frame) body(t *testing.T) []byte {
	if f.BodyEnc == "base64" {
		b, err := base64.StdEncoding.DecodeString(f.Body)
		if err != nil {
			t.Fatalf("base64 body: %v", err)
		}
		return b
	}
	return []byte(f.Body)
}

func loadTranscript(t *testing.T, name string) []*frame {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(transcriptDir, name+".jsonl"))
	if err != nil {
		t.Skipf("transcripts not available: %v", err)
	}
	var out []*frame
	for _, line := range bytes.Split(data, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		f := &frame{}
		if err := json.Unmarshal(line, f); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if (f.Code != nil && f.Dir != "") || f.Event == "close" {
			out = append(out, f)
		}
	}
	return out
}

type replayer struct {
	t      *testing.T
	b      *rmqtest.Broker
	conns  map[int]*remoting.Conn
	now    float64
	phys   map[int64]int64   // recorded commit log offset -> rmqtest's
	mu     sync.Mutex        // guards checks, written by the connections' readers
	checks map[string]string // UNIQ_KEY -> commit log offset of rmqtest's check-back
}

func (r *replayer) conn(f *frame) *remoting.Conn {
	if c := r.conns[f.Conn]; c != nil {
		return c
	}
	addr := r.b.BrokerAddr()
	if f.Peer == "namesrv" {
		addr = r.b.NamesrvAddr()
	}
	c, err := remoting.Dial(context.Background(), addr)
	if err != nil {
		r.t.Fatalf("dial: %v", err)
	}
	c.OnRequest = func(cmd *remoting.Command) {
		if cmd.Code == remoting.ReqCheckTransactionState {
			r.mu.Lock()
			r.checks[cmd.ExtFields["msgId"]] = cmd.ExtFields["commitLogOffset"]
			r.mu.Unlock()
		}
	}
	r.t.Cleanup(func() { c.Close() })
	r.conns[f.Conn] = c
	return c
}

// check returns the commit log offset of rmqtest's check-back for msgID.
// The broker sends it from its own goroutine, and the raw connection reads
// server requests only inside Invoke: if it has not been seen yet, an
// empty heartbeat on c pulls in whatever the broker has written.
func (r *replayer) check(c *remoting.Conn, msgID string) (string, bool) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		off, ok := r.checks[msgID]
		r.mu.Unlock()
		if ok || time.Now().After(deadline) {
			return off, ok
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.Invoke(ctx, &remoting.Command{Code: remoting.ReqHeartBeat, Body: []byte(`{"clientID":"golden-pump"}`)})
		cancel()
		if err != nil {
			r.t.Fatalf("pump: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// advance moves rmqtest's clock along with the transcript's.
func (r *replayer) advance(to float64) {
	if to > r.now {
		r.b.Advance(time.Duration((to - r.now) * float64(time.Second)))
		r.now = to
	}
}

func (r *replayer) translate(ext map[string]string, keys ...string) {
	for _, k := range keys {
		if v, ok := ext[k]; ok {
			rec, _ := strconv.ParseInt(v, 10, 64)
			if ours, ok := r.phys[rec]; ok {
				ext[k] = strconv.FormatInt(ours, 10)
			}
		}
	}
}

func replay(t *testing.T, name string, opts ...rmqtest.Option) {
	frames := loadTranscript(t, name)
	b := rmqtest.Run(t, append([]rmqtest.Option{rmqtest.WithDelayLevels(oneSecondLevels()...)}, opts...)...)
	r := &replayer{t: t, b: b, conns: map[int]*remoting.Conn{}, phys: map[int64]int64{}, checks: map[string]string{}}
	responses := map[[2]int]*frame{}
	for _, f := range frames {
		if f.Code != nil && f.Dir == "s>c" && f.Kind == "response" {
			responses[[2]int{f.Conn, int(f.Opaque)}] = f
		}
	}
	st := newSeeder(t, b, frames, responses)
	defer st.close()

	// Requests in the order the real broker acted on them: a held pull
	// at the time it was answered.
	type step struct {
		at  float64
		f   *frame
		rec *frame
	}
	var steps []step
	for _, f := range frames {
		if f.Event == "close" {
			steps = append(steps, step{at: f.T, f: f})
			continue
		}
		if f.Code == nil {
			continue
		}
		if f.Dir != "c>s" {
			continue
		}
		rec := responses[[2]int{f.Conn, int(f.Opaque)}]
		at := f.T
		if *f.Code == remoting.ReqPullMessage && rec != nil && rec.T-f.T > 0.5 {
			at = rec.T
		}
		steps = append(steps, step{at: at, f: f, rec: rec})
	}
	sort.SliceStable(steps, func(i, j int) bool { return steps[i].at < steps[j].at })

	for _, s := range steps {
		f, rec := s.f, s.rec
		if f.Event == "close" {
			if c := r.conns[f.Conn]; c != nil {
				c.Close()
				delete(r.conns, f.Conn)
				time.Sleep(20 * time.Millisecond) // let the broker see the close before the next request
			}
			continue
		}
		req := &remoting.Command{Code: *f.Code, ExtFields: cloneMap(f.ExtFields), Body: f.body(t)}
		switch *f.Code {
		case remoting.ReqConsumerSendMsgBack, remoting.ReqViewMessageByID:
			r.translate(req.ExtFields, "offset")
		case remoting.ReqEndTransaction:
			if req.ExtFields["fromTransactionCheck"] == "true" {
				// Answer rmqtest's own check-back for the same message.
				off, ok := r.check(r.conn(f), req.ExtFields["msgId"])
				if !ok {
					t.Fatalf("t=%.3f: rmqtest sent no CHECK_TRANSACTION_STATE for %s", f.T, req.ExtFields["msgId"])
				}
				rec, _ := strconv.ParseInt(req.ExtFields["commitLogOffset"], 10, 64)
				ours, _ := strconv.ParseInt(off, 10, 64)
				r.phys[rec] = ours
				req.ExtFields["commitLogOffset"] = off
			} else {
				r.translate(req.ExtFields, "commitLogOffset")
			}
		case remoting.ReqQueryMessage:
			// The recorded range is the capture's wall clock.
			req.ExtFields["beginTimestamp"], req.ExtFields["endTimestamp"] = "0", strconv.FormatInt(1<<62, 10)
		case remoting.ReqPullMessage:
			if s.at != f.T {
				flag, _ := strconv.Atoi(req.ExtFields["sysFlag"])
				req.ExtFields["sysFlag"] = strconv.Itoa(flag &^ 2)
			}
		}
		r.advance(s.at)
		st.before(f, rec)
		c := r.conn(f)
		if rec == nil {
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
		r.compare(f, rec, got)
	}
}

func oneSecondLevels() []time.Duration {
	levels := make([]time.Duration, 18)
	for i := range levels {
		levels[i] = time.Second
	}
	return levels
}

func cloneMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

var hexID = regexp.MustCompile(`^[0-9A-F]{32}$`)

func (r *replayer) compare(req, rec *frame, got *remoting.Command) {
	t := r.t
	t.Helper()
	where := fmt.Sprintf("t=%.3f code %d", req.T, *req.Code)
	if *req.Code == remoting.ReqGetRouteInfoByTopic && got.Code == 0 && *rec.Code == remoting.CodeTopicNotExist &&
		strings.HasPrefix(req.ExtFields["topic"], "%RETRY%") {
		// A real broker registers a retry topic with the name server a
		// moment after creating it on the first heartbeat; rmqtest routes
		// it at once (consumers see retries sooner, never later).
		return
	}
	if got.Code != *rec.Code {
		t.Errorf("%s: response code %d (%s), recorded %d (%s)", where, got.Code, got.Remark, *rec.Code, rec.Remark)
		return
	}
	if got.Code != 0 || *req.Code == remoting.ReqPullMessage {
		if got.Remark != rec.Remark {
			t.Errorf("%s: remark %q, recorded %q", where, got.Remark, rec.Remark)
		}
	}
	switch *req.Code {
	case remoting.ReqGetRouteInfoByTopic:
		if got.Code == 0 {
			if a, b := normRoute(got.Body), normRoute(rec.body(t)); a != b {
				t.Errorf("%s: route\n got %s\nwant %s", where, a, b)
			}
		}
	case remoting.ReqSendMessage, remoting.ReqSendBatchMessage:
		for _, k := range []string{"queueId", "queueOffset", "MSG_REGION", "TRACE_ON"} {
			if got.ExtFields[k] != rec.ExtFields[k] {
				t.Errorf("%s: %s = %q, recorded %q", where, k, got.ExtFields[k], rec.ExtFields[k])
			}
		}
		gotIDs, recIDs := strings.Split(got.ExtFields["msgId"], ","), strings.Split(rec.ExtFields["msgId"], ",")
		if len(gotIDs) != len(recIDs) {
			t.Errorf("%s: %d msgIds, recorded %d", where, len(gotIDs), len(recIDs))
		}
		for i, id := range gotIDs {
			if !hexID.MatchString(id) {
				t.Errorf("%s: msgId %q is not an offset message id", where, id)
			}
			if i < len(recIDs) {
				_, ours, _ := remoting.ParseOffsetMsgID(id)
				_, theirs, _ := remoting.ParseOffsetMsgID(recIDs[i])
				r.phys[theirs] = ours
			}
		}
	case remoting.ReqPullMessage:
		for _, k := range []string{"nextBeginOffset", "minOffset", "maxOffset", "suggestWhichBrokerId"} {
			if got.ExtFields[k] != rec.ExtFields[k] {
				t.Errorf("%s: %s = %q, recorded %q", where, k, got.ExtFields[k], rec.ExtFields[k])
			}
		}
		if got.Code == 0 {
			r.compareMessages(where, got.Body, rec.body(t))
		}
	case remoting.ReqQueryConsumerOffset, remoting.ReqGetMaxOffset:
		if got.ExtFields["offset"] != rec.ExtFields["offset"] {
			t.Errorf("%s: offset %q, recorded %q", where, got.ExtFields["offset"], rec.ExtFields["offset"])
		}
	case remoting.ReqGetConsumerListByGroup:
		var a, b struct{ ConsumerIDList []string }
		json.Unmarshal(got.Body, &a)
		json.Unmarshal(rec.body(t), &b)
		if len(a.ConsumerIDList) != len(b.ConsumerIDList) {
			t.Errorf("%s: consumer list %v, recorded %v", where, a.ConsumerIDList, b.ConsumerIDList)
		}
	case remoting.ReqLockBatchMQ:
		if a, b := lockSet(got.Body), lockSet(rec.body(t)); a != b {
			t.Errorf("%s: locked %s, recorded %s", where, a, b)
		}
	case remoting.ReqQueryMessage, remoting.ReqViewMessageByID:
		if got.Code == 0 {
			r.compareMessages(where, got.Body, rec.body(t))
		}
	}
}

func (r *replayer) compareMessages(where string, got, rec []byte) {
	t := r.t
	t.Helper()
	a, err := remoting.DecodeStoredMessages(got)
	if err != nil {
		t.Errorf("%s: decode rmqtest's messages: %v", where, err)
		return
	}
	b, err := remoting.DecodeStoredMessages(rec)
	if err != nil {
		t.Fatalf("%s: decode recorded messages: %v", where, err)
	}
	if len(a) != len(b) {
		t.Errorf("%s: %d messages, recorded %d", where, len(a), len(b))
		return
	}
	for i := range a {
		x, y := a[i], b[i]
		r.phys[y.PhysicalOffset] = x.PhysicalOffset
		if x.Topic != y.Topic || x.QueueID != y.QueueID || x.QueueOffset != y.QueueOffset || x.Flag != y.Flag ||
			x.SysFlag != y.SysFlag || x.ReconsumeTimes != y.ReconsumeTimes || !bytes.Equal(x.Body, y.Body) ||
			(y.PreparedTransactionOffset != 0 && r.phys[y.PreparedTransactionOffset] != x.PreparedTransactionOffset) {
			t.Errorf("%s: message %d\n got topic %s q%d @%d flag %d sys %d reconsume %d prepared %d body %q\nwant topic %s q%d @%d flag %d sys %d reconsume %d prepared %d body %q",
				where, i, x.Topic, x.QueueID, x.QueueOffset, x.Flag, x.SysFlag, x.ReconsumeTimes, x.PreparedTransactionOffset, x.Body,
				y.Topic, y.QueueID, y.QueueOffset, y.Flag, y.SysFlag, y.ReconsumeTimes, y.PreparedTransactionOffset, y.Body)
		}
		pa, pb := remoting.DecodeProperties(x.Properties), remoting.DecodeProperties(y.Properties)
		for _, p := range []map[string]string{pa, pb} {
			// An offset message id encodes the address and offset: compare
			// its form only.
			if id, ok := p[remoting.PropOriginMessageID]; ok && hexID.MatchString(id) {
				p[remoting.PropOriginMessageID] = "<offset msg id>"
			}
		}
		if fmt.Sprint(pa) != fmt.Sprint(pb) {
			t.Errorf("%s: message %d properties\n got %v\nwant %v", where, i, pa, pb)
		}
	}
}

var brokerAddrs = regexp.MustCompile(`"brokerAddrs":\{[^}]*\}`)

func normRoute(b []byte) string {
	return brokerAddrs.ReplaceAllString(string(b), `"brokerAddrs":{"0":"ADDR"}`)
}

func lockSet(b []byte) string {
	var body struct {
		LockOKMQSet []struct {
			Topic   string
			QueueID int `json:"queueId"`
		}
	}
	json.Unmarshal(b, &body)
	var out []string
	for _, mq := range body.LockOKMQSet {
		out = append(out, fmt.Sprintf("%s/%d", mq.Topic, mq.QueueID))
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

// seeder recreates the state the transcript's unrecorded setup left:
// topics that already existed (scenarios shared one broker) and messages a
// setup producer sent. Before each request it fills the queue the request
// touches up to what the real broker had then: known messages from the
// recorded pull bodies, placeholders where the real broker filtered.
type seeder struct {
	t       *testing.T
	b       *rmqtest.Broker
	conn    *remoting.Conn
	known   map[seedKey]map[int64]*remoting.StoredMessage
	commits map[string]seedPos // UNIQ_KEY -> where the committed copy landed
}

type seedPos struct {
	k   seedKey
	off int64
}

type seedKey struct {
	topic string
	queue int
}

func newSeeder(t *testing.T, b *rmqtest.Broker, frames []*frame, responses map[[2]int]*frame) *seeder {
	t.Helper()
	firstRoute := map[string]bool{}
	for _, f := range frames {
		if f.Code == nil || f.Dir != "c>s" || *f.Code != remoting.ReqGetRouteInfoByTopic {
			continue
		}
		topic := f.ExtFields["topic"]
		if _, done := firstRoute[topic]; done {
			continue
		}
		rec := responses[[2]int{f.Conn, int(f.Opaque)}]
		firstRoute[topic] = rec != nil && *rec.Code == 0
		if rec != nil && *rec.Code == 0 && topic != "TBW102" && !strings.HasPrefix(topic, "%") {
			var route struct{ QueueDatas []struct{ ReadQueueNums int } }
			if err := json.Unmarshal([]byte(normRoute(rec.body(t))), &route); err != nil {
				t.Fatalf("route body: %v", err)
			}
			if err := b.CreateTopic(topic, route.QueueDatas[0].ReadQueueNums); err != nil {
				t.Fatal(err)
			}
		}
	}
	s := &seeder{t: t, b: b, known: map[seedKey]map[int64]*remoting.StoredMessage{}, commits: map[string]seedPos{}}
	for _, f := range frames {
		if f.Code == nil || f.Dir != "s>c" || f.ReqCode != remoting.ReqPullMessage || *f.Code != 0 {
			continue
		}
		msgs, err := remoting.DecodeStoredMessages(f.body(t))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			k := seedKey{m.Topic, int(m.QueueID)}
			if m.SysFlag&remoting.SysFlagTransactionCommit != 0 {
				s.commits[remoting.DecodeProperties(m.Properties)[remoting.PropUniqKey]] = seedPos{k, m.QueueOffset}
			}
			if s.known[k] == nil {
				s.known[k] = map[int64]*remoting.StoredMessage{}
			}
			s.known[k][m.QueueOffset] = m
		}
	}
	c, err := remoting.Dial(context.Background(), b.BrokerAddr())
	if err != nil {
		t.Fatal(err)
	}
	s.conn = c
	return s
}

func (s *seeder) close() { s.conn.Close() }

func (s *seeder) before(req, rec *frame) {
	if *req.Code == remoting.ReqEndTransaction && req.ExtFields["commitOrRollback"] == "8" {
		if p, ok := s.commits[req.ExtFields["msgId"]]; ok {
			s.fill(p.k, p.off)
		}
		return
	}
	if rec == nil || strings.HasPrefix(req.ExtFields["topic"], "%") {
		return // system topics fill through the replay itself
	}
	k := seedKey{req.ExtFields["topic"], atoiT(req.ExtFields["queueId"])}
	switch *req.Code {
	case remoting.ReqSendMessage:
		if atoiT(req.ExtFields["sysFlag"])&remoting.SysFlagTransactionPrepared == 0 {
			s.fill(k, int64(atoiT(rec.ExtFields["queueOffset"])))
		}
	case remoting.ReqSendBatchMessage:
		k = seedKey{req.ExtFields["b"], atoiT(rec.ExtFields["queueId"])}
		s.fill(k, int64(atoiT(rec.ExtFields["queueOffset"])))
	case remoting.ReqPullMessage:
		if m, ok := rec.ExtFields["maxOffset"]; ok {
			s.fill(k, int64(atoiT(m)))
		}
	}
}

// stored is how many messages rmqtest holds in the queue.
func (s *seeder) stored(k seedKey) int64 {
	var n int64
	for _, m := range s.b.Messages(k.topic) {
		if m.QueueID == k.queue {
			n++
		}
	}
	return n
}

func atoiT(v string) int {
	n, _ := strconv.Atoi(v)
	return n
}

func (s *seeder) fill(k seedKey, upTo int64) {
	for off := s.stored(k); off < upTo; off++ {
		m := s.known[k][off]
		if m == nil {
			m = &remoting.StoredMessage{Body: []byte("placeholder"), Properties: "TAGS\x01Placeholder"}
		}
		props := remoting.DecodeProperties(m.Properties)
		delete(props, remoting.PropCluster)
		resp, err := s.conn.Invoke(context.Background(), &remoting.Command{Code: remoting.ReqSendMessage,
			ExtFields: map[string]string{"producerGroup": "setup", "topic": k.topic, "queueId": strconv.Itoa(k.queue),
				"sysFlag": strconv.Itoa(int(m.SysFlag)), "flag": strconv.Itoa(int(m.Flag)),
				"bornTimestamp": strconv.FormatInt(m.BornTimestamp, 10), "properties": remoting.EncodeProperties(props),
				"reconsumeTimes": strconv.Itoa(int(m.ReconsumeTimes)), "defaultTopic": "TBW102", "defaultTopicQueueNums": "4"},
			Body: m.Body})
		if err != nil || resp.Code != 0 {
			s.t.Fatalf("seed %v@%d: %v %+v", k, off, err, resp)
		}
	}
}

func TestGolden(t *testing.T) {
	for _, name := range []string{
		"producer_sync", "producer_async_oneway", "producer_batch", "admin_create_selector",
		"consume_first", "consume_tags", "consume_last", "delay", "retry_dlq",
		"orderly_suspend", "orderly_dlq", "transaction", "rebalance",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			replay(t, name)
		})
	}
}
