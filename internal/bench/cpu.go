package bench

import (
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/seed157d4c4d/reliablemq/internal/remoting"
)

// meter reads the CPU time used so far by this process and by the servers
// the bench talks to when they run on this machine (found by the port
// they listen on). On a machine where they all share the cores, a pair's
// ratio follows their CPU time per operation, which says where the time
// goes and what the ratio could reach.
type meter struct {
	names []string               // "this process", then "broker", "mysql", "redis" when found
	read  []func() time.Duration // CPU time so far, one per name
}

// newMeter finds the processes to read. A server on another machine, or
// one this platform cannot read, is left out; in-process servers (rmqtest,
// miniredis) count as this process.
func newMeter() *meter {
	m := &meter{}
	self, servers := cpuReaders()
	if self == nil {
		return m
	}
	m.names, m.read = append(m.names, "this process"), append(m.read, self)
	seen := map[int]bool{} // a process is read once, under the first name it serves
	add := func(name string, addrs ...string) {
		var reads []func() time.Duration
		for _, a := range addrs {
			if pid, r := servers(localPort(a)); r != nil && !seen[pid] {
				seen[pid] = true
				reads = append(reads, r)
			}
		}
		if len(reads) == 0 {
			return
		}
		m.names = append(m.names, name)
		m.read = append(m.read, func() (sum time.Duration) {
			for _, r := range reads {
				sum += r()
			}
			return sum
		})
	}
	if brokers := os.Getenv("RMQ_BROKER"); os.Getenv("RMQ_NAMESRV") != "" && brokers != "" {
		add("broker", remoting.SplitAddrs(brokers)...)
	}
	if mc, err := mysql.ParseDSN(mysqlDSN()); err == nil && mc.Net == "tcp" {
		add("mysql", mc.Addr)
	}
	if addr := os.Getenv("REDIS_ADDR"); addr != "" {
		add("redis", addr)
	}
	return m
}

// localPort returns addr's port when its host is this machine (a loopback
// or unspecified address, localhost, or none), or 0.
func localPort(addr string) int {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	if ip := net.ParseIP(host); host != "" && !strings.EqualFold(host, "localhost") &&
		(ip == nil || !ip.IsLoopback() && !ip.IsUnspecified()) {
		return 0
	}
	n, err := strconv.Atoi(port)
	if err != nil || n <= 0 || n > 65535 {
		return 0
	}
	return n
}

// now reads every process.
func (m *meter) now() []time.Duration {
	t := make([]time.Duration, len(m.read))
	for i, r := range m.read {
		t[i] = r()
	}
	return t
}

// perOp returns the CPU time per operation of each process since start,
// over n operations.
func (m *meter) perOp(start []time.Duration, n int) []time.Duration {
	end := m.now()
	for i := range end {
		end[i] = (end[i] - start[i]) / time.Duration(max(n, 1))
	}
	return end
}
