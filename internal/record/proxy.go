package record

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/remoting"
)

// dialTimeout bounds the dial to a real name server or broker for one
// client connection.
const dialTimeout = 5 * time.Second

// Option configures a [Proxy].
type Option func(*options)

type options struct {
	listen string
	meta   map[string]string
}

// WithListenAddr sets the address the name server side listens on.
// Default "127.0.0.1:0" (a free port). Broker-side listeners always take
// free loopback ports.
func WithListenAddr(addr string) Option {
	return func(o *options) { o.listen = addr }
}

// WithMeta adds key=value to the transcript's meta line (a scenario name,
// the server's version).
func WithMeta(key, value string) Option {
	return func(o *options) { o.meta[key] = value }
}

// Proxy is a running recording proxy. Its methods are safe for concurrent
// use.
type Proxy struct {
	realNamesrv string
	ln          net.Listener
	start       time.Time
	ctx         context.Context
	cancel      context.CancelFunc
	stopAfter   func() bool
	wg          sync.WaitGroup
	closeOnce   sync.Once

	wmu  sync.Mutex // guards w and werr; taken after mu, never before
	w    io.Writer
	werr error

	mu       sync.Mutex
	closed   bool
	brokers  map[string]net.Listener // real broker address -> its proxy listener
	conns    map[net.Conn]struct{}
	nextConn int
}

// Start listens for clients on the name server side and records every
// exchange between them and the real name server realNamesrv (and the
// brokers its routes name) to w, one JSON object per line. The proxy runs
// until [Proxy.Close] or until ctx is done; Close must be called either
// way to wait for it to stop.
func Start(ctx context.Context, realNamesrv string, w io.Writer, opts ...Option) (*Proxy, error) {
	o := options{listen: "127.0.0.1:0", meta: map[string]string{}}
	for _, opt := range opts {
		opt(&o)
	}
	if realNamesrv == "" {
		return nil, errors.New("record: no real name server address")
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return nil, fmt.Errorf("record: listen: %w", err)
	}
	p := &Proxy{
		realNamesrv: realNamesrv,
		ln:          ln,
		start:       time.Now(),
		w:           w,
		brokers:     make(map[string]net.Listener),
		conns:       make(map[net.Conn]struct{}),
	}
	p.ctx, p.cancel = context.WithCancel(ctx)
	meta := map[string]string{
		"captured":     p.start.UTC().Format(time.RFC3339),
		"realNamesrv":  realNamesrv,
		"proxyNamesrv": ln.Addr().String(),
		"recorder":     "reliablemq internal/record",
		"notes":        "dir c>s = client to server, s>c = server to client; t = seconds since the proxy started; route bodies are recorded as the real name server sent them",
	}
	for k, v := range o.meta {
		meta[k] = v
	}
	p.write(&metaLine{Meta: meta})
	p.wg.Add(1)
	go p.accept(ln, "namesrv", realNamesrv)
	p.stopAfter = context.AfterFunc(p.ctx, p.shutdown)
	return p, nil
}

// NamesrvAddr is the address to give clients as their name server.
func (p *Proxy) NamesrvAddr() string { return p.ln.Addr().String() }

// BrokerAddr returns the proxy's listener for the real broker at real,
// starting it if no route has named that broker yet. Admin tools that
// talk to a broker directly use it to go through the proxy.
func (p *Proxy) BrokerAddr(real string) (string, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return "", errors.New("record: proxy closed")
	}
	if ln, ok := p.brokers[real]; ok {
		p.mu.Unlock()
		return ln.Addr().String(), nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		p.mu.Unlock()
		return "", fmt.Errorf("record: listen for broker %s: %w", real, err)
	}
	p.brokers[real] = ln
	p.wg.Add(1)
	go p.accept(ln, "broker", real)
	p.mu.Unlock()
	addr := ln.Addr().String()
	p.write(&noteLine{Note: fmt.Sprintf("broker proxy %s forwards to the real broker %s", addr, real),
		RealBroker: real, ProxyBroker: addr})
	return addr, nil
}

// Note writes a line saying what the program driving the clients did or
// saw; notes are not on the wire.
func (p *Proxy) Note(text string) {
	p.write(&noteLine{Note: text})
}

// Close stops listening, closes every proxied connection, waits for the
// proxy's goroutines and returns the first error writing the transcript.
// It is idempotent.
func (p *Proxy) Close() error {
	p.closeOnce.Do(func() {
		p.stopAfter()
		p.shutdown()
		p.wg.Wait()
	})
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if p.werr != nil {
		return fmt.Errorf("record: write transcript: %w", p.werr)
	}
	return nil
}

// shutdown closes the listeners and connections without waiting.
func (p *Proxy) shutdown() {
	p.cancel()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	p.ln.Close() // the accept loop sees the close and returns
	for _, ln := range p.brokers {
		ln.Close()
	}
	for c := range p.conns {
		c.Close()
	}
}

func (p *Proxy) accept(ln net.Listener, peer, real string) {
	defer p.wg.Done()
	for {
		nc, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				p.Note(fmt.Sprintf("%s listener %s stopped: %v", peer, ln.Addr(), err))
			}
			return
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			nc.Close()
			return
		}
		p.nextConn++
		id := p.nextConn
		p.conns[nc] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.serve(nc, id, peer, real)
	}
}

// track registers c to be closed by shutdown; false if the proxy is
// already closed (then c is closed here).
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
	}
}

// serve proxies one client connection to the real peer at real.
func (p *Proxy) serve(client net.Conn, id int, peer, real string) {
	defer p.wg.Done()
	defer p.untrack(client)
	defer client.Close()
	ctx, cancel := context.WithTimeout(p.ctx, dialTimeout)
	d := net.Dialer{}
	server, err := d.DialContext(ctx, "tcp", real)
	cancel()
	if err != nil {
		p.Note(fmt.Sprintf("conn %d: dial %s %s: %v", id, peer, real, err))
		return
	}
	if !p.track(server) {
		return
	}
	defer p.untrack(server)
	p.write(&eventLine{Event: "connect", Conn: id, Peer: peer, Client: client.RemoteAddr().String(), Server: real})
	s := &session{p: p, id: id, peer: peer, pending: make(map[pendingKey]int)}
	var pumps sync.WaitGroup
	pumps.Add(2)
	go func() {
		defer pumps.Done()
		s.pump(client, server, "c>s")
	}()
	go func() {
		defer pumps.Done()
		s.pump(server, client, "s>c")
	}()
	pumps.Wait()
	server.Close()
}

// session is one proxied connection.
type session struct {
	p    *Proxy
	id   int
	peer string

	mu      sync.Mutex
	pending map[pendingKey]int // request code by the request's direction and opaque
}

type pendingKey struct {
	dir    string
	opaque int32
}

// pump forwards frames from src to dst until either side fails, then
// closes both so that the other direction stops as well.
func (s *session) pump(src, dst net.Conn, dir string) {
	r := bufio.NewReaderSize(src, 64<<10)
	var err error
	for {
		var raw []byte
		if raw, err = readRaw(r); err != nil {
			break
		}
		if _, err = dst.Write(s.observe(dir, raw)); err != nil {
			err = fmt.Errorf("forward: %w", err)
			break
		}
	}
	ev := &eventLine{Event: "close", Conn: s.id, Peer: s.peer, Dir: dir}
	if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		ev.Error = err.Error()
	}
	s.p.write(ev)
	src.Close()
	dst.Close()
}

// readRaw reads one frame with its length prefix.
func readRaw(r io.Reader) ([]byte, error) {
	var prefix [4]byte
	if _, err := io.ReadFull(r, prefix[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(prefix[:])
	if n > remoting.MaxFrameSize {
		return nil, fmt.Errorf("frame of %d bytes: %w", n, remoting.ErrFrameTooLarge)
	}
	raw := make([]byte, 4+n)
	copy(raw, prefix[:])
	if _, err := io.ReadFull(r, raw[4:]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return raw, nil
}

// observe records raw (a frame with its length prefix) and returns the
// bytes to forward: raw itself, or a route reply with the broker
// addresses replaced.
func (s *session) observe(dir string, raw []byte) []byte {
	l := &frameLine{Conn: s.id, Peer: s.peer, Dir: dir}
	if len(raw) < 8 {
		l.DecodeError = fmt.Sprintf("frame of %d bytes has no header length", len(raw)-4)
		s.p.write(l)
		return raw
	}
	word := binary.BigEndian.Uint32(raw[4:8])
	l.SerializeType, l.HeaderLen = int(word>>24), int(word&0xFFFFFF)
	cmd, err := remoting.DecodeFrame(raw[4:])
	if err != nil {
		l.DecodeError = err.Error()
		l.BodyLen = len(raw) - 4
		s.p.write(l)
		return raw
	}
	code := cmd.Code
	l.Code, l.Opaque, l.Flag, l.Remark, l.ExtFields = &code, cmd.Opaque, cmd.Flag, cmd.Remark, cmd.ExtFields
	l.Hdr = otherHeaderKeys(raw[8 : 8+l.HeaderLen])
	l.BodyLen = len(cmd.Body)
	l.Body, l.BodyEnc = encodeBody(cmd.Body)
	if props, ok := cmd.ExtFields["properties"]; ok {
		l.PropertiesDecoded = remoting.DecodeProperties(props)
	} else if props, ok := cmd.ExtFields["i"]; ok && *l.Code == 310 {
		l.PropertiesDecoded = remoting.DecodeProperties(props)
	}
	out := raw
	switch {
	case cmd.IsResponse():
		l.Kind, l.CodeName = "response", responseNames[code]
		reqDir := "c>s"
		if dir == "c>s" {
			reqDir = "s>c"
		}
		s.mu.Lock()
		req, ok := s.pending[pendingKey{reqDir, cmd.Opaque}]
		delete(s.pending, pendingKey{reqDir, cmd.Opaque})
		s.mu.Unlock()
		if ok {
			l.ReqCode, l.ReqName = req, requestNames[req]
		}
		if ok && code == remoting.CodeSuccess && len(cmd.Body) > 0 {
			switch req {
			case remoting.ReqPullMessage, remoting.ReqQueryMessage, remoting.ReqViewMessageByID:
				l.DecodedMessages = decodeStored(cmd.Body)
			case remoting.ReqGetRouteInfoByTopic:
				if s.peer == "namesrv" {
					out = s.p.rewriteRoute(raw, l, cmd.Body)
				}
			}
		}
	case cmd.IsOneway():
		l.Kind, l.CodeName = "oneway", requestNames[code]
	default:
		l.Kind, l.CodeName = "request", requestNames[code]
		s.mu.Lock()
		s.pending[pendingKey{dir, cmd.Opaque}] = code
		s.mu.Unlock()
		if code == remoting.ReqCheckTransactionState && len(cmd.Body) > 0 {
			l.DecodedMessages = decodeStored(cmd.Body)
		}
	}
	// Written before the frame is forwarded, so that the answer to it can
	// never be recorded first.
	s.p.write(l)
	return out
}

// brokerKey matches the integer map keys Java writes without quotes in a
// route's brokerAddrs.
var brokerKey = regexp.MustCompile(`([{,])\s*(-?\d+)\s*:`)

// rewriteRoute returns raw with every broker address in the route body
// replaced by the proxy's listener for it, and notes the rewrite on l.
func (p *Proxy) rewriteRoute(raw []byte, l *frameLine, body []byte) []byte {
	var route struct {
		BrokerDatas []struct {
			BrokerAddrs map[string]string `json:"brokerAddrs"`
		} `json:"brokerDatas"`
	}
	if err := json.Unmarshal(brokerKey.ReplaceAll(body, []byte(`$1"$2":`)), &route); err != nil {
		l.RewriteError = fmt.Sprintf("route body not understood, forwarded as is: %v", err)
		return raw
	}
	seen := map[string]bool{}
	var reals []string
	for _, bd := range route.BrokerDatas {
		for _, a := range bd.BrokerAddrs {
			if a != "" && !seen[a] {
				seen[a] = true
				reals = append(reals, a)
			}
		}
	}
	sort.Strings(reals)
	var done, failed []string
	newBody := body
	for _, real := range reals {
		addr, err := p.BrokerAddr(real)
		if err != nil {
			failed = append(failed, err.Error())
			continue
		}
		newBody = bytes.ReplaceAll(newBody, []byte(`"`+real+`"`), []byte(`"`+addr+`"`))
		done = append(done, real+" -> "+addr)
	}
	if len(failed) > 0 {
		l.RewriteError = strings.Join(failed, "; ")
	}
	if len(done) == 0 {
		return raw
	}
	l.ProxyRewroteBrokerAddr = strings.Join(done, ", ") + " (body shown as the real namesrv sent it)"
	hlen := int(binary.BigEndian.Uint32(raw[4:8]) & 0xFFFFFF)
	out := make([]byte, 0, 8+hlen+len(newBody))
	out = binary.BigEndian.AppendUint32(out, uint32(4+hlen+len(newBody)))
	out = append(out, raw[4:8+hlen]...)
	return append(out, newBody...)
}

// write appends one line to the transcript; after the first write error
// nothing more is written.
func (p *Proxy) write(v interface{ setT(float64) }) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if p.werr != nil {
		return
	}
	v.setT(float64(time.Since(p.start).Microseconds()) / 1e6)
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // keep "c>s" readable
	if p.werr = enc.Encode(v); p.werr == nil {
		_, p.werr = p.w.Write(buf.Bytes())
	}
}
