package remoting

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"
)

// QueryByKey asks the broker at broker for topic's messages carrying key
// (among their keys, or as their UNIQ_KEY), stored in [begin, end]
// (QUERY_MESSAGE). The broker looks the key up by hash and answers at most
// max messages whose topic#key hash matches, other keys' included; only
// the topic's messages carrying key itself are returned. full reports
// that the broker's answer reached max, so more may exist. None found,
// and a topic the broker does not know, is an empty result, not an error.
func QueryByKey(ctx context.Context, creds Credentials, broker, topic, key string, max int, begin, end time.Time) (msgs []*StoredMessage, full bool, err error) {
	resp, err := invokeSigned(ctx, broker, &Command{Code: ReqQueryMessage, ExtFields: map[string]string{
		"topic": topic, "key": key, "maxNum": strconv.Itoa(max),
		"beginTimestamp": strconv.FormatInt(begin.UnixMilli(), 10), "endTimestamp": strconv.FormatInt(end.UnixMilli(), 10),
	}}, creds)
	if err != nil {
		return nil, false, fmt.Errorf("query %s by key on %s: %w", topic, broker, err)
	}
	switch resp.Code {
	case CodeSuccess:
	case CodeQueryNotFound, CodeTopicNotExist: // a topic never written to (a group's retry topic) holds none
		return nil, false, nil
	default:
		return nil, false, fmt.Errorf("query %s by key on %s: code %d %s", topic, broker, resp.Code, resp.Remark)
	}
	all, err := DecodeStoredMessages(resp.Body)
	if err != nil {
		return nil, false, fmt.Errorf("query %s by key on %s: %w", topic, broker, err)
	}
	for _, m := range all {
		if m.Topic != topic {
			continue
		}
		props := DecodeProperties(m.Properties)
		if props[PropUniqKey] == key || slices.Contains(SplitKeys(props[PropKeys]), key) {
			msgs = append(msgs, m)
		}
	}
	return msgs, len(all) >= max, nil
}
