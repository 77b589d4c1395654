package rmqtest

import (
	"bufio"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/remoting"
)

const writeTimeout = 10 * time.Second

type conn struct {
	nc      net.Conn
	namesrv bool
	remote  netip.AddrPort
	done    chan struct{}
	wmu     sync.Mutex
}

func (b *Broker) serve(ln net.Listener, namesrv bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.serveLocked(ln, namesrv)
}

func (b *Broker) serveLocked(ln net.Listener, namesrv bool) {
	b.listeners = append(b.listeners, ln)
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return // listener closed by Close or Down
			}
			c := &conn{nc: nc, namesrv: namesrv, done: make(chan struct{})}
			if ap, err := netip.ParseAddrPort(nc.RemoteAddr().String()); err == nil {
				c.remote = ap
			}
			b.mu.Lock()
			if b.closed || b.down {
				b.mu.Unlock()
				nc.Close()
				continue
			}
			b.conns[c] = struct{}{}
			b.wg.Add(1)
			b.mu.Unlock()
			go b.readLoop(c)
		}
	}()
}

func (b *Broker) readLoop(c *conn) {
	defer b.wg.Done()
	defer close(c.done)
	defer b.dropConn(c)
	defer c.nc.Close()
	r := bufio.NewReaderSize(c.nc, 64<<10)
	for {
		req, err := remoting.ReadCommand(r)
		if err != nil {
			return // EOF, a closed socket, or a corrupt stream: drop the connection
		}
		if req.IsResponse() {
			continue // the client never answers our oneway requests; ignore strays
		}
		resp := b.handle(c, req)
		if resp != nil {
			b.reply(c, req, resp)
		}
	}
}

// reply sends resp as the answer to req, unless req was flagged oneway.
func (b *Broker) reply(c *conn, req, resp *remoting.Command) {
	if req.IsOneway() {
		return
	}
	resp.Opaque = req.Opaque
	resp.Flag |= remoting.FlagResponse
	c.write(resp)
}

// send sends a broker-initiated oneway request (NOTIFY, CHECK_TRANSACTION).
func (b *Broker) send(c *conn, code int, ext map[string]string, body []byte) {
	c.write(&remoting.Command{
		Code:      code,
		Opaque:    b.opaque.Add(1),
		Flag:      remoting.FlagOneway,
		ExtFields: ext,
		Body:      body,
	})
}

func (c *conn) write(cmd *remoting.Command) {
	cmd.Language = "JAVA"
	cmd.Version = 401
	cmd.SerializeTypeCurrentRPC = "JSON"
	frame, err := cmd.Encode()
	if err != nil {
		// Only an oversized frame fails to encode; the handlers bound
		// every body, so this is a broker bug: drop the connection rather
		// than leave the client waiting on a reply that never comes.
		c.nc.Close()
		return
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.nc.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return // closed connection; the read loop cleans up
	}
	if _, err := c.nc.Write(frame); err != nil {
		c.nc.Close() // a half-written frame corrupts the stream
	}
}
