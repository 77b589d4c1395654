package remoting

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"net/netip"
	"strings"
)

// MagicCode is the stored-message magic of a 4.9.4 broker.
const MagicCode = 0xDAA320A7

// Message system flag bits.
const (
	SysFlagCompressed          = 0x1
	SysFlagMultiTags           = 0x2
	SysFlagTransactionPrepared = 0x4
	SysFlagTransactionCommit   = 0x8
	SysFlagTransactionRollback = 0xC
	SysFlagTransactionMask     = 0xC
	SysFlagBornHostV6          = 0x10
	SysFlagStoreHostV6         = 0x20
)

// StoredMessage is one message in the broker's stored layout: what pull,
// query, view and check-back bodies carry.
type StoredMessage struct {
	QueueID                   int32
	Flag                      int32
	QueueOffset               int64
	PhysicalOffset            int64
	SysFlag                   int32
	BornTimestamp             int64
	BornHost                  netip.AddrPort
	StoreTimestamp            int64
	StoreHost                 netip.AddrPort
	ReconsumeTimes            int32
	PreparedTransactionOffset int64
	Body                      []byte
	Topic                     string
	Properties                string
}

var errShort = errors.New("remoting: stored message truncated")

func hostLen(v6 bool) int {
	if v6 {
		return 20
	}
	return 8
}

// sysFlagFor returns m.SysFlag with the host-family bits set from the hosts.
func (m *StoredMessage) sysFlagFor() int32 {
	f := m.SysFlag &^ (SysFlagBornHostV6 | SysFlagStoreHostV6)
	if m.BornHost.Addr().Is6() && !m.BornHost.Addr().Is4In6() {
		f |= SysFlagBornHostV6
	}
	if m.StoreHost.Addr().Is6() && !m.StoreHost.Addr().Is4In6() {
		f |= SysFlagStoreHostV6
	}
	return f
}

// EncodedSize is the length of the record [StoredMessage.AppendEncoded] writes.
func (m *StoredMessage) EncodedSize() int {
	f := m.sysFlagFor()
	return 4 + 4 + 4 + 4 + 4 + 8 + 8 + 4 + 8 + hostLen(f&SysFlagBornHostV6 != 0) + 8 +
		hostLen(f&SysFlagStoreHostV6 != 0) + 4 + 8 + 4 + len(m.Body) + 1 + len(m.Topic) + 2 + len(m.Properties)
}

// Validate reports whether the message fits the layout: a topic of at most
// 255 bytes and properties of at most 32767 bytes (the client reads a signed
// 16-bit length).
func (m *StoredMessage) Validate() error {
	if len(m.Topic) > 255 {
		return fmt.Errorf("remoting: topic of %d bytes exceeds 255", len(m.Topic))
	}
	if len(m.Properties) > 32767 {
		return fmt.Errorf("remoting: properties of %d bytes exceed 32767", len(m.Properties))
	}
	return nil
}

func appendHost(b []byte, h netip.AddrPort, v6 bool) []byte {
	if v6 {
		a := h.Addr().As16()
		b = append(b, a[:]...)
	} else {
		a := h.Addr().Unmap()
		if !a.Is4() {
			a = netip.IPv4Unspecified()
		}
		a4 := a.As4()
		b = append(b, a4[:]...)
	}
	return binary.BigEndian.AppendUint32(b, uint32(h.Port()))
}

// AppendEncoded appends the stored record to b. The message must pass
// [StoredMessage.Validate].
func (m *StoredMessage) AppendEncoded(b []byte) []byte {
	f := m.sysFlagFor()
	b = binary.BigEndian.AppendUint32(b, uint32(m.EncodedSize()))
	b = binary.BigEndian.AppendUint32(b, MagicCode)
	b = binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(m.Body))
	b = binary.BigEndian.AppendUint32(b, uint32(m.QueueID))
	b = binary.BigEndian.AppendUint32(b, uint32(m.Flag))
	b = binary.BigEndian.AppendUint64(b, uint64(m.QueueOffset))
	b = binary.BigEndian.AppendUint64(b, uint64(m.PhysicalOffset))
	b = binary.BigEndian.AppendUint32(b, uint32(f))
	b = binary.BigEndian.AppendUint64(b, uint64(m.BornTimestamp))
	b = appendHost(b, m.BornHost, f&SysFlagBornHostV6 != 0)
	b = binary.BigEndian.AppendUint64(b, uint64(m.StoreTimestamp))
	b = appendHost(b, m.StoreHost, f&SysFlagStoreHostV6 != 0)
	b = binary.BigEndian.AppendUint32(b, uint32(m.ReconsumeTimes))
	b = binary.BigEndian.AppendUint64(b, uint64(m.PreparedTransactionOffset))
	b = binary.BigEndian.AppendUint32(b, uint32(len(m.Body)))
	b = append(b, m.Body...)
	b = append(b, byte(len(m.Topic)))
	b = append(b, m.Topic...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.Properties)))
	return append(b, m.Properties...)
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.err = errShort
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) u8() uint8 {
	if p := r.take(1); p != nil {
		return p[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if p := r.take(2); p != nil {
		return binary.BigEndian.Uint16(p)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if p := r.take(4); p != nil {
		return binary.BigEndian.Uint32(p)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if p := r.take(8); p != nil {
		return binary.BigEndian.Uint64(p)
	}
	return 0
}

func (r *reader) host(v6 bool) netip.AddrPort {
	var a netip.Addr
	if v6 {
		if p := r.take(16); p != nil {
			a = netip.AddrFrom16([16]byte(p))
		}
	} else if p := r.take(4); p != nil {
		a = netip.AddrFrom4([4]byte(p))
	}
	port := r.u32()
	if r.err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(a, uint16(port))
}

// DecodeStoredMessages decodes a concatenation of stored records.
func DecodeStoredMessages(b []byte) ([]*StoredMessage, error) {
	var out []*StoredMessage
	for len(b) > 0 {
		if len(b) < 4 {
			return out, errShort
		}
		size := int(binary.BigEndian.Uint32(b))
		if size < 4 || size > len(b) {
			return out, fmt.Errorf("remoting: stored message size %d, %d bytes left: %w", size, len(b), errShort)
		}
		m, err := decodeStored(b[4:size])
		if err != nil {
			return out, err
		}
		out = append(out, m)
		b = b[size:]
	}
	return out, nil
}

func decodeStored(b []byte) (*StoredMessage, error) {
	r := &reader{b: b}
	m := &StoredMessage{}
	r.u32() // magic
	r.u32() // body CRC
	m.QueueID = int32(r.u32())
	m.Flag = int32(r.u32())
	m.QueueOffset = int64(r.u64())
	m.PhysicalOffset = int64(r.u64())
	m.SysFlag = int32(r.u32())
	m.BornTimestamp = int64(r.u64())
	m.BornHost = r.host(m.SysFlag&SysFlagBornHostV6 != 0)
	m.StoreTimestamp = int64(r.u64())
	m.StoreHost = r.host(m.SysFlag&SysFlagStoreHostV6 != 0)
	m.ReconsumeTimes = int32(r.u32())
	m.PreparedTransactionOffset = int64(r.u64())
	if body := r.take(int(r.u32())); len(body) > 0 {
		m.Body = body
	}
	m.Topic = string(r.take(int(r.u8())))
	m.Properties = string(r.take(int(int16(r.u16()))))
	if r.err != nil {
		return nil, r.err
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("remoting: %d bytes after stored message fields", len(r.b))
	}
	m.SysFlag &^= SysFlagBornHostV6 | SysFlagStoreHostV6
	return m, nil
}

// BatchItem is one member of a SEND_BATCH_MESSAGE body.
type BatchItem struct {
	Flag       int32
	Body       []byte
	Properties string
}

// EncodeBatch writes a batch body as the client does.
func EncodeBatch(items []BatchItem) []byte {
	var b []byte
	for _, it := range items {
		b = binary.BigEndian.AppendUint32(b, uint32(22+len(it.Body)+len(it.Properties)))
		b = binary.BigEndian.AppendUint32(b, 0) // magic
		b = binary.BigEndian.AppendUint32(b, 0) // body CRC
		b = binary.BigEndian.AppendUint32(b, uint32(it.Flag))
		b = binary.BigEndian.AppendUint32(b, uint32(len(it.Body)))
		b = append(b, it.Body...)
		b = binary.BigEndian.AppendUint16(b, uint16(len(it.Properties)))
		b = append(b, it.Properties...)
	}
	return b
}

// DecodeBatch parses a SEND_BATCH_MESSAGE body.
func DecodeBatch(b []byte) ([]BatchItem, error) {
	var out []BatchItem
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, errShort
		}
		size := int(binary.BigEndian.Uint32(b))
		if size < 22 || size > len(b) {
			return nil, fmt.Errorf("remoting: batch item size %d, %d bytes left: %w", size, len(b), errShort)
		}
		r := &reader{b: b[4:size]}
		r.u32() // magic
		r.u32() // body CRC
		it := BatchItem{Flag: int32(r.u32())}
		if body := r.take(int(r.u32())); len(body) > 0 {
			it.Body = body
		}
		it.Properties = string(r.take(int(r.u16())))
		if r.err != nil {
			return nil, r.err
		}
		if len(r.b) != 0 {
			return nil, fmt.Errorf("remoting: %d bytes after batch item fields", len(r.b))
		}
		out = append(out, it)
		b = b[size:]
	}
	return out, nil
}

// OffsetMsgID is the broker-assigned message id: uppercase hex of the store
// host address, its port as a 32-bit integer, and the commit log offset.
func OffsetMsgID(storeHost netip.AddrPort, physicalOffset int64) string {
	b := appendHost(nil, storeHost, storeHost.Addr().Is6() && !storeHost.Addr().Is4In6())
	b = binary.BigEndian.AppendUint64(b, uint64(physicalOffset))
	return strings.ToUpper(hex.EncodeToString(b))
}

// ParseOffsetMsgID is the inverse of [OffsetMsgID].
func ParseOffsetMsgID(id string) (netip.AddrPort, int64, error) {
	b, err := hex.DecodeString(id)
	if err != nil || (len(b) != 16 && len(b) != 28) {
		return netip.AddrPort{}, 0, fmt.Errorf("remoting: malformed offset message id %q", id)
	}
	r := &reader{b: b}
	host := r.host(len(b) == 28)
	return host, int64(r.u64()), r.err
}
