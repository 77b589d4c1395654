package outbox

import "strconv"

// literal builds a statement with its values written into the text: byte
// strings as hex literals (X'...'), integers in decimal. A hex literal
// holds only [0-9a-f], so no value, whatever its bytes, can change the
// statement, in any sql_mode or character set. A statement without
// arguments is one round trip: through go-sql-driver without
// interpolateParams, a statement with arguments is a prepare, an execute
// and a close, which on a busy outbox cost the client and the server more
// CPU than the row itself.
//
// Only columns and parameters that are binary strings (VARBINARY, BINARY,
// BLOB) take hex literals: for them X'...' is the value byte for byte.
type literal []byte

const hexDigits = "0123456789abcdef"

func (l literal) sql(s string) literal { return append(l, s...) }

func (l literal) hex(s string) literal {
	l = append(l, "X'"...)
	for i := 0; i < len(s); i++ {
		l = append(l, hexDigits[s[i]>>4], hexDigits[s[i]&0xf])
	}
	return append(l, '\'')
}

func (l literal) hexBytes(p []byte) literal {
	l = append(l, "X'"...)
	for _, c := range p {
		l = append(l, hexDigits[c>>4], hexDigits[c&0xf])
	}
	return append(l, '\'')
}

func (l literal) int(n int64) literal { return strconv.AppendInt(l, n, 10) }

// ints writes ids as a comma-separated list.
func (l literal) ints(ids []int64) literal {
	for i, id := range ids {
		if i > 0 {
			l = append(l, ", "...)
		}
		l = strconv.AppendInt(l, id, 10)
	}
	return l
}
