package producer

import (
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/seed157d4c4d/reliablemq/orderly"
)

// FoundCheckQueue reports whether p found the official client's check-back
// queue, which Close relies on to shut the client down race-free.
func FoundCheckQueue(p *Transactional) bool { return p.checks != nil }

// QueueSelector is the queue selector New gives the official client for
// opts.
func QueueSelector(opts ...Option) (*orderly.Selector, error) {
	cfg, err := newConfig(func(c *config) {
		for _, o := range opts {
			o.apply(c)
		}
	})
	if err != nil {
		return nil, err
	}
	return queueSelector(cfg), nil
}

// CheckBackParked reports whether a check-back that arrived after Close
// began is parked, waiting for the client's shutdown.
func CheckBackParked(p *Transactional) bool { return len(p.parked) == 1 }

// CheckBackDeclined reports whether a check-back that came on the
// producer's own connections (checkBacks) after Close began was left
// unanswered.
func CheckBackDeclined(p *Transactional) bool { return p.backs.declined.Load() > 0 }

// Classify is classify's outcome for err.
func Classify(err error) Outcome {
	o, _ := classify(err)
	return o
}

// CheckThroughClient is the official client's check-back of ext, as its
// transaction listener takes it.
func CheckThroughClient(p *Transactional, ext *primitive.MessageExt) primitive.LocalTransactionState {
	return txListener{p}.CheckLocalTransaction(ext)
}
