package consumer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/remoting"
)

// ErrAccessDenied is returned by [Consumer.Start] when the broker's ACL
// refuses the consumer's account on the topic or the group: the official
// client would start and then fail every pull without a word.
var ErrAccessDenied = errors.New("consumer: access denied by the broker's ACL (the account needs SUB on the topic and on the group)")

// ErrAccessUnverified is returned by [Consumer.Start] for a consumer with
// credentials when no broker routing its topic could be asked whether the
// account may consume (no route, every broker unreachable): starting
// anyway could mean consuming nothing without a word.
var ErrAccessUnverified = errors.New("consumer: broker access could not be verified")

// accessCheckTimeout bounds the check at Start; each request has its own,
// shorter bound.
const accessCheckTimeout = 15 * time.Second

// checkAccess asks the brokers whether the account may consume. An ACL
// refusal is an error; so is a check no broker answered when credentials
// are set (without them the cluster is taken to run without ACL, and the
// client's own retries handle a broker that is not up yet).
func (c *Consumer) checkAccess(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, accessCheckTimeout)
	defer cancel()
	cr := c.cfg.credentials
	err := remoting.CheckSubscribe(ctx, remoting.Credentials(cr), c.names, c.group, c.topic, cr.AccessKey != "")
	switch {
	case errors.Is(err, remoting.ErrAccessDenied):
		return fmt.Errorf("%w: group %s, topic %s: %v", ErrAccessDenied, c.group, c.topic, err)
	case errors.Is(err, remoting.ErrAccessUnverified) && cr.AccessKey != "":
		return fmt.Errorf("%w: group %s, topic %s: %v", ErrAccessUnverified, c.group, c.topic, err)
	}
	return nil
}
