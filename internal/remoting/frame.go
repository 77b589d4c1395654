package remoting

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
)

// Request and response codes used by the client and the broker.
const (
	CodeSuccess                   = 0
	CodeSystemError               = 1
	CodeRequestNotSupported       = 3
	CodeFlushDiskTimeout          = 10
	CodeSlaveNotAvailable         = 11
	CodeFlushSlaveTimeout         = 12
	CodeServiceNotAvailable       = 14
	CodeNoPermission              = 16
	CodeTopicNotExist             = 17
	CodePullNotFound              = 19
	CodePullRetryImmediately      = 20
	CodePullOffsetMoved           = 21
	CodeQueryNotFound             = 22
	CodeSubscriptionNotExist      = 24
	CodeMessageIllegal            = 13
	CodeSubscriptionGroupNotExist = 26

	ReqSendMessage              = 10
	ReqPullMessage              = 11
	ReqQueryMessage             = 12
	ReqQueryConsumerOffset      = 14
	ReqUpdateConsumerOffset     = 15
	ReqUpdateAndCreateTopic     = 17
	ReqSearchOffsetByTimestamp  = 29
	ReqGetMaxOffset             = 30
	ReqGetMinOffset             = 31
	ReqViewMessageByID          = 33
	ReqHeartBeat                = 34
	ReqUnregisterClient         = 35
	ReqConsumerSendMsgBack      = 36
	ReqEndTransaction           = 37
	ReqGetConsumerListByGroup   = 38
	ReqCheckTransactionState    = 39
	ReqNotifyConsumerIDsChanged = 40
	ReqLockBatchMQ              = 41
	ReqUnlockBatchMQ            = 42
	ReqGetRouteInfoByTopic      = 105
	ReqSendBatchMessage         = 320
)

// Header flag bits.
const (
	FlagResponse = 1
	FlagOneway   = 2
)

// MaxFrameSize bounds one frame (header and body): the real broker's default
// is 16 MiB, and a larger length prefix is treated as a corrupt stream.
const MaxFrameSize = 16 << 20

// ErrFrameTooLarge is returned by [ReadCommand] for a frame over [MaxFrameSize].
var ErrFrameTooLarge = errors.New("remoting: frame too large")

// ErrMalformed is returned, wrapped, by [DecodeFrame] and [ReadCommand]
// for a JSON frame whose length is known but whose header cannot be
// decoded.
// After ReadCommand's, the stream is still in step: the next frame can be
// read.
var ErrMalformed = errors.New("remoting: malformed frame")

// Command is one frame: a header and an optional body.
type Command struct {
	Code      int               `json:"code"`
	Language  string            `json:"language"`
	Version   int               `json:"version"`
	Opaque    int32             `json:"opaque"`
	Flag      int               `json:"flag"`
	Remark    string            `json:"remark,omitempty"`
	ExtFields map[string]string `json:"extFields,omitempty"`
	// SerializeTypeCurrentRPC is what a 4.9.4 broker adds to every header
	// it writes; the client ignores it.
	SerializeTypeCurrentRPC string `json:"serializeTypeCurrentRPC,omitempty"`
	Body                    []byte `json:"-"`
}

// IsResponse reports whether the response flag bit is set.
func (c *Command) IsResponse() bool { return c.Flag&FlagResponse != 0 }

// IsOneway reports whether the oneway flag bit is set.
func (c *Command) IsOneway() bool { return c.Flag&FlagOneway != 0 }

// Encode returns the frame: length prefix, serialize type and header
// length, JSON header, body.
func (c *Command) Encode() ([]byte, error) {
	header, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("remoting: encode header: %w", err)
	}
	if len(header) > 0xFFFFFF {
		return nil, fmt.Errorf("remoting: header of %d bytes: %w", len(header), ErrFrameTooLarge)
	}
	frameLen := 4 + len(header) + len(c.Body)
	if frameLen > MaxFrameSize {
		return nil, ErrFrameTooLarge
	}
	out := make([]byte, 8, 4+frameLen)
	binary.BigEndian.PutUint32(out[0:4], uint32(frameLen))
	binary.BigEndian.PutUint32(out[4:8], uint32(len(header))) // serialize type 0 = JSON
	out = append(out, header...)
	out = append(out, c.Body...)
	return out, nil
}

// ReadCommand reads one frame from r. It returns io.EOF only when r ends
// cleanly between frames.
func ReadCommand(r io.Reader) (*Command, error) {
	var prefix [4]byte
	if _, err := io.ReadFull(r, prefix[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(prefix[:])
	if n > MaxFrameSize {
		return nil, ErrFrameTooLarge
	}
	frame := make([]byte, n)
	if _, err := io.ReadFull(r, frame); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return DecodeFrame(frame)
}

// DecodeFrame decodes a frame without its 4-byte length prefix.
func DecodeFrame(frame []byte) (*Command, error) {
	if len(frame) < 4 {
		return nil, fmt.Errorf("%w: %d bytes are shorter than its header length", ErrMalformed, len(frame))
	}
	word := binary.BigEndian.Uint32(frame[0:4])
	if typ := word >> 24; typ != 0 {
		// Not ErrMalformed: a broker set to the binary serialize type sends
		// every frame so, and none will be readable on this connection.
		return nil, fmt.Errorf("remoting: serialize type %d not supported (JSON only)", typ)
	}
	hlen := int(word & 0xFFFFFF)
	if hlen > len(frame)-4 {
		return nil, fmt.Errorf("%w: header length %d exceeds frame of %d bytes", ErrMalformed, hlen, len(frame))
	}
	c := &Command{}
	if err := json.Unmarshal(frame[4:4+hlen], c); err != nil {
		return nil, fmt.Errorf("%w: decode header: %w", ErrMalformed, err)
	}
	if body := frame[4+hlen:]; len(body) > 0 {
		c.Body = body
	}
	return c, nil
}

// Sign adds RocketMQ ACL credentials to req as a broker with aclEnable
// checks them: AccessKey (and SecurityToken when set) among the header's
// fields, and Signature, the base64 HMAC-SHA1 under secretKey of every
// other field's value in key order followed by the body. A no-op without
// an access key.
func Sign(req *Command, accessKey, secretKey, securityToken string) {
	if accessKey == "" {
		return
	}
	if req.ExtFields == nil {
		req.ExtFields = make(map[string]string)
	}
	delete(req.ExtFields, "Signature")
	req.ExtFields["AccessKey"] = accessKey
	if securityToken != "" {
		req.ExtFields["SecurityToken"] = securityToken
	}
	keys := make([]string, 0, len(req.ExtFields))
	for k := range req.ExtFields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	mac := hmac.New(sha1.New, []byte(secretKey))
	for _, k := range keys {
		mac.Write([]byte(req.ExtFields[k])) // hash.Hash.Write never fails
	}
	mac.Write(req.Body)
	req.ExtFields["Signature"] = base64.StdEncoding.EncodeToString(mac.Sum(nil))
}
