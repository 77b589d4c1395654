package bench

import (
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"
)

func listenLoopback(t *testing.T, network, addr string) int {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("listen %s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { l.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

// TestListeningPIDHostile5OddAddresses: IPv6-only listeners are found;
// ports nobody listens on, out-of-range ports and addresses without a
// port or with a remote host read as nothing.
func TestListeningPIDHostile5OddAddresses(t *testing.T) {
	if p := listenLoopback(t, "tcp6", "[::1]:0"); listeningPID(p) != os.Getpid() || listeningPID(localPort(net.JoinHostPort("::1", strconv.Itoa(p)))) != os.Getpid() {
		t.Errorf("IPv6 listener on [::1]:%d not found", p)
	}
	// A port nobody listens on: one just closed, unless another process
	// (tests run in parallel) took it meanwhile; of five, one stays free.
	var found []string
	for range 5 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		free := l.Addr().(*net.TCPAddr).Port
		l.Close()
		pid := listeningPID(free)
		if pid == 0 {
			found = nil
			break
		}
		found = append(found, fmt.Sprintf("port %d: pid %d", free, pid))
	}
	if found != nil {
		t.Errorf("closed ports read as listened on: %v", found)
	}
	for _, a := range []string{"127.0.0.1", "[::1]", "", "localhost", "example.com:3306", "10.0.0.1:3306",
		"127.0.0.1:http", "127.0.0.1:-1", "127.0.0.1:99999", "127.0.0.1:0"} {
		if pid := listeningPID(localPort(a)); pid != 0 {
			t.Errorf("%q: pid %d", a, pid)
		}
	}
}

// TestMeterFindsABrokerListedWithCommas pins a fix found by hostile testing. What it guarded
// against: the bench creates its
// topics on RMQ_BROKER split by remoting.SplitAddrs (";", "," or spaces),
// so RMQ_BROKER="a,b" is a working setting; the meter splits it on ";"
// only and then finds no broker at all.
func TestMeterFindsABrokerListedWithCommas(t *testing.T) {
	p1 := listenLoopback(t, "tcp", "127.0.0.1:0")
	p2 := listenLoopback(t, "tcp", "127.0.0.1:0")
	t.Setenv("MYSQL_DSN", "root@unix(/nonexistent)/")
	t.Setenv("REDIS_ADDR", "")
	t.Setenv("RMQ_NAMESRV", "127.0.0.1:1")
	for _, list := range []string{"127.0.0.1:" + strconv.Itoa(p1) + ";127.0.0.1:" + strconv.Itoa(p2),
		"127.0.0.1:" + strconv.Itoa(p1) + ",127.0.0.1:" + strconv.Itoa(p2), "127.0.0.1:" + strconv.Itoa(p1) + " 127.0.0.1:" + strconv.Itoa(p2)} {
		t.Setenv("RMQ_BROKER", list)
		if m := newMeter(); !slices.Contains(m.names, "broker") {
			t.Errorf("RMQ_BROKER=%q: no broker metered (names %v)", list, m.names)
		}
	}
}

// TestMeterCountsAProcessOnce pins a fix found by hostile testing. What it guarded
// against: two addresses of one process (a
// broker's listen port and its VIP channel, or one server named twice)
// are one process: its CPU time must not be added twice.
func TestMeterCountsAProcessOnce(t *testing.T) {
	p1 := listenLoopback(t, "tcp", "127.0.0.1:0")
	p2 := listenLoopback(t, "tcp", "127.0.0.1:0")
	t.Setenv("MYSQL_DSN", "root@unix(/nonexistent)/")
	t.Setenv("REDIS_ADDR", "")
	t.Setenv("RMQ_NAMESRV", "127.0.0.1:1")
	t.Setenv("RMQ_BROKER", "127.0.0.1:"+strconv.Itoa(p1)+";127.0.0.1:"+strconv.Itoa(p2))
	m := newMeter()
	i := slices.Index(m.names, "broker")
	if i < 0 {
		t.Fatalf("no broker metered: %v", m.names)
	}
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); { // burn some CPU
	}
	own, broker := procCPU(os.Getpid()), m.read[i]()
	if broker > own+20*time.Millisecond {
		t.Errorf("the broker (this process, at two addresses) read %v of CPU; the process used %v", broker, own)
	}
}

// TestLocalPortOfTheLocalSystem pins a fix found by hostile testing. What it guarded
// against: ":6379" and "0.0.0.0:6379" dial
// this machine (net.Dial, go-redis), so a server named that way runs here.
func TestLocalPortOfTheLocalSystem(t *testing.T) {
	for _, a := range []string{":6379", "0.0.0.0:6379", "[::]:6379", "LOCALHOST:6379"} {
		if p := localPort(a); p != 6379 {
			t.Errorf("localPort(%q) = %d, want 6379: it names this machine", a, p)
		}
	}
}
