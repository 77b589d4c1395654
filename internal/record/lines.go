package record

import (
	"encoding/base64"
	"encoding/json"
	"unicode/utf8"

	"github.com/seed157d4c4d/reliablemq/internal/remoting"
)

// The transcript's line types. Field names follow the shared golden
// transcripts, so the same readers work on both.

type metaLine struct {
	Meta map[string]string `json:"meta"`
	T    float64           `json:"t"`
}

type noteLine struct {
	Note        string  `json:"note"`
	RealBroker  string  `json:"realBroker,omitempty"`
	ProxyBroker string  `json:"proxyBroker,omitempty"`
	T           float64 `json:"t"`
}

type eventLine struct {
	Event  string  `json:"event"`
	Conn   int     `json:"conn"`
	Peer   string  `json:"peer"`
	Dir    string  `json:"dir,omitempty"`    // on close: the direction that ended
	Client string  `json:"client,omitempty"` // on connect
	Server string  `json:"server,omitempty"` // on connect: the real peer
	Error  string  `json:"error,omitempty"`  // on close, unless it was a clean end
	T      float64 `json:"t"`
}

type frameLine struct {
	T                      float64           `json:"t"`
	Conn                   int               `json:"conn"`
	Peer                   string            `json:"peer"`
	Dir                    string            `json:"dir"`
	Kind                   string            `json:"kind,omitempty"`
	Code                   *int              `json:"code,omitempty"`
	CodeName               string            `json:"codeName,omitempty"`
	ReqCode                int               `json:"reqCode,omitempty"`
	ReqName                string            `json:"reqName,omitempty"`
	Opaque                 int32             `json:"opaque"`
	Flag                   int               `json:"flag"`
	Remark                 string            `json:"remark,omitempty"`
	ExtFields              map[string]string `json:"extFields,omitempty"`
	PropertiesDecoded      map[string]string `json:"propertiesDecoded,omitempty"`
	Hdr                    map[string]any    `json:"hdr,omitempty"`
	SerializeType          int               `json:"serializeType"`
	HeaderLen              int               `json:"headerLen"`
	BodyLen                int               `json:"bodyLen"`
	Body                   string            `json:"body,omitempty"`
	BodyEnc                string            `json:"bodyEnc,omitempty"`
	DecodedMessages        []storedView      `json:"decodedMessages,omitempty"`
	ProxyRewroteBrokerAddr string            `json:"proxyRewroteBrokerAddr,omitempty"`
	RewriteError           string            `json:"rewriteError,omitempty"`
	DecodeError            string            `json:"decodeError,omitempty"`
}

func (l *metaLine) setT(t float64)  { l.T = t }
func (l *noteLine) setT(t float64)  { l.T = t }
func (l *eventLine) setT(t float64) { l.T = t }
func (l *frameLine) setT(t float64) { l.T = t }

// storedView is one stored message of a pull, query, view or check-back
// body, decoded for reading (not on the wire).
type storedView struct {
	Topic                     string            `json:"topic"`
	QueueID                   int32             `json:"queueId"`
	QueueOffset               int64             `json:"queueOffset"`
	PhysicalOffset            int64             `json:"commitLogOffset"`
	Flag                      int32             `json:"flag"`
	SysFlag                   int32             `json:"sysFlag"`
	ReconsumeTimes            int32             `json:"reconsumeTimes"`
	PreparedTransactionOffset int64             `json:"preparedTransactionOffset"`
	BornTimestamp             int64             `json:"bornTimestamp"`
	BornHost                  string            `json:"bornHost"`
	StoreTimestamp            int64             `json:"storeTimestamp"`
	StoreHost                 string            `json:"storeHost"`
	OffsetMsgID               string            `json:"offsetMsgId(derived)"`
	Properties                map[string]string `json:"properties,omitempty"`
	Body                      string            `json:"body,omitempty"`
	BodyEnc                   string            `json:"bodyEnc,omitempty"`
	Error                     string            `json:"error,omitempty"`
}

func decodeStored(body []byte) []storedView {
	msgs, err := remoting.DecodeStoredMessages(body)
	out := make([]storedView, 0, len(msgs)+1)
	for _, m := range msgs {
		v := storedView{
			Topic: m.Topic, QueueID: m.QueueID, QueueOffset: m.QueueOffset, PhysicalOffset: m.PhysicalOffset,
			Flag: m.Flag, SysFlag: m.SysFlag, ReconsumeTimes: m.ReconsumeTimes,
			PreparedTransactionOffset: m.PreparedTransactionOffset, BornTimestamp: m.BornTimestamp,
			BornHost: m.BornHost.String(), StoreTimestamp: m.StoreTimestamp, StoreHost: m.StoreHost.String(),
			OffsetMsgID: remoting.OffsetMsgID(m.StoreHost, m.PhysicalOffset),
			Properties:  remoting.DecodeProperties(m.Properties),
		}
		v.Body, v.BodyEnc = encodeBody(m.Body)
		out = append(out, v)
	}
	if err != nil {
		out = append(out, storedView{Error: err.Error()})
	}
	return out
}

// encodeBody returns b as text when it is valid UTF-8 without control
// characters other than tab and line breaks (JSON and plain bodies keep
// their exact bytes that way), else as base64.
func encodeBody(b []byte) (string, string) {
	if len(b) == 0 {
		return "", ""
	}
	if utf8.Valid(b) && !hasControl(b) {
		return string(b), "text"
	}
	return base64.StdEncoding.EncodeToString(b), "base64"
}

func hasControl(b []byte) bool {
	for _, c := range b {
		if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7f {
			return true
		}
	}
	return false
}

// otherHeaderKeys returns the header's keys other than the ones a frame
// line shows on its own (language, version, serializeTypeCurrentRPC and
// anything unknown).
func otherHeaderKeys(header []byte) map[string]any {
	var all map[string]any
	if json.Unmarshal(header, &all) != nil {
		return nil
	}
	for _, k := range []string{"code", "opaque", "flag", "remark", "extFields"} {
		delete(all, k)
	}
	if len(all) == 0 {
		return nil
	}
	return all
}

// requestNames and responseNames name the codes of RocketMQ's remoting
// protocol that clients and brokers of 4.9.x use; a response's code is in
// the second table, a request's in the first.
var requestNames = map[int]string{
	10: "SEND_MESSAGE", 11: "PULL_MESSAGE", 12: "QUERY_MESSAGE", 14: "QUERY_CONSUMER_OFFSET",
	15: "UPDATE_CONSUMER_OFFSET", 17: "UPDATE_AND_CREATE_TOPIC", 29: "SEARCH_OFFSET_BY_TIMESTAMP",
	30: "GET_MAX_OFFSET", 31: "GET_MIN_OFFSET", 33: "VIEW_MESSAGE_BY_ID", 34: "HEART_BEAT",
	35: "UNREGISTER_CLIENT", 36: "CONSUMER_SEND_MSG_BACK", 37: "END_TRANSACTION",
	38: "GET_CONSUMER_LIST_BY_GROUP", 39: "CHECK_TRANSACTION_STATE", 40: "NOTIFY_CONSUMER_IDS_CHANGED",
	41: "LOCK_BATCH_MQ", 42: "UNLOCK_BATCH_MQ", 103: "REGISTER_BROKER", 104: "UNREGISTER_BROKER",
	105: "GET_ROUTEINFO_BY_TOPIC", 106: "GET_BROKER_CLUSTER_INFO", 310: "SEND_MESSAGE_V2",
	201: "GET_ALL_SUBSCRIPTIONGROUP_CONFIG", 208: "GET_CONSUME_STATS", 320: "SEND_BATCH_MESSAGE",
}

var responseNames = map[int]string{
	0: "SUCCESS", 1: "SYSTEM_ERROR", 2: "SYSTEM_BUSY", 3: "REQUEST_CODE_NOT_SUPPORTED",
	4: "TRANSACTION_FAILED", 10: "FLUSH_DISK_TIMEOUT", 11: "SLAVE_NOT_AVAILABLE",
	12: "FLUSH_SLAVE_TIMEOUT", 13: "MESSAGE_ILLEGAL", 14: "SERVICE_NOT_AVAILABLE",
	15: "VERSION_NOT_SUPPORTED", 16: "NO_PERMISSION", 17: "TOPIC_NOT_EXIST", 19: "PULL_NOT_FOUND",
	20: "PULL_RETRY_IMMEDIATELY", 21: "PULL_OFFSET_MOVED", 22: "QUERY_NOT_FOUND",
	24: "SUBSCRIPTION_NOT_EXIST", 25: "SUBSCRIPTION_NOT_LATEST", 26: "SUBSCRIPTION_GROUP_NOT_EXIST",
	206: "CONSUMER_NOT_ONLINE",
}
