// Package tcptest serves TCP on loopback for tests: fake name servers and
// brokers that answer, stall, or break their frames.
package tcptest

import (
	"net"
	"sync"
	"testing"
)

// Serve listens on addr ("127.0.0.1:0", "[::1]:0") and runs serve on each
// connection it accepts, each in its own goroutine, and returns the
// listener's address. A connection stays open when serve returns; when
// the test ends the listener and every connection are closed and Serve
// waits for the serve calls to return. A machine without that loopback
// address skips the test.
func Serve(t testing.TB, addr string, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("listen %s: %v", addr, err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { serve(c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}
