package rmqtest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// ErrClosed is returned by methods of a closed [Broker].
var ErrClosed = errors.New("rmqtest: broker closed")

// Broker is an in-process RocketMQ name server and broker. Its methods are
// safe for concurrent use.
type Broker struct {
	opts    options
	nsAddr  string
	brAddr  string
	brHost  netip.AddrPort
	offset  atomic.Int64 // clock offset added by Advance, in nanoseconds
	opaque  atomic.Int32
	wg      sync.WaitGroup
	stop    chan struct{}
	closeMu sync.Mutex // serializes Close, Down and Up

	mu        sync.Mutex
	closed    bool
	down      bool
	listeners []net.Listener
	conns     map[*conn]struct{}
	topics    map[string]*topic
	byPhys    map[int64]*message
	nextPhys  int64
	keyIndex  map[int64][]*message // by indexHash(topic, key), as the broker's index
	offsets   map[string]map[queueKey]int64
	groups    map[string]*group
	subGroups map[string]struct{} // every group that sent a consumer heartbeat or pulled
	producers map[string]map[*conn]struct{}
	checkTurn int // the connection of its group a check-back goes to next
	locks     map[string]map[queueKey]*lockEntry
	held      map[queueKey][]*heldPull
	schedule  [][]*message // per delay level, in due order
	halfs     map[int64]*halfState
	faults    map[int][]*fault
}

// Start starts a broker listening on free loopback ports (or the addresses
// set by [WithNamesrvAddr] and [WithBrokerAddr]).
func Start(opts ...Option) (*Broker, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt.apply(&o)
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	b := &Broker{
		opts:      o,
		stop:      make(chan struct{}),
		conns:     make(map[*conn]struct{}),
		topics:    make(map[string]*topic),
		byPhys:    make(map[int64]*message),
		keyIndex:  make(map[int64][]*message),
		offsets:   make(map[string]map[queueKey]int64),
		groups:    make(map[string]*group),
		subGroups: make(map[string]struct{}),
		producers: make(map[string]map[*conn]struct{}),
		locks:     make(map[string]map[queueKey]*lockEntry),
		held:      make(map[queueKey][]*heldPull),
		schedule:  make([][]*message, len(o.delayLevels)),
		halfs:     make(map[int64]*halfState),
		faults:    make(map[int][]*fault),
	}
	b.topics[defaultTopic] = newTopic(defaultTopic, 8, 8, permRead|permWrite|permInherit)
	nsLn, err := net.Listen("tcp", o.namesrvAddr)
	if err != nil {
		return nil, fmt.Errorf("rmqtest: listen namesrv: %w", err)
	}
	brLn, err := net.Listen("tcp", o.brokerAddr)
	if err != nil {
		nsLn.Close()
		return nil, fmt.Errorf("rmqtest: listen broker: %w", err)
	}
	b.nsAddr = nsLn.Addr().String()
	b.brAddr = brLn.Addr().String()
	b.brHost = netip.MustParseAddrPort(b.brAddr)
	b.serve(nsLn, true)
	b.serve(brLn, false)
	b.wg.Add(1)
	go b.housekeeping()
	return b, nil
}

// Tester is the part of testing.TB that [Run] uses.
type Tester interface {
	Helper()
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// Run starts a broker for a test and closes it when the test ends. It fails
// the test if the broker cannot start.
func Run(t Tester, opts ...Option) *Broker {
	t.Helper()
	b, err := Start(opts...)
	if err != nil {
		t.Fatalf("rmqtest: %v", err)
		return nil
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Fatalf("rmqtest: close: %v", err)
		}
	})
	return b
}

// NamesrvAddr is the name server's host:port, for the client's
// WithNameServer option.
func (b *Broker) NamesrvAddr() string { return b.nsAddr }

// BrokerAddr is the broker's host:port, as routes advertise it and as admin
// calls (CreateTopic) take it.
func (b *Broker) BrokerAddr() string { return b.brAddr }

// Close stops the broker: it closes the listeners and every connection and
// returns once all of its goroutines have exited. It is idempotent.
func (b *Broker) Close() error {
	b.closeMu.Lock()
	defer b.closeMu.Unlock()
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	close(b.stop)
	b.disconnect()
	b.wg.Wait()
	return nil
}

// Down simulates a broker outage: the name server and broker stop accepting
// and every connection is dropped. The store (topics, messages, offsets) is
// kept; [Broker.Up] brings the broker back on the same addresses.
func (b *Broker) Down() error {
	b.closeMu.Lock()
	defer b.closeMu.Unlock()
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	b.down = true
	b.mu.Unlock()
	b.disconnect()
	return nil
}

// Up ends an outage started by [Broker.Down]. It is a no-op if the broker is
// up.
func (b *Broker) Up() error {
	b.closeMu.Lock()
	defer b.closeMu.Unlock()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	if !b.down {
		return nil
	}
	nsLn, err := net.Listen("tcp", b.nsAddr)
	if err != nil {
		return fmt.Errorf("rmqtest: relisten namesrv: %w", err)
	}
	brLn, err := net.Listen("tcp", b.brAddr)
	if err != nil {
		nsLn.Close()
		return fmt.Errorf("rmqtest: relisten broker: %w", err)
	}
	b.down = false
	b.serveLocked(nsLn, true)
	b.serveLocked(brLn, false)
	return nil
}

// disconnect closes the listeners and connections and waits for their
// goroutines (but not for housekeeping).
func (b *Broker) disconnect() {
	b.mu.Lock()
	lns := b.listeners
	b.listeners = nil
	conns := make([]*conn, 0, len(b.conns))
	for c := range b.conns {
		conns = append(conns, c)
	}
	b.mu.Unlock()
	for _, ln := range lns {
		ln.Close() // the accept loop reports the close; nothing else to do with the error
	}
	for _, c := range conns {
		c.nc.Close()
	}
	for _, c := range conns {
		<-c.done
	}
}

// Now is the broker's clock: the wall clock plus every [Broker.Advance].
func (b *Broker) Now() time.Time {
	return time.Now().Add(time.Duration(b.offset.Load()))
}

// Advance moves the broker's clock forward by d and runs, before returning,
// everything that became due: delayed and retried messages are delivered,
// transaction check-backs are sent, and orderly locks expire. The client's
// own timers (rebalance, route refresh) are not affected.
func (b *Broker) Advance(d time.Duration) {
	if d <= 0 {
		return
	}
	b.offset.Add(int64(d))
	b.tick()
}

func (b *Broker) housekeeping() {
	defer b.wg.Done()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			b.mu.Lock()
			b.held = make(map[queueKey][]*heldPull)
			b.mu.Unlock()
			return
		case <-t.C:
			b.tick()
		}
	}
}

// tick runs the time-driven work: expired held pulls, due delayed messages,
// transaction check-backs.
func (b *Broker) tick() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.expireHeldLocked(time.Now())
	b.deliverDueLocked()
	b.checkTransactionsLocked()
}
