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

// accessCheckTimeout bounds the check at Start.
const accessCheckTimeout = 5 * time.Second

// checkAccess asks the brokers whether the account may consume; only an
// ACL refusal is an error (see remoting.CheckSubscribe).
func (c *Consumer) checkAccess() error {
	ctx, cancel := context.WithTimeout(context.Background(), accessCheckTimeout)
	defer cancel()
	cr := c.cfg.credentials
	err := remoting.CheckSubscribe(ctx, remoting.Credentials(cr), c.names, c.group, c.topic)
	if errors.Is(err, remoting.ErrAccessDenied) {
		return fmt.Errorf("%w: group %s, topic %s: %v", ErrAccessDenied, c.group, c.topic, err)
	}
	return nil
}
