package producer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	rmqproducer "github.com/apache/rocketmq-client-go/v2/producer"
	"github.com/seed157d4c4d/reliablemq/internal/clientlog"
	"github.com/seed157d4c4d/reliablemq/internal/namespace"
	"github.com/seed157d4c4d/reliablemq/internal/remoting"
	"github.com/seed157d4c4d/reliablemq/internal/safely"
	"github.com/seed157d4c4d/reliablemq/internal/token"
	"github.com/seed157d4c4d/reliablemq/observe"
	"github.com/seed157d4c4d/reliablemq/orderly"
)

// Message is what a [Producer] sends.
type Message struct {
	Topic string
	Body  []byte
	// Keys are business keys: the broker indexes them for lookup, and the
	// idempotent consumer uses them as the dedup key by default. The
	// broker separates keys with spaces, so a key must not contain one.
	Keys []string
	// Tag is the message tag consumers filter on. Optional.
	Tag string
	// Properties are user properties delivered with the message. Names the
	// broker reserves (KEYS, TAGS, DELAY, UNIQ_KEY...) are refused.
	Properties map[string]string
	// Delay postpones delivery: the message is delivered after the
	// smallest delay level >= Delay. Zero sends at once; beyond the largest
	// level is [ErrDelayTooLong]. Not with a ShardingKey.
	Delay time.Duration
	// ShardingKey sends the message to the queue the key hashes to (see
	// [orderly.QueueIndex]), so messages of one key stay in order. A
	// message with both a ShardingKey and a Delay is refused: the broker
	// would queue it when its delay ends, behind the key's later messages.
	ShardingKey string
}

// Result describes a stored message.
type Result struct {
	// MsgID is the client message id (UNIQ_KEY).
	MsgID string
	// OffsetMsgID is the broker's id (store host + commit log offset).
	OffsetMsgID string
	Queue       int
	QueueOffset int64
	Attempts    int
}

// Producer sends messages through one long-lived official client. It is
// safe for concurrent use.
type Producer struct {
	cfg    *config
	client rocketmq.Producer

	gate gate
}

// New starts a producer for the given name servers. It does no blocking
// I/O: routes are fetched on the first send.
func New(nameServers []string, opts ...Option) (*Producer, error) {
	cfg, err := newConfig(func(c *config) {
		for _, o := range opts {
			o.apply(c)
		}
	})
	if len(nameServers) == 0 {
		err = errors.Join(err, errors.New("producer: no name servers"))
	}
	if err != nil {
		return nil, err
	}
	if cfg.instance == "" {
		cfg.instance = uniqueInstance("reliablemq-p-")
	}
	clientlog.Contain()
	cfg.probe = newNameServerProbe(nameServers)
	copts := clientOptions(cfg, nameServers)
	c, err := rocketmq.NewProducer(copts...)
	if err != nil {
		return nil, fmt.Errorf("producer: new client: %w", err)
	}
	if err := c.Start(); err != nil {
		return nil, fmt.Errorf("producer: start client: %w", err)
	}
	return &Producer{cfg: cfg, client: c}, nil
}

// clientOptions are the official client's options for cfg: our instance
// name, no client retries (ours, see [WithRetry]), the orderly selector,
// the credentials.
func clientOptions(cfg *config, nameServers []string) []rmqproducer.Option {
	copts := []rmqproducer.Option{
		rmqproducer.WithNameServer(nameServers),
		rmqproducer.WithGroupName(namespace.Wrap(cfg.namespace, cfg.group)),
		rmqproducer.WithInstanceName(cfg.instance),
		rmqproducer.WithRetry(0), // our own retry policy, see [WithRetry]
		rmqproducer.WithQueueSelector(queueSelector(cfg)),
	}
	if cfg.credentials.AccessKey != "" {
		copts = append(copts, rmqproducer.WithCredentials(primitive.Credentials{AccessKey: cfg.credentials.AccessKey,
			SecretKey: cfg.credentials.SecretKey, SecurityToken: cfg.credentials.SecurityToken}))
	}
	return copts
}

// queueSelector is the client's queue selector. It sees the topics as the
// broker names them; what it reports names them without the namespace,
// as messages and results do.
func queueSelector(cfg *config) *orderly.Selector {
	// The client calls the selector without a context, so the change is
	// logged without one.
	return &orderly.Selector{LossGrace: cfg.lossGrace, OnChange: func(ch orderly.QueueCountChange) {
		ch.Topic = namespace.Strip(cfg.namespace, ch.Topic)
		cfg.logger.LogAttrs(context.Background(), slog.LevelWarn, "queue count changed; sharding keys re-hash",
			slog.String("topic", ch.Topic), slog.Int("old", ch.Old), slog.Int("new", ch.New))
		if cfg.onQueueChange != nil {
			cfg.onQueueChange(ch)
		}
	}, OnUnavailable: func(u orderly.QueueUnavailable) {
		u.Topic = namespace.Strip(cfg.namespace, u.Topic)
		cfg.logger.LogAttrs(context.Background(), slog.LevelWarn,
			"sharding key's queue is on a broker missing from the route; send held back (the client reports route info not found)",
			slog.String("topic", u.Topic), slog.String("sharding_key", u.ShardingKey),
			slog.String("broker", u.BrokerName), slog.Int("queue", u.QueueID))
	}}
}

func uniqueInstance(prefix string) string { return prefix + token.New() }

// Send sends m and waits for the broker's answer. It returns nil only when
// the broker answered SEND_OK. Otherwise the error is a *[SendError] whose
// [Outcome] says whether the message may have been stored; [Transient]
// failures are retried per [WithRetry] with the same client message id.
// Cancelling ctx stops waiting; a send whose request was already written
// then reports [OutcomeUnknown].
func (p *Producer) Send(ctx context.Context, m Message) (Result, error) {
	if err := p.gate.enter(); err != nil {
		return Result{}, err
	}
	defer p.gate.leave()
	m.Properties = p.cfg.hooks.InjectInto(ctx, m.Properties)
	pm, err := p.cfg.build(m)
	if err != nil {
		return Result{}, p.cfg.refused(ctx, &SendError{Topic: m.Topic, Keys: m.Keys, Outcome: Permanent, Err: err})
	}
	start := time.Now()
	res, err := p.sendWithRetry(ctx, pm, m.Topic, m.Keys)
	p.cfg.reportSend(ctx, m.Topic, m.Keys, time.Since(start), res, err)
	return res, err
}

// refused reports a send refused before it reached the broker (a send
// that ended, untimed: see [WithHooks]) and returns its error.
func (c *config) refused(ctx context.Context, err *SendError) error {
	c.reportSend(ctx, err.Topic, err.Keys, 0, Result{}, err)
	return err
}

// reportSend emits a send's observe.SendDone event; d is the send's time,
// zero for one refused before the broker.
func (c *config) reportSend(ctx context.Context, topic string, keys []string, d time.Duration, res Result, err error) {
	if c.hooks.Event == nil {
		return
	}
	e := observe.Event{Kind: observe.SendDone, Topic: topic, Key: strings.Join(keys, " "), MsgID: res.MsgID,
		Attempt: res.Attempts, Duration: d, Err: err}
	var se *SendError
	if errors.As(err, &se) {
		e.MsgID, e.Attempt, e.Reason = se.MsgID, se.Attempts, se.Outcome.String()
	}
	c.emit(ctx, e)
}

// emit reports e to the hooks' Event, if set, containing a panic in it
// ([safely.Report]): a report tells of a send already made, whose result
// the caller must get (a relay sending on its own goroutines would die of
// it).
func (c *config) emit(ctx context.Context, e observe.Event) {
	if c.hooks.Event == nil {
		return
	}
	safely.Report(ctx, c.logger, "event hook", func() { c.hooks.Event(ctx, e) })
}

// SendBatch sends messages of one topic as one request: all are stored or
// none. Batches carry no delay and no sharding key (the broker stores a
// batch on one arbitrary queue), and get no client message ids. The
// broker holds the batch's encoding to the body limit ([WithMaxBodySize]):
// each message's body, its properties and 22 bytes of header.
func (p *Producer) SendBatch(ctx context.Context, msgs []Message) (Result, error) {
	if err := p.gate.enter(); err != nil {
		return Result{}, err
	}
	defer p.gate.leave()
	if len(msgs) == 0 {
		return Result{}, p.cfg.refused(ctx, &SendError{Outcome: Permanent, Err: fmt.Errorf("%w: empty batch", ErrInvalidMessage)})
	}
	topic := msgs[0].Topic
	var keys []string
	pms := make([]*primitive.Message, 0, len(msgs))
	size := 0
	for i, m := range msgs {
		var err error
		switch {
		case m.Topic != topic:
			err = fmt.Errorf("%w: batch mixes topics %s and %s", ErrInvalidMessage, topic, m.Topic)
		case m.ShardingKey != "" || slices.Contains(p.cfg.orderedTopics, m.Topic):
			err = fmt.Errorf("%w: ordered messages cannot be batched", ErrNoShardingKey)
		case m.Delay != 0:
			err = fmt.Errorf("%w: delayed messages cannot be batched", ErrInvalidMessage)
		}
		var pm *primitive.Message
		if err == nil {
			m.Properties = p.cfg.hooks.InjectInto(ctx, m.Properties)
			pm, err = p.cfg.build(m)
		}
		if err != nil {
			return Result{}, p.cfg.refused(ctx, &SendError{Topic: topic, Keys: m.Keys, Outcome: Permanent,
				Err: fmt.Errorf("message %d: %w", i, err)})
		}
		size += batchHeader + len(pm.Body) + len(pm.MarshallProperties())
		keys = append(keys, m.Keys...)
		pms = append(pms, pm)
	}
	if size > p.cfg.maxBodySize {
		return Result{}, p.cfg.refused(ctx, &SendError{Topic: topic, Keys: keys, Outcome: Permanent,
			Err: fmt.Errorf("%w: batch of %d bytes (bodies, properties and headers, as the broker counts them) > %d", ErrInvalidMessage, size, p.cfg.maxBodySize)})
	}
	start := time.Now()
	res, err := p.sendWithRetry(ctx, nil, topic, keys, pms...)
	p.cfg.reportSend(ctx, topic, keys, time.Since(start), res, err)
	return res, err
}

// batchHeader is what a message adds to a batch's body besides its body
// and properties: its total size, magic code, body CRC, flag and body
// size (4 bytes each), and its properties' size (2).
const batchHeader = 22

func (p *Producer) sendWithRetry(ctx context.Context, pm *primitive.Message, topic string, keys []string, batch ...*primitive.Message) (Result, error) {
	msgs := batch
	if pm != nil {
		msgs = []*primitive.Message{pm}
	}
	wait := p.cfg.backoff
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			// Nothing was written for this attempt.
			return Result{}, &SendError{Topic: topic, Keys: keys, Outcome: Transient, Attempts: attempt - 1, Err: err}
		}
		actx, cancel := context.WithTimeout(ctx, p.cfg.sendTimeout)
		res, err := p.client.SendSync(actx, msgs...)
		cancel()
		msgID := ""
		if pm != nil {
			msgID = pm.GetProperty(primitive.PropertyUniqueClientMessageIdKeyIndex)
		}
		if err == nil {
			r := Result{MsgID: msgID, OffsetMsgID: res.OffsetMsgID, QueueOffset: res.QueueOffset, Attempts: attempt}
			if res.MessageQueue != nil {
				r.Queue = res.MessageQueue.QueueId
			}
			if res.Status != primitive.SendOK {
				return r, &SendError{Topic: topic, Keys: keys, MsgID: msgID, Outcome: NotDurable, Attempts: attempt,
					Err: fmt.Errorf("broker stored the message with status %d", res.Status)}
			}
			return r, nil
		}
		outcome, code := classify(err)
		if outcome != Transient || attempt >= p.cfg.attempts {
			return Result{}, &SendError{Topic: topic, Keys: keys, MsgID: msgID, Outcome: outcome, Code: code,
				Attempts: attempt, Err: p.cfg.describe(ctx, err)}
		}
		p.cfg.emit(ctx, observe.Event{Kind: observe.SendRetry, Topic: topic, Key: strings.Join(keys, " "), MsgID: msgID,
			Attempt: attempt, Reason: outcome.String(), Err: err})
		p.cfg.logger.LogAttrs(ctx, slog.LevelWarn, "send failed, retrying",
			slog.String("topic", topic), slog.Any("keys", keys), slog.Int("attempt", attempt), slog.Any("error", err))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return Result{}, &SendError{Topic: topic, Keys: keys, MsgID: msgID, Outcome: Transient, Code: code,
				Attempts: attempt, Err: errors.Join(err, ctx.Err())}
		case <-t.C:
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// maxTopicLength is the broker's limit on a topic name.
const maxTopicLength = 127

// validTopic reports whether topic is a name the broker accepts: 1 to 127
// of letters, digits, '%', '|', '_' and '-', and not one of the system
// topics it takes no sends to.
func validTopic(topic string) bool {
	if len(topic) == 0 || len(topic) > maxTopicLength {
		return false
	}
	switch topic {
	case "SCHEDULE_TOPIC_XXXX", "RMQ_SYS_TRANS_HALF_TOPIC", "RMQ_SYS_TRANS_OP_HALF_TOPIC", "SELF_TEST_TOPIC", "OFFSET_MOVED_EVENT":
		return false // a 4.9.4 broker: NO_PERMISSION, "Sending message to topic[...] is forbidden"
	}
	for i := 0; i < len(topic); i++ {
		switch c := topic[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '%', c == '|', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// Validate reports whether m can be sent as it is, whatever the
// producer's options: a valid topic name, a body, keys without spaces or
// separators, valid UTF-8 in keys, tag and properties (they travel in a
// JSON header, which would alter them silently), no property separators,
// no reserved property names, and no delay on a message with a sharding
// key. The error matches [ErrInvalidMessage].
// Send checks this and the producer's own limits (body size, ordered
// topics); code that builds messages elsewhere (the outbox's transactional
// messages) checks it to refuse the same messages.
func Validate(m Message) error {
	switch {
	case !validTopic(m.Topic):
		return fmt.Errorf("%w: topic %q", ErrInvalidMessage, m.Topic)
	case len(m.Body) == 0:
		return fmt.Errorf("%w: empty body", ErrInvalidMessage)
	case m.ShardingKey != "" && m.Delay != 0:
		// The broker appends a delayed message to its queue when the delay
		// ends, after the key's messages sent meanwhile.
		return fmt.Errorf("%w: a delayed message with a sharding key would be consumed after the key's later messages;"+
			" send it without one", ErrInvalidMessage)
	}
	for _, k := range m.Keys {
		if k == "" || strings.ContainsAny(k, " \x01\x02") {
			return fmt.Errorf("%w: key %q is empty or contains a space or control separator", ErrInvalidMessage, k)
		}
	}
	for _, k := range m.Keys {
		if !utf8.ValidString(k) {
			return notUTF8(k)
		}
	}
	for _, s := range [...]string{m.Tag, m.ShardingKey} {
		if !utf8.ValidString(s) {
			return notUTF8(s)
		}
		if strings.ContainsAny(s, "\x01\x02") {
			return fmt.Errorf("%w: %q contains a property separator", ErrInvalidMessage, s)
		}
	}
	for k, v := range m.Properties {
		if !utf8.ValidString(k) {
			return notUTF8(k)
		}
		if !utf8.ValidString(v) {
			return notUTF8(v)
		}
		if k == "" || remoting.IsSystemProperty(k) || strings.ContainsAny(k, "\x01\x02") || strings.ContainsAny(v, "\x01\x02") {
			return fmt.Errorf("%w: property %q is reserved or malformed", ErrInvalidMessage, k)
		}
	}
	if n := propertiesLength(m); n > maxPropertiesLength {
		return fmt.Errorf("%w: keys, tag, sharding key and properties of %d bytes, over the %d the broker stores with its own",
			ErrInvalidMessage, n, maxPropertiesLength)
	}
	return nil
}

// notUTF8 is Validate's error for a text that is not valid UTF-8.
func notUTF8(s string) error {
	return fmt.Errorf("%w: %q is not valid UTF-8 (keys, tag and properties must be)", ErrInvalidMessage, s)
}

// maxPropertiesLength bounds a message's properties as the producer sends
// them: a broker refuses a message whose properties, with those it adds
// when it stores it (its cluster; a retry's topic and origin; a delay's
// real topic and queue), are longer than 32,767 bytes of UTF-8
// (MESSAGE_ILLEGAL; it stores their length in 2 bytes); 1 KiB is left for
// what the client and the broker add.
const maxPropertiesLength = 32767 - 1024

// propertiesLength is the length of m's properties once encoded ("name
// \x01 value \x02" each), in bytes of UTF-8 as the broker stores them (a
// character outside ASCII is 2 to 4).
func propertiesLength(m Message) int {
	n := 0
	field := func(name, value string) {
		if value != "" {
			n += len(name) + len(value) + 2
		}
	}
	for k, v := range m.Properties {
		field(k, v)
	}
	if len(m.Keys) > 0 {
		n += len(remoting.PropKeys) + len(m.Keys) - 1 + 2 // joined by spaces
		for _, k := range m.Keys {
			n += len(k)
		}
	}
	field(remoting.PropTags, m.Tag)
	field(remoting.PropShardingKey, m.ShardingKey)
	return n
}

// build validates m and converts it to the client's message.
func (c *config) build(m Message) (*primitive.Message, error) {
	if err := Validate(m); err != nil {
		return nil, err
	}
	switch {
	case len(m.Body) > c.maxBodySize:
		return nil, fmt.Errorf("%w: body %d bytes > %d", ErrInvalidMessage, len(m.Body), c.maxBodySize)
	case m.ShardingKey == "" && slices.Contains(c.orderedTopics, m.Topic):
		return nil, fmt.Errorf("%w: topic %s", ErrNoShardingKey, m.Topic)
	}
	level, err := c.delayLevel(m.Delay)
	if err != nil {
		return nil, err
	}
	// The namespace is applied here rather than by the client's option,
	// which prefixes the topic of the message it is given on every send.
	topic := namespace.Wrap(c.namespace, m.Topic)
	if len(topic) > maxTopicLength {
		return nil, fmt.Errorf("%w: topic %q longer than %d bytes in namespace %q", ErrInvalidMessage, m.Topic, maxTopicLength, c.namespace)
	}
	pm := primitive.NewMessage(topic, m.Body)
	if len(m.Properties) > 0 {
		props := make(map[string]string, len(m.Properties)+4)
		for k, v := range m.Properties {
			props[k] = v
		}
		pm.WithProperties(props) // replaces the map: before keys and tags
	}
	if len(m.Keys) > 0 {
		pm.WithKeys(m.Keys)
	}
	if m.Tag != "" {
		pm.WithTag(m.Tag)
	}
	if m.ShardingKey != "" {
		pm.WithShardingKey(m.ShardingKey)
	}
	if level > 0 {
		pm.WithDelayTimeLevel(level)
	}
	return pm, nil
}

// Namespace returns the RocketMQ namespace the producer sends in ("" for
// none; see [WithNamespace]).
func (p *Producer) Namespace() string { return p.cfg.namespace }

// DelayLevel returns the broker delay level (1-based) a delay maps to: the
// smallest level >= d; 0 for d == 0.
func (p *Producer) DelayLevel(d time.Duration) (int, error) { return p.cfg.delayLevel(d) }

// Close stops accepting sends, waits for the sends in progress (each is
// bounded by the send timeout and retry policy) and shuts the client down.
// It is idempotent and safe to call concurrently.
func (p *Producer) Close() error {
	return p.gate.close(p.client.Shutdown)
}
