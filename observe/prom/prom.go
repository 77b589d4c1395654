package prom

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/seed157d4c4d/reliablemq/observe"
)

// ErrNilRegisterer is returned by [New] when it is given no registerer.
// Pass prometheus.DefaultRegisterer explicitly to use the global one.
var ErrNilRegisterer = errors.New("prom: nil registerer")

// Option configures [New].
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	sendBuckets   []float64
	handleBuckets []float64
}

// WithSendBuckets sets the upper bounds, in seconds and strictly
// increasing, of reliablemq_send_duration_seconds. Default
// prometheus.DefBuckets (5 ms to 10 s).
func WithSendBuckets(b ...float64) Option {
	b = append([]float64(nil), b...)
	return optionFunc(func(c *config) { c.sendBuckets = b })
}

// WithHandleBuckets sets the upper bounds, in seconds and strictly
// increasing, of reliablemq_handle_duration_seconds. Default
// prometheus.DefBuckets (5 ms to 10 s).
func WithHandleBuckets(b ...float64) Option {
	b = append([]float64(nil), b...)
	return optionFunc(func(c *config) { c.handleBuckets = b })
}

// metrics are the collectors behind one set of hooks.
type metrics struct {
	events   *prometheus.CounterVec
	send     *prometheus.HistogramVec
	handle   *prometheus.HistogramVec
	inFlight *prometheus.GaugeVec
}

// New registers reliablemq's collectors on reg and returns hooks that
// update them: Event counts every event and times sends, Handle times
// each handler. Inject is left nil. See the package documentation for the
// metrics and their labels.
//
// New fails, registering nothing, if reg is nil, if an option is invalid,
// or if reg refuses a collector (a second New on the same registry gets a
// [prometheus.AlreadyRegisteredError] in its chain). It does no I/O. The
// returned hooks are safe for concurrent use.
func New(reg prometheus.Registerer, opts ...Option) (observe.Hooks, error) {
	var c config
	for _, o := range opts {
		o.apply(&c)
	}
	var errs []error
	if reg == nil {
		errs = append(errs, ErrNilRegisterer)
	}
	if err := checkBuckets(c.sendBuckets); err != nil {
		errs = append(errs, fmt.Errorf("prom: send buckets: %w", err))
	}
	if err := checkBuckets(c.handleBuckets); err != nil {
		errs = append(errs, fmt.Errorf("prom: handle buckets: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return observe.Hooks{}, err
	}

	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "reliablemq_events_total",
			Help: "Events reported by reliablemq (sends, retries, handled, duplicates, parked messages, outbox rows), by kind.",
		}, []string{"kind", "topic", "group", "reason"}),
		send: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "reliablemq_send_duration_seconds",
			Help:    "Time of each producer send (as the producer reports it in its send_done event), by outcome.",
			Buckets: c.sendBuckets,
		}, []string{"topic", "outcome"}),
		handle: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "reliablemq_handle_duration_seconds",
			Help:    "Time of each consumer handling of a delivery, by result.",
			Buckets: c.handleBuckets,
		}, []string{"topic", "group", "result"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "reliablemq_handlers_in_flight",
			Help: "Consumer handlers running now.",
		}, []string{"topic", "group"}),
	}
	collectors := []prometheus.Collector{m.events, m.send, m.handle, m.inFlight}
	for i, col := range collectors {
		if err := reg.Register(col); err != nil {
			for _, done := range collectors[:i] {
				// Undo what this call registered; the result only says
				// whether it was there, which it is.
				reg.Unregister(done)
			}
			return observe.Hooks{}, fmt.Errorf("prom: register: %w", err)
		}
	}
	return observe.Hooks{Event: m.event, Handle: m.begin}, nil
}

// checkBuckets rejects what the client would panic on when it creates a
// series, later and on a message's goroutine.
func checkBuckets(b []float64) error {
	for i, v := range b {
		if math.IsNaN(v) {
			return errors.New("NaN bound")
		}
		if i > 0 && b[i-1] >= v {
			return fmt.Errorf("bounds not strictly increasing: %g >= %g", b[i-1], v)
		}
	}
	return nil
}

func (m *metrics) event(_ context.Context, e observe.Event) {
	topic, group, reason := label(e.Topic), label(e.Group), label(e.Reason)
	if c, err := m.events.GetMetricWithLabelValues(label(string(e.Kind)), topic, group, reason); err == nil {
		c.Inc()
	}
	if e.Kind != observe.SendDone || e.Duration <= 0 {
		return
	}
	outcome := "ok"
	if e.Err != nil {
		outcome = reason
		if outcome == "" {
			outcome = "error"
		}
	}
	if h, err := m.send.GetMetricWithLabelValues(topic, outcome); err == nil {
		h.Observe(e.Duration.Seconds())
	}
}

func (m *metrics) begin(ctx context.Context, msg observe.Message) (context.Context, func(error)) {
	topic, group := label(msg.Topic), label(msg.Group)
	g, err := m.inFlight.GetMetricWithLabelValues(topic, group)
	if err == nil {
		g.Inc()
	}
	start := time.Now()
	var ended atomic.Bool
	return ctx, func(herr error) {
		if ended.Swap(true) {
			return
		}
		if g != nil {
			g.Dec()
		}
		result := "ok"
		if herr != nil {
			result = "error"
		}
		if h, err := m.handle.GetMetricWithLabelValues(topic, group, result); err == nil {
			h.Observe(time.Since(start).Seconds())
		}
	}
}

// label returns v as a valid label value: the client refuses invalid UTF-8.
func label(v string) string {
	if utf8.ValidString(v) {
		return v
	}
	return strings.ToValidUTF8(v, "\uFFFD")
}
