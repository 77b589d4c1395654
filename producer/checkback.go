package producer

import (
	"bufio"
	"bytes"
	"cmp"
	"compress/zlib"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/namespace"
	"github.com/seed157d4c4d/reliablemq/internal/remoting"
	"github.com/seed157d4c4d/reliablemq/internal/token"
)

// checkBacks makes a Transactional's group known to every master broker
// of the cluster from the start, and answers their check-backs. The
// official client reports its producers only to the brokers of topics it
// has sent to: a producer started again after a crash, and sending
// nothing yet, was known to no broker. A broker counts a check-back it
// has no producer to ask, and after its last one (15 by default, a
// minute apart) drops the half message, whose local transaction may have
// committed: the message was lost. Each broker gets a connection of its
// own here, a heartbeat naming the group every 30 s (a broker forgets a
// producer after 120 s without one), and the checker's answer to each
// check-back that comes on it.
type checkBacks struct {
	p      *Transactional
	names  []string
	group  string // as the brokers know it, in the namespace
	client string // the client id the heartbeats give

	// ctx ends when close begins: the heartbeats stop, and a cluster
	// query or a dial in progress (up to checkIOTimeout) does not hold
	// Close.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns map[string]*checkConn // by broker address

	declined atomic.Int64 // check-backs left unanswered because Close began
}

// checkConn is one broker's connection.
type checkConn struct {
	nc   net.Conn
	wmu  sync.Mutex // writes
	dead chan struct{}
}

// heartbeatEvery is how often each broker hears of the group.
const heartbeatEvery = 30 * time.Second

// checkIOTimeout bounds a dial, a write and a cluster query.
const checkIOTimeout = 5 * time.Second

func newCheckBacks(p *Transactional, names []string) *checkBacks {
	// The heartbeats run on their own until Close; no caller's ctx
	// bounds them.
	ctx, cancel := context.WithCancel(context.Background())
	return &checkBacks{p: p, names: names, group: namespace.Wrap(p.cfg.namespace, p.cfg.group),
		client: p.cfg.instance + "@checkback-" + token.New(), ctx: ctx, cancel: cancel,
		conns: map[string]*checkConn{}}
}

// start runs the heartbeats until close.
func (c *checkBacks) start() {
	c.wg.Go(func() {
		t := time.NewTicker(heartbeatEvery)
		defer t.Stop()
		for {
			c.beat()
			select {
			case <-c.ctx.Done():
				return
			case <-t.C:
			}
		}
	})
}

// close stops the heartbeats and closes the connections; a check-back
// being answered is finished first (its checker call holds the gate,
// which Close has already waited for).
func (c *checkBacks) close() {
	c.cancel()
	c.mu.Lock()
	for _, cc := range c.conns {
		cc.nc.Close()
	}
	c.mu.Unlock()
	c.wg.Wait()
}

// beat sends the group's heartbeat to every master the name servers list,
// connecting to those it has no live connection to: the first name
// server that answers with a broker says which. Each name server and
// each broker has a checkIOTimeout of its own, and the brokers are
// reached at once: one that hangs (its host down) delays no other. A
// broker that cannot be reached is tried again at the next beat.
func (c *checkBacks) beat() {
	var brokers []remoting.Broker
	for _, ns := range c.names {
		ctx, cancel := context.WithTimeout(c.ctx, checkIOTimeout)
		bs, err := remoting.ClusterBrokers(ctx, ns)
		cancel()
		if err == nil && len(bs) > 0 { // one that knows none (restarted) is passed over
			brokers = bs
			break
		}
	}
	body, _ := json.Marshal(map[string]any{"clientID": c.client,
		"producerDataSet": []map[string]string{{"groupName": c.group}}, "consumerDataSet": []any{}})
	var wg sync.WaitGroup
	for _, b := range brokers {
		if b.Addr == "" {
			continue
		}
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(c.ctx, checkIOTimeout)
			defer cancel()
			cc, err := c.conn(ctx, b.Addr)
			if err != nil {
				return
			}
			req := &remoting.Command{Code: remoting.ReqHeartBeat, Body: body}
			if err := c.send(cc, req); err != nil {
				cc.nc.Close()
			}
		})
	}
	wg.Wait()
}

// conn returns a live connection to addr, dialling one if needed (outside
// the lock: other brokers' dials go on meanwhile).
func (c *checkBacks) conn(ctx context.Context, addr string) (*checkConn, error) {
	c.mu.Lock()
	cc := c.conns[addr]
	c.mu.Unlock()
	if cc != nil {
		select {
		case <-cc.dead:
		default:
			return cc, nil
		}
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.ctx.Done(): // close has closed the connections it found
		nc.Close()
		return nil, ErrClosed
	default:
	}
	if old := c.conns[addr]; old != nil && old != cc {
		select {
		case <-old.dead:
		default: // another dial of addr (the cluster named it twice) won
			nc.Close()
			return old, nil
		}
	}
	cc = &checkConn{nc: nc, dead: make(chan struct{})}
	c.conns[addr] = cc
	c.wg.Go(func() { c.read(cc) })
	return cc, nil
}

// send writes req, signed, with a bounded write.
func (c *checkBacks) send(cc *checkConn, req *remoting.Command) error {
	req.Language, req.Version = "GO", 317
	creds := c.p.cfg.credentials
	remoting.Sign(req, creds.AccessKey, creds.SecretKey, creds.SecurityToken)
	frame, err := req.Encode()
	if err != nil {
		return err
	}
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	cc.nc.SetWriteDeadline(time.Now().Add(checkIOTimeout))
	_, err = cc.nc.Write(frame)
	return err
}

// read answers the check-backs that come on cc, one at a time, until it
// closes. Responses (to heartbeats) are skipped; the first refusal is
// logged. A frame it cannot decode is skipped too: the connection, and
// the group's registration with it, is kept.
func (c *checkBacks) read(cc *checkConn) {
	defer close(cc.dead)
	defer cc.nc.Close()
	r := bufio.NewReader(cc.nc)
	refused := false
	for {
		cmd, err := remoting.ReadCommand(r)
		if errors.Is(err, remoting.ErrMalformed) {
			c.p.cfg.logger.Warn("producer: a broker's frame could not be read; skipped",
				slog.String("broker", cc.nc.RemoteAddr().String()), slog.Any("error", err))
			continue
		}
		if err != nil {
			return
		}
		if cmd.IsResponse() {
			// Only heartbeats are answered. One the broker refuses (an
			// ACL account without the right) leaves its check-backs to
			// the client's own connection, which exists only once the
			// producer sent to a topic there: said once per connection.
			if cmd.Code != remoting.CodeSuccess && !refused {
				refused = true
				c.p.cfg.logger.Warn("producer: a broker refused the group's heartbeat; after a crash its check-backs may find no producer",
					slog.String("broker", cc.nc.RemoteAddr().String()), slog.String("group", c.group),
					slog.Int("code", int(cmd.Code)), slog.String("remark", cmd.Remark))
			}
			continue
		}
		if cmd.Code != remoting.ReqCheckTransactionState {
			continue
		}
		if err := c.answer(cc, cmd); err != nil {
			return
		}
	}
}

// answer asks the checker about a check-back's half message and sends
// the broker its answer on cc, both before Close may close cc. A request
// it cannot read, and one that comes after Close began, are left
// unanswered: the broker asks again. The error is cc's.
func (c *checkBacks) answer(cc *checkConn, req *remoting.Command) error {
	msgs, err := remoting.DecodeStoredMessages(req.Body)
	if err == nil && len(msgs) != 1 {
		err = fmt.Errorf("%d messages in its body, want 1", len(msgs))
	}
	if err != nil {
		c.p.cfg.logger.Warn("producer: a check-back's message could not be read; the broker asks again", slog.Any("error", err))
		return nil
	}
	m := msgs[0]
	props := remoting.DecodeProperties(m.Properties)
	if props[remoting.PropProducerGroup] != c.group {
		return nil // another group's (the broker asks by group: never expected)
	}
	h := HalfMessage{Message: Message{Topic: m.Topic, Body: m.Body, Tag: props[remoting.PropTags],
		ShardingKey: cmp.Or(props[remoting.PropShardingKey], props[remoting.PropJavaShardingKey])}, MsgID: props[remoting.PropUniqKey]}
	if rt := props[remoting.PropRealTopic]; rt != "" {
		h.Topic = rt
	}
	h.Topic = namespace.Strip(c.p.cfg.namespace, h.Topic)
	h.Keys = remoting.SplitKeys(props[remoting.PropKeys])
	if h.MsgID == "" { // not sent by a client that sets one: as the client's own check
		h.MsgID = req.ExtFields["offsetMsgId"]
	}
	if m.SysFlag&remoting.SysFlagCompressed != 0 {
		body, err := inflate(m.Body, c.p.cfg.maxBodySize)
		if err != nil {
			c.p.cfg.logger.Warn("producer: a check-back's body could not be inflated; the checker is asked without it",
				slog.String("msgId", h.MsgID), slog.Any("error", err))
		}
		h.Body = body
	}
	if c.p.gate.enter() != nil {
		c.declined.Add(1)
		return nil
	}
	defer c.p.gate.leave()
	state := c.p.ask(h)
	decision := 0 // unknown: the broker asks again
	switch state {
	case TxCommit:
		decision = remoting.SysFlagTransactionCommit
	case TxRollback:
		decision = remoting.SysFlagTransactionRollback
	}
	e := req.ExtFields
	return c.send(cc, &remoting.Command{Code: remoting.ReqEndTransaction, Flag: remoting.FlagOneway, ExtFields: map[string]string{
		"producerGroup": c.group, "tranStateTableOffset": e["tranStateTableOffset"], "commitLogOffset": e["commitLogOffset"],
		"commitOrRollback": strconv.Itoa(decision), "fromTransactionCheck": "true", "msgId": h.MsgID,
		"transactionId": e["transactionId"]}})
}

// inflate returns a compressed body as it was sent, or nil and why not:
// not zlib, or inflating past limit bytes (a producer of the group sends
// no body larger than its [WithMaxBodySize]; a few compressed megabytes
// can inflate to gigabytes).
func inflate(b []byte, limit int) ([]byte, error) {
	zr, err := zlib.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	// One byte past the limit tells a body larger than it; at
	// math.MaxInt64 there is no such byte (limit+1 overflowed to a
	// negative count, and every body inflated to nothing).
	n := int64(limit)
	if n < math.MaxInt64 {
		n++
	}
	body, err := io.ReadAll(io.LimitReader(zr, n))
	if err != nil {
		return nil, err
	}
	if len(body) > limit {
		return nil, fmt.Errorf("it inflates past the max body size (%d bytes)", limit)
	}
	return body, nil
}
