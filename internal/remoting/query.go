package remoting

import (
	"context"
	"fmt"
	"strconv"
	"time"
)

// QueryByKey asks the broker at broker for topic's messages indexed under
// key (a message key or its UNIQ_KEY), stored in [begin, end], at most max
// (QUERY_MESSAGE). None found is an empty result, not an error.
func QueryByKey(ctx context.Context, creds Credentials, broker, topic, key string, max int, begin, end time.Time) ([]*StoredMessage, error) {
	resp, err := invokeSigned(ctx, broker, &Command{Code: ReqQueryMessage, ExtFields: map[string]string{
		"topic": topic, "key": key, "maxNum": strconv.Itoa(max),
		"beginTimestamp": strconv.FormatInt(begin.UnixMilli(), 10), "endTimestamp": strconv.FormatInt(end.UnixMilli(), 10),
	}}, creds)
	if err != nil {
		return nil, fmt.Errorf("query %s by key on %s: %w", topic, broker, err)
	}
	switch resp.Code {
	case CodeSuccess:
	case CodeQueryNotFound:
		return nil, nil
	default:
		return nil, fmt.Errorf("query %s by key on %s: code %d %s", topic, broker, resp.Code, resp.Remark)
	}
	msgs, err := DecodeStoredMessages(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("query %s by key on %s: %w", topic, broker, err)
	}
	return msgs, nil
}
