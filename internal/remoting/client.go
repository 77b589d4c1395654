package remoting

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"sync"
)

// Conn is a minimal synchronous remoting client: one request in flight at
// a time. It is what tests and tools use to ask a broker or name server
// something the official client has no API for.
type Conn struct {
	// OnRequest, if set before use, sees each request the server sends
	// while Invoke waits for its answer (NOTIFY, CHECK_TRANSACTION_STATE).
	OnRequest func(*Command)

	mu     sync.Mutex
	nc     net.Conn
	r      *bufio.Reader
	opaque int32
}

// Dial connects to a name server or broker.
func Dial(ctx context.Context, addr string) (*Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("remoting: dial %s: %w", addr, err)
	}
	return &Conn{nc: nc, r: bufio.NewReader(nc)}, nil
}

// Close closes the connection.
func (c *Conn) Close() error { return c.nc.Close() }

// Invoke sends req and returns the response with the same opaque, skipping
// any server-initiated requests that arrive in between. The ctx deadline
// bounds the whole exchange.
func (c *Conn) Invoke(ctx context.Context, req *Command) (*Command, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.opaque++
	req.Opaque = c.opaque
	req.Flag &^= FlagResponse
	if req.Language == "" {
		req.Language, req.Version = "GO", 317
	}
	frame, err := req.Encode()
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { c.nc.Close() })
	defer stop()
	if _, err := c.nc.Write(frame); err != nil {
		return nil, fmt.Errorf("remoting: write: %w", err)
	}
	for {
		resp, err := ReadCommand(c.r)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("remoting: read: %w", err)
		}
		if resp.IsResponse() && resp.Opaque == req.Opaque {
			return resp, nil
		}
		if !resp.IsResponse() && c.OnRequest != nil {
			c.OnRequest(resp)
		}
	}
}

// Send writes req without waiting for an answer, for requests the server
// does not reply to.
func (c *Conn) Send(req *Command) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.opaque++
	req.Opaque = c.opaque
	if req.Language == "" {
		req.Language, req.Version = "GO", 317
	}
	frame, err := req.Encode()
	if err != nil {
		return err
	}
	_, err = c.nc.Write(frame)
	return err
}
