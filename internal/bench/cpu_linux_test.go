package bench

import (
	"net"
	"os"
	"testing"
)

// TestListeningPIDFindsTheListener: a port this process listens on is
// found to be this process's, and its CPU time reads.
func TestListeningPIDFindsTheListener(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	if pid := listeningPID(port); pid != os.Getpid() {
		t.Fatalf("port %d: pid %d, want %d", port, pid, os.Getpid())
	}
	_, listener := cpuReaders()
	if pid, read := listener(port); pid != os.Getpid() || read == nil || read() < 0 {
		t.Fatal("no CPU time for this process's listener")
	}
	l.Close()
	if pid := listeningPID(port); pid != 0 {
		t.Fatalf("closed port %d: pid %d", port, pid)
	}
	if localPort("10.1.2.3:3306") != 0 || localPort("localhost:6379") != 6379 || localPort("[::1]:1") != 1 {
		t.Fatal("localPort: only loopback hosts are this machine's")
	}
}
