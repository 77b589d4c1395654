package rmqtest

import (
	"errors"
	"fmt"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/delaylevel"
)

// Option configures a [Broker].
type Option interface{ apply(*options) }

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	namesrvAddr         string
	brokerAddr          string
	brokerName          string
	clusterName         string
	autoCreateTopics    bool
	delayLevels         []time.Duration
	transactionTimeout  time.Duration
	transactionInterval time.Duration
	transactionMaxCheck int
	lockExpiry          time.Duration
	maxMessageSize      int
	dlqPerm             int
}

func defaultOptions() options {
	return options{
		namesrvAddr:         "127.0.0.1:0",
		brokerAddr:          "127.0.0.1:0",
		brokerName:          "broker-a",
		clusterName:         "DefaultCluster",
		autoCreateTopics:    true,
		dlqPerm:             permRead | permWrite,
		delayLevels:         delaylevel.Default,
		transactionTimeout:  6 * time.Second,
		transactionInterval: 60 * time.Second,
		transactionMaxCheck: 15,
		lockExpiry:          60 * time.Second,
		maxMessageSize:      4 << 20,
	}
}

func (o *options) validate() error {
	var errs []error
	if len(o.delayLevels) == 0 {
		errs = append(errs, errors.New("rmqtest: at least one delay level is required"))
	}
	for i, d := range o.delayLevels {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("rmqtest: delay level %d is %v, must be positive", i+1, d))
		}
	}
	if o.transactionTimeout <= 0 || o.transactionInterval <= 0 || o.transactionMaxCheck <= 0 {
		errs = append(errs, errors.New("rmqtest: transaction check settings must be positive"))
	}
	return errors.Join(errs...)
}

// WithNamesrvAddr sets the name server's listen address. Default
// "127.0.0.1:0" (a free port).
func WithNamesrvAddr(addr string) Option {
	return optionFunc(func(o *options) { o.namesrvAddr = addr })
}

// WithBrokerAddr sets the broker's listen address, which routes advertise
// and stored messages carry as their store host. Default "127.0.0.1:0".
func WithBrokerAddr(addr string) Option {
	return optionFunc(func(o *options) { o.brokerAddr = addr })
}

// WithDelayLevels replaces the delay level table (level 1 is the first
// entry). Default the real broker's 18 levels, 1s 5s 10s 30s 1m ... 2h.
func WithDelayLevels(levels ...time.Duration) Option {
	return optionFunc(func(o *options) { o.delayLevels = append([]time.Duration(nil), levels...) })
}

// WithoutAutoCreateTopics makes sends to unknown topics fail with
// TOPIC_NOT_EXIST, as a broker with autoCreateTopicEnable=false does. By
// default unknown topics are created from TBW102 with 4 queues.
func WithoutAutoCreateTopics() Option {
	return optionFunc(func(o *options) { o.autoCreateTopics = false })
}

// WithWriteOnlyDLQ creates %DLQ% topics write-only (perm 2), as older 4.x
// brokers do. By default they are read-write, as on 4.9.4 and 5.x.
func WithWriteOnlyDLQ() Option {
	return optionFunc(func(o *options) { o.dlqPerm = permWrite })
}

// WithTransactionCheck sets when half messages are checked back with their
// producer: first after timeout, then every interval, at most maxChecks
// times before the broker rolls the message back. Default 6s, 60s, 15, as
// a real broker.
func WithTransactionCheck(timeout, interval time.Duration, maxChecks int) Option {
	return optionFunc(func(o *options) {
		o.transactionTimeout, o.transactionInterval, o.transactionMaxCheck = timeout, interval, maxChecks
	})
}
