package rmqtest_test

// The conformance suite drives the unmodified official client end to end.
// It runs on rmqtest by default and on a real RocketMQ 4.9.4 when
// RMQ_NAMESRV (and RMQ_BROKER) are set; the assertions are the same.

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"
	"github.com/seed157d4c4d/reliablemq/internal/remoting"
	"github.com/seed157d4c4d/reliablemq/internal/testenv"
)

func TestSendConsumeIntegrity(t *testing.T) {
	t.Parallel()
	env, topic := newTopic(t, 4)
	p := newProducer(t, env)

	type sent struct {
		key, tag string
		body     []byte
		props    map[string]string
	}
	want := map[string]sent{}
	bodies := [][]byte{
		[]byte("plain"),
		{0, 1, 2, 0xff, 0xfe},                     // binary
		bytes.Repeat([]byte("compress me "), 600), // over the client's 4 KiB compression threshold
		[]byte("日本語 ünïcödé"),
	}
	for i := 0; i < 40; i++ {
		s := sent{
			key:   fmt.Sprintf("key-%d with space 'quote'", i),
			tag:   fmt.Sprintf("Tag%d", i%3),
			body:  bodies[i%len(bodies)],
			props: map[string]string{"order": fmt.Sprint(i), "unicode": "ключ"},
		}
		m := primitive.NewMessage(topic, s.body)
		m.WithProperties(s.props) // replaces the property map: before keys and tag
		m.WithKeys([]string{s.key}).WithTag(s.tag)
		r := sendSync(t, p, m)
		if r.MsgID == "" || len(r.OffsetMsgID) != 32 {
			t.Fatalf("send result ids: msgId %q offsetMsgId %q", r.MsgID, r.OffsetMsgID)
		}
		want[r.MsgID] = s
	}

	c := newCollector()
	startConsumer(t, env, consumerCfg{group: testenv.Name(t, "CG"), topic: topic}, c.listener)
	got := c.waitCount(t, len(want))
	seen := map[string]bool{}
	for _, m := range got {
		s, ok := want[m.MsgId]
		if !ok {
			t.Fatalf("unexpected message %s", m.MsgId)
		}
		seen[m.MsgId] = true
		if m.GetKeys() != s.key || m.GetTags() != s.tag || !bytes.Equal(m.Body, s.body) {
			t.Errorf("message %s: keys %q tags %q body %d bytes; want %q %q %d bytes",
				m.MsgId, m.GetKeys(), m.GetTags(), len(m.Body), s.key, s.tag, len(s.body))
		}
		for k, v := range s.props {
			if m.GetProperty(k) != v {
				t.Errorf("message %s property %s = %q, want %q", m.MsgId, k, m.GetProperty(k), v)
			}
		}
		if m.Topic != topic || m.ReconsumeTimes != 0 || m.StoreHost == "" || m.OffsetMsgId == "" {
			t.Errorf("message %s: topic %q reconsume %d storeHost %q", m.MsgId, m.Topic, m.ReconsumeTimes, m.StoreHost)
		}
	}
	if len(seen) != len(want) {
		t.Fatalf("received %d distinct messages, want %d", len(seen), len(want))
	}
}

func TestTagFilter(t *testing.T) {
	t.Parallel()
	env, topic := newTopic(t, 1)
	p := newProducer(t, env)
	for i, tag := range []string{"TagWarm", "TagA", "TagB", "TagC", "TagA", ""} {
		m := primitive.NewMessage(topic, []byte(fmt.Sprint(i)))
		if tag != "" {
			m.WithTag(tag)
		}
		sendSync(t, p, m)
	}
	c := newCollector()
	startConsumer(t, env, consumerCfg{group: testenv.Name(t, "CG"), topic: topic,
		selector: consumer.MessageSelector{Type: consumer.TAG, Expression: "TagA || TagB"}}, c.listener)
	c.waitCount(t, 3)
	// A wrongly matched message would arrive before a later match: send
	// one more match and compare the whole set once it is in.
	sendSync(t, p, primitive.NewMessage(topic, []byte("end")).WithTag("TagB"))
	if b := sortedBodies(c.waitCount(t, 4)); b != "1,2,4,end" {
		t.Fatalf("received bodies %s, want 1,2,4,end", b)
	}
}

func TestHashQueueSelection(t *testing.T) {
	t.Parallel()
	env, topic := newTopic(t, 8)
	p := newProducer(t, env, producer.WithQueueSelector(producer.NewHashQueueSelector()))
	queueOf := map[string]int{}
	for round := 0; round < 3; round++ {
		for k := 0; k < 16; k++ {
			key := fmt.Sprintf("order-%d", k)
			m := primitive.NewMessage(topic, []byte(fmt.Sprintf("%s/%d", key, round))).WithShardingKey(key)
			r := sendSync(t, p, m)
			q := r.MessageQueue.QueueId
			if prev, ok := queueOf[key]; ok && prev != q {
				t.Fatalf("key %s went to queue %d, earlier to %d", key, q, prev)
			}
			queueOf[key] = q
		}
	}
	used := map[int]bool{}
	for _, q := range queueOf {
		used[q] = true
	}
	if len(used) < 2 {
		t.Fatalf("16 keys all hashed to %v: selection is not spreading", used)
	}
	c := newCollector()
	startConsumer(t, env, consumerCfg{group: testenv.Name(t, "CG"), topic: topic}, c.listener)
	for _, m := range c.waitCount(t, 48) {
		key := strings.Split(string(m.Body), "/")[0]
		if m.Queue.QueueId != queueOf[key] {
			t.Errorf("message %s consumed from queue %d, sent to %d", m.Body, m.Queue.QueueId, queueOf[key])
		}
	}
}

func TestOffsetsKeptAcrossRestart(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t)
	topic := testenv.Name(t, "T")
	group := testenv.Name(t, "CG")
	env.CreateTopic(t, topic, 4)
	p := newProducer(t, env)
	for i := 0; i < 10; i++ {
		sendSync(t, p, primitive.NewMessage(topic, []byte(fmt.Sprintf("old-%d", i))))
	}
	first := newCollector()
	stop := startConsumer(t, env, consumerCfg{group: group, topic: topic}, first.listener)
	first.waitCount(t, 10)
	// The client advances its offset after the listener returns and
	// commits it with the next pull or its 5 s persist; wait until the
	// broker holds all 10 before stopping, or the restart legitimately
	// redelivers the last one.
	committed := func() bool {
		var sum int64
		for q := 0; q < 4; q++ {
			sum += env.ConsumerOffset(t, group, topic, q)
		}
		return sum == 10
	}
	waitUntil(t, "the broker holds the 10 consumed offsets", committed)
	stop()
	if !committed() {
		t.Fatalf("offsets went back on shutdown")
	}
	for i := 0; i < 10; i++ {
		sendSync(t, p, primitive.NewMessage(topic, []byte(fmt.Sprintf("new-%d", i))))
	}
	second := newCollector()
	startConsumer(t, env, consumerCfg{group: group, topic: topic}, second.listener)
	second.waitCount(t, 10)
	time.Sleep(500 * time.Millisecond) // a redelivered old message would come in the same pulls
	got := second.snapshot()
	news := map[string]bool{}
	for _, m := range got {
		if strings.HasPrefix(string(m.Body), "old-") {
			t.Errorf("restarted consumer re-read %s", m.Body)
		}
		news[string(m.Body)] = true
	}
	if len(news) != 10 {
		t.Fatalf("restarted consumer got %d distinct new messages, want 10", len(news))
	}
}

func TestTwoConsumersShareQueues(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t)
	topic := testenv.Name(t, "T")
	group := testenv.Name(t, "CG")
	env.CreateTopic(t, topic, 4)
	p := newProducer(t, env)
	a, b := newCollector(), newCollector()
	startConsumer(t, env, consumerCfg{group: group, topic: topic}, a.listener)
	startConsumer(t, env, consumerCfg{group: group, topic: topic}, b.listener)
	// Both members are notified when the second joins; keep sending until
	// each has received something, which proves the queues were split.
	deadline := time.Now().Add(waitFor)
	sent := map[string]bool{}
	for i := 0; len(a.snapshot()) == 0 || len(b.snapshot()) == 0; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("after %d sends: consumer A got %d, B got %d", i, len(a.snapshot()), len(b.snapshot()))
		}
		body := fmt.Sprintf("m-%d", i)
		sendSync(t, p, primitive.NewMessage(topic, []byte(body)))
		sent[body] = true
		time.Sleep(20 * time.Millisecond)
	}
	deadline = time.Now().Add(waitFor)
	for {
		got := map[string]bool{}
		for _, m := range append(a.snapshot(), b.snapshot()...) {
			got[string(m.Body)] = true
		}
		if len(got) == len(sent) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the group consumed %d of %d messages", len(got), len(sent))
		}
		time.Sleep(50 * time.Millisecond)
	}
	queuesA, queuesB := map[int]bool{}, map[int]bool{}
	for _, m := range a.snapshot() {
		queuesA[m.Queue.QueueId] = true
	}
	for _, m := range b.snapshot() {
		queuesB[m.Queue.QueueId] = true
	}
	t.Logf("A consumed queues %v, B consumed queues %v", queuesA, queuesB)
}

func TestBatchAsyncOneway(t *testing.T) {
	t.Parallel()
	env, topic := newTopic(t, 4)
	p := newProducer(t, env)

	batch := []*primitive.Message{
		primitive.NewMessage(topic, []byte("batch-0")).WithKeys([]string{"kb0"}),
		primitive.NewMessage(topic, []byte("batch-1")).WithKeys([]string{"kb1"}),
		primitive.NewMessage(topic, []byte("batch-2")).WithKeys([]string{"kb2"}),
	}
	r := sendSync(t, p, batch...)
	if ids := strings.Split(r.OffsetMsgID, ","); len(ids) != 3 {
		t.Fatalf("batch offsetMsgId %q, want 3 ids", r.OffsetMsgID)
	}

	var wg sync.WaitGroup
	wg.Add(1)
	err := p.SendAsync(context.Background(), func(ctx context.Context, r *primitive.SendResult, err error) {
		defer wg.Done()
		if err != nil || r.Status != primitive.SendOK {
			t.Errorf("async send: %v", err)
		}
	}, primitive.NewMessage(topic, []byte("async")))
	if err != nil {
		t.Fatalf("send async: %v", err)
	}
	wg.Wait()
	if err := p.SendOneWay(context.Background(), primitive.NewMessage(topic, []byte("oneway"))); err != nil {
		t.Fatalf("send oneway: %v", err)
	}

	c := newCollector()
	startConsumer(t, env, consumerCfg{group: testenv.Name(t, "CG"), topic: topic}, c.listener)
	byBody := map[string]*primitive.MessageExt{}
	for len(byBody) < 5 {
		for _, m := range c.waitCount(t, len(byBody)+1) {
			byBody[string(m.Body)] = m
		}
	}
	for i := 0; i < 3; i++ {
		m := byBody[fmt.Sprintf("batch-%d", i)]
		if m == nil {
			t.Fatalf("batch-%d not consumed", i)
		}
		if m.MsgId != m.OffsetMsgId || m.GetKeys() != fmt.Sprintf("kb%d", i) {
			t.Errorf("batch member %d: msgId %s offsetMsgId %s keys %q", i, m.MsgId, m.OffsetMsgId, m.GetKeys())
		}
	}
	for _, body := range []string{"async", "oneway"} {
		if byBody[body] == nil {
			t.Errorf("%s message not consumed", body)
		}
	}
}

func TestHeldPullWokenBySend(t *testing.T) {
	t.Parallel()
	env, topic := newTopic(t, 1)
	p := newProducer(t, env)
	c := newCollector()
	startConsumer(t, env, consumerCfg{group: testenv.Name(t, "CG"), topic: topic}, c.listener)
	// Let the consumer's first pull find the queue empty and be held.
	time.Sleep(2 * time.Second)
	sent := time.Now()
	sendSync(t, p, primitive.NewMessage(topic, []byte("wake")))
	c.waitCount(t, 1)
	// A held pull expires after 20 s; a delivery well before that proves
	// the store woke it. This is a protocol check, not a speed assertion.
	if d := time.Since(sent); d > 15*time.Second {
		t.Fatalf("delivery took %v: the held pull was not woken by the send", d)
	}
}

func TestConsumeFromLastOffsetOnYoungBroker(t *testing.T) {
	t.Parallel()
	env, topic := newTopic(t, 1)
	p := newProducer(t, env)
	sendSync(t, p, primitive.NewMessage(topic, []byte("before-1")))
	sendSync(t, p, primitive.NewMessage(topic, []byte("before-2")))
	c := newCollector()
	startConsumer(t, env, consumerCfg{group: testenv.Name(t, "CG"), topic: topic,
		opts: []consumer.Option{consumer.WithConsumeFromWhere(consumer.ConsumeFromLastOffset)}}, c.listener)
	sendSync(t, p, primitive.NewMessage(topic, []byte("after")))
	// A 4.9.4 broker answers a new group's offset query with 0 while the
	// queue's first message is in memory, so "last" still reads the old
	// messages: consumers must be idempotent even for new groups.
	if b := sortedBodies(c.waitCount(t, 3)); b != "after,before-1,before-2" {
		t.Fatalf("bodies %s, want after,before-1,before-2", b)
	}
}

// sortedBodies joins the bodies in sorted order: the concurrent consumer
// runs each message in its own goroutine, so arrival order is not kept.
func sortedBodies(msgs []*primitive.MessageExt) string {
	var bodies []string
	for _, m := range msgs {
		bodies = append(bodies, string(m.Body))
	}
	slices.Sort(bodies)
	return strings.Join(bodies, ",")
}

// TestSendToRetryTopic pins what a broker does with a SEND_MESSAGE to
// %RETRY%<group> (the consumer's own retry copy): with reconsumeTimes
// below the header's maxReconsumeTimes the copy waits out its DELAY level
// and lands in the retry topic with the header's reconsumeTimes; at or
// above it, it lands in %DLQ%<group>. (0 against 0, what the official
// producer sends, is DLQ on 4.9.4 and retry on 5.x, whose rule is
// strictly above; rmqtest follows 4.9.4 and a unit test pins that.)
func TestSendToRetryTopic(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t)
	for _, tc := range []struct {
		name                  string
		reconsume, maxRetries int
		wantDLQ               bool
	}{
		{"below the cap", 2, 16, false},
		{"above the cap", 3, 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			group := testenv.Name(t, "CG")
			retry, dlq := "%RETRY%"+group, "%DLQ%"+group
			env.CreateTopic(t, retry, 1)
			resp := invoke(t, remoting.SplitAddrs(env.Broker)[0], &remoting.Command{Code: remoting.ReqSendMessage, Body: []byte("copy"),
				ExtFields: map[string]string{
					"producerGroup": group, "topic": retry, "defaultTopic": "TBW102", "defaultTopicQueueNums": "4",
					"queueId": "0", "sysFlag": "0", "bornTimestamp": fmt.Sprint(time.Now().UnixMilli()), "flag": "0",
					"properties": remoting.EncodeProperties(map[string]string{remoting.PropDelay: "1",
						remoting.PropUniqKey: "U-" + group, remoting.PropRetryTopic: "Orders"}),
					"reconsumeTimes": fmt.Sprint(tc.reconsume), "unitMode": "false",
					"maxReconsumeTimes": fmt.Sprint(tc.maxRetries), "batch": "false",
				}})
			if resp.Code != remoting.CodeSuccess {
				t.Fatalf("send: code %d %s", resp.Code, resp.Remark)
			}
			want, other := retry, dlq
			if tc.wantDLQ {
				want, other = dlq, retry
			}
			waitUntil(t, "the copy lands in "+want, func() bool {
				if env.Embedded != nil {
					env.Embedded.Advance(time.Second)
				}
				return maxOffset(t, env.Broker, want) == 1
			})
			if n := maxOffset(t, env.Broker, other); n != 0 {
				t.Errorf("%s holds %d messages, want 0", other, n)
			}
			if tc.wantDLQ {
				if perm := routePerm(t, env, dlq); perm != dlqPermViaSend {
					t.Errorf("%s created with perm %d, want %d", dlq, perm, dlqPermViaSend)
				}
			}
			if !tc.wantDLQ {
				m := queryOne(t, env.Broker, retry, "U-"+group)
				props := remoting.DecodeProperties(m.Properties)
				if m.ReconsumeTimes != int32(tc.reconsume) || props[remoting.PropRetryTopic] != "Orders" ||
					props[remoting.PropRealTopic] != retry {
					t.Errorf("retry copy: reconsumeTimes %d, properties %v", m.ReconsumeTimes, props)
				}
			}
		})
	}
}

// dlqPermViaSend is the permission a broker gives a %DLQ% topic it creates
// for a SEND_MESSAGE to %RETRY% past the cap.
const dlqPermViaSend = remoting.PermRead | remoting.PermWrite

// routePerm is topic's queue permission as the name server routes it.
func routePerm(t *testing.T, env *testenv.RocketMQ, topic string) int {
	t.Helper()
	var r *remoting.Route
	waitUntil(t, "a route for "+topic, func() bool {
		var err error
		r, err = remoting.FetchRoute(context.Background(), env.NameServers()[0], topic)
		return err == nil && len(r.QueueDatas) > 0
	})
	return r.QueueDatas[0].Perm
}

// maxOffset is queue 0's max offset (GET_MAX_OFFSET works on a write-only
// DLQ too); 0 for a topic the broker does not have.
func maxOffset(t *testing.T, broker, topic string) int64 {
	t.Helper()
	resp := invoke(t, remoting.SplitAddrs(broker)[0], &remoting.Command{Code: remoting.ReqGetMaxOffset,
		ExtFields: map[string]string{"topic": topic, "queueId": "0"}})
	if resp.Code != remoting.CodeSuccess {
		return 0
	}
	n, _ := strconv.ParseInt(resp.ExtFields["offset"], 10, 64)
	return n
}

// queryOne finds the message whose UNIQ_KEY is key in topic (QUERY_MESSAGE).
func queryOne(t *testing.T, broker, topic, key string) *remoting.StoredMessage {
	t.Helper()
	var msgs []*remoting.StoredMessage
	waitUntil(t, "the index finds "+key, func() bool {
		var err error
		msgs, _, err = remoting.QueryByKey(context.Background(), remoting.Credentials{}, remoting.SplitAddrs(broker)[0],
			topic, key, 4, time.Time{}, time.Now().Add(time.Hour))
		return err == nil && len(msgs) > 0
	})
	return msgs[0]
}

// TestSendIgnoresTheTopicsWritePermission pins that a broker stores a
// SEND_MESSAGE to a read-only topic: clients avoid unwritable queues by
// their route, the broker does not check (only a send-back checks the
// retry topic's permission). The consumer's own retry copies rely on it.
func TestSendIgnoresTheTopicsWritePermission(t *testing.T) {
	t.Parallel()
	env, topic := newTopic(t, 1)
	broker := remoting.SplitAddrs(env.Broker)[0]
	if err := remoting.UpdateTopic(context.Background(), remoting.Credentials{}, broker, topic, 1, 1, remoting.PermRead); err != nil {
		t.Fatal(err)
	}
	resp := invoke(t, broker, &remoting.Command{Code: remoting.ReqSendMessage, Body: []byte("x"),
		ExtFields: map[string]string{"producerGroup": "PG", "topic": topic, "defaultTopic": "TBW102",
			"defaultTopicQueueNums": "4", "queueId": "0", "sysFlag": "0", "flag": "0",
			"bornTimestamp": fmt.Sprint(time.Now().UnixMilli()), "properties": "", "reconsumeTimes": "0",
			"unitMode": "false", "maxReconsumeTimes": "0", "batch": "false"}})
	if resp.Code != remoting.CodeSuccess {
		t.Fatalf("send to a read-only topic: code %d %s", resp.Code, resp.Remark)
	}
	// A real broker indexes the stored message a moment later.
	waitUntil(t, "the message is in the queue", func() bool { return maxOffset(t, env.Broker, topic) == 1 })
}

// TestQueueOffsetQueries pins GET_MAX_OFFSET, GET_MIN_OFFSET and
// SEARCH_OFFSET_BY_TIMESTAMP (the push consumer's start for
// CONSUME_FROM_LAST_OFFSET and CONSUME_FROM_TIMESTAMP) as a 4.9.4 broker
// answers them: a topic or queue it does not have is an empty queue, not
// an error, and a timestamp maps to the stored message nearest to it, so
// a time after the last message gives that message's offset, not the max.
// A 5.x broker maps a timestamp to the first message stored at or after
// it (the max offset after the last): pinned too, on such a broker.
func TestQueueOffsetQueries(t *testing.T) {
	t.Parallel()
	env, topic := newTopic(t, 1)
	broker := remoting.SplitAddrs(env.Broker)[0]
	query := func(code int, topic string, queue int, ts int64) string {
		t.Helper()
		resp := invoke(t, broker, &remoting.Command{Code: code, ExtFields: map[string]string{
			"topic": topic, "queueId": strconv.Itoa(queue), "timestamp": strconv.FormatInt(ts, 10)}})
		return fmt.Sprintf("code %d offset %q", resp.Code, resp.ExtFields["offset"])
	}
	unknown := testenv.Name(t, "T")
	for _, code := range []int{remoting.ReqGetMaxOffset, remoting.ReqGetMinOffset, remoting.ReqSearchOffsetByTimestamp} {
		if got := query(code, unknown, 0, time.Now().UnixMilli()); got != `code 0 offset "0"` {
			t.Errorf("request %d on a topic the broker does not have: %s, want code 0 offset 0", code, got)
		}
		if got := query(code, topic, 5, time.Now().UnixMilli()); got != `code 0 offset "0"` {
			t.Errorf("request %d on queue 5 of a 1-queue topic: %s, want code 0 offset 0", code, got)
		}
	}

	p := newProducer(t, env)
	var stamps []int64
	for i := 0; i < 3; i++ {
		if i > 0 { // 300 ms between store times
			if env.Embedded != nil {
				env.Embedded.Advance(300 * time.Millisecond)
			} else {
				time.Sleep(300 * time.Millisecond)
			}
		}
		r := sendSync(t, p, primitive.NewMessage(topic, []byte(fmt.Sprint(i))))
		stamps = append(stamps, queryOne(t, env.Broker, topic, r.MsgID).StoreTimestamp)
	}
	v5 := newerThan494(t, broker)
	for _, tc := range []struct {
		name   string
		ts     int64
		want   int
		wantV5 int
	}{
		{"before the first", stamps[0] - 1000, 0, 0},
		{"exactly the second", stamps[1], 1, 1},
		{"just after the first", stamps[0] + 10, 0, 1},
		{"just before the third", stamps[2] - 10, 2, 2},
		{"after the last", stamps[2] + 1000, 2, 3},
	} {
		if v5 {
			tc.want = tc.wantV5
		}
		if got, want := query(remoting.ReqSearchOffsetByTimestamp, topic, 0, tc.ts), fmt.Sprintf("code 0 offset %q", fmt.Sprint(tc.want)); got != want {
			t.Errorf("search %s (store times %v, asked %d): %s, want %s", tc.name, stamps, tc.ts, got, want)
		}
	}
}

// TestBatchBodyLimit pins a 4.9.4 broker's size limit for a batch: the
// whole request body, each member's header and properties included, is
// held to the 4 MiB message limit, so members whose bodies add up to just
// under 4 MiB are refused with MESSAGE_ILLEGAL and nothing is stored. A
// 5.x broker refuses it too, with SYSTEM_ERROR ("message body size
// exceeded").
func TestBatchBodyLimit(t *testing.T) {
	t.Parallel()
	env, topic := newTopic(t, 1)
	p := newProducer(t, env, producer.WithRetry(0))
	batch := func(bodies int) []*primitive.Message {
		half := bytes.Repeat([]byte("b"), bodies/2)
		return []*primitive.Message{primitive.NewMessage(topic, half), primitive.NewMessage(topic, half)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := p.SendSync(ctx, batch(4<<20-20)...)
	want := "CODE: 13" // MESSAGE_ILLEGAL
	if newerThan494(t, remoting.SplitAddrs(env.Broker)[0]) {
		want = "message body size exceeded"
	}
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("batch of bodies 4 MiB - 20 bytes: %v, want %s", err, want)
	}
	sendSync(t, p, batch(4<<20-4096)...)
	// A real broker fills the consume queue a moment after it answers.
	waitUntil(t, "the batch is in the queue", func() bool { return maxOffset(t, env.Broker, topic) >= 2 })
	if n := maxOffset(t, env.Broker, topic); n != 2 {
		t.Fatalf("%s holds %d messages, want the 2 of the batch that fits", topic, n)
	}
}

// newerThan494 reports whether the broker at addr is newer than 4.9.4
// (rmqtest answers as 4.9.4): a response carries the broker's version,
// 401 from 4.9.4, 513 from 5.5.0.
func newerThan494(t *testing.T, addr string) bool {
	t.Helper()
	resp := invoke(t, addr, &remoting.Command{Code: remoting.ReqGetMaxOffset,
		ExtFields: map[string]string{"topic": testenv.Name(t, "T"), "queueId": "0"}})
	return resp.Version > 401
}

// TestPropertiesLengthLimit pins a broker's limit on a message's
// properties: stored with the broker's own (its cluster), they may not be
// longer than 32,767 bytes of UTF-8. A message with a 33,000-character
// property is refused (MESSAGE_ILLEGAL on 4.9.4) and not stored, and so
// is one with a property of 11,000 euro signs (11,000 characters, 33,000
// bytes); one of 32,000 ASCII characters is stored.
func TestPropertiesLengthLimit(t *testing.T) {
	t.Parallel()
	env, topic := newTopic(t, 1)
	p := newProducer(t, env, producer.WithRetry(0))
	msg := func(n int) *primitive.Message {
		m := primitive.NewMessage(topic, []byte("b"))
		m.WithProperty("p", strings.Repeat("v", n))
		return m
	}
	wide := primitive.NewMessage(topic, []byte("b"))
	wide.WithProperty("p", strings.Repeat("€", 11000))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := p.SendSync(ctx, msg(33000))
	want := "CODE: 13" // MESSAGE_ILLEGAL
	if newerThan494(t, remoting.SplitAddrs(env.Broker)[0]) {
		want = "" // refused; its code is the 5.x broker's own
	}
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("a 33,000-character property: %v, want a refusal %s", err, want)
	}
	if _, err := p.SendSync(ctx, wide); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("a property of 33,000 bytes in 11,000 characters: %v, want a refusal %s", err, want)
	}
	sendSync(t, p, msg(32000))
	waitUntil(t, "the message is in the queue", func() bool { return maxOffset(t, env.Broker, topic) >= 1 })
	if n := maxOffset(t, env.Broker, topic); n != 1 {
		t.Fatalf("%s holds %d messages, want the one that fits", topic, n)
	}
}

// TestSystemTopicsRefuseSends pins the system topics a 4.9.4 broker takes
// no sends to: NO_PERMISSION, "Sending message to topic[...] is
// forbidden".
func TestSystemTopicsRefuseSends(t *testing.T) {
	t.Parallel()
	env := testenv.NewRocketMQ(t)
	p := newProducer(t, env, producer.WithRetry(0))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, topic := range []string{"SCHEDULE_TOPIC_XXXX", "RMQ_SYS_TRANS_HALF_TOPIC", "RMQ_SYS_TRANS_OP_HALF_TOPIC",
		"SELF_TEST_TOPIC", "OFFSET_MOVED_EVENT"} {
		_, err := p.SendSync(ctx, primitive.NewMessage(topic, []byte("b")))
		if err == nil || !strings.Contains(err.Error(), "is forbidden") {
			t.Errorf("a send to %s: %v, want it forbidden", topic, err)
		}
	}
}
