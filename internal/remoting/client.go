package remoting

import (
	"bufio"
	"context"
	"fmt"
	"net"
)

// Conn is a minimal synchronous remoting client: one request in flight at
// a time. It is what tests and tools use to ask a broker or name server
// something the official client has no API for. A call that fails
// (its ctx ended, the peer broke the stream) closes the connection: what
// is left on it cannot be read in step.
type Conn struct {
	// OnRequest, if set before use, sees each request the server sends
	// while Invoke waits for its answer (NOTIFY, CHECK_TRANSACTION_STATE).
	OnRequest func(*Command)

	turn   chan struct{} // held by the call in flight
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
	return &Conn{turn: make(chan struct{}, 1), nc: nc, r: bufio.NewReader(nc)}, nil
}

// Close closes the connection.
func (c *Conn) Close() error { return c.nc.Close() }

// Invoke sends req and returns the response with the same opaque, skipping
// any server-initiated requests that arrive in between. The ctx bounds
// the whole exchange, the wait for another call in flight included; a
// ctx already ended sends nothing.
func (c *Conn) Invoke(ctx context.Context, req *Command) (*Command, error) {
	select {
	case c.turn <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-c.turn }()
	if err := ctx.Err(); err != nil { // the turn and the end came together
		return nil, err
	}
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
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		c.nc.Close() // part of the frame may be out: the stream is broken
		return nil, fmt.Errorf("remoting: write: %w", err)
	}
	for {
		resp, err := ReadCommand(c.r)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			// The rest of a frame that could not be read (an oversize
			// one's bytes) would be read as frames by the next call.
			c.nc.Close()
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
	c.turn <- struct{}{}
	defer func() { <-c.turn }()
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
