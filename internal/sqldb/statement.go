package sqldb

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// InlineBudget is how many bytes of values a [Statement] writes into its
// text; values past it go as arguments. Hex doubles a value, so an inlined
// statement stays near 512 KiB (768 KiB with two [Statement.Text]s),
// under any server's max_allowed_packet of 1 MiB or more (MariaDB's
// default is 16 MiB, MySQL 8's 64 MiB); past it the server closes the
// connection, and the caller's transaction with it.
const InlineBudget = 256 << 10

// Statement builds a statement with its values written into the text:
// byte strings as hex literals (X'...'), integers in decimal. A hex
// literal holds only [0-9a-f], so no value, whatever its bytes, can change
// the statement, in any sql_mode or character set. A statement without
// arguments is one round trip: through go-sql-driver without
// interpolateParams, a statement with arguments is a prepare, an execute
// and a close, which on a hot path costs the client and the server more
// CPU than the row itself.
//
// Values past [InlineBudget] go as arguments instead, so a large value
// costs the round trips of a prepared statement but never an over-long
// statement; run it with [Exec], [Get], [Select] or [Scan], which prepare
// it themselves (never leaving the arguments to the driver's
// interpolateParams).
//
// Only columns and parameters that are binary strings (VARBINARY, BINARY,
// BLOB) may take [Statement.Bytes] and [Statement.String]: for them X'...'
// is the value byte for byte.
type Statement struct {
	text    []byte
	args    []any
	inlined int
}

// NewStatement returns an empty statement with room for size bytes (at
// most what an inlined statement can take).
func NewStatement(size int) *Statement {
	return &Statement{text: make([]byte, 0, min(size, 2*InlineBudget+4<<10))}
}

// SQL appends s as statement text; s must come from the code, never from
// a value.
func (st *Statement) SQL(s string) *Statement {
	st.text = append(st.text, s...)
	return st
}

// String appends v as a byte-string value.
func (st *Statement) String(v string) *Statement {
	if !st.inline(len(v)) {
		return st.arg([]byte(v))
	}
	return st.hex(v)
}

// hex appends v as a hex literal.
func (st *Statement) hex(v string) *Statement {
	st.text = append(st.text, "X'"...)
	for i := 0; i < len(v); i++ {
		st.text = append(st.text, hexDigits[v[i]>>4], hexDigits[v[i]&0xf])
	}
	st.text = append(st.text, '\'')
	return st
}

// Bytes appends p as a byte-string value.
func (st *Statement) Bytes(p []byte) *Statement {
	if !st.inline(len(p)) {
		return st.arg(p)
	}
	st.text = append(st.text, "X'"...)
	for _, c := range p {
		st.text = append(st.text, hexDigits[c>>4], hexDigits[c&0xf])
	}
	st.text = append(st.text, '\'')
	return st
}

// MaxText is what a TEXT column holds, in bytes.
const MaxText = 65535

// Text appends v as a UTF-8 string for a TEXT column of utf8mb4: invalid
// UTF-8 replaced, cut at a character boundary to [MaxText] bytes, and
// written as a hex literal with its character set named, so the server
// takes it as UTF-8 whatever the connection's character set (an argument
// would be taken in the connection's). It is always inlined: a statement
// with two texts stays under about 768 KiB.
func (st *Statement) Text(v string) *Statement {
	v = strings.ToValidUTF8(v, "\uFFFD")
	if len(v) > MaxText {
		cut := MaxText
		for cut > 0 && !utf8.RuneStart(v[cut]) {
			cut--
		}
		v = v[:cut]
	}
	st.inlined += len(v)
	st.text = append(st.text, "_utf8mb4 "...)
	return st.hex(v)
}

// Int appends n in decimal.
func (st *Statement) Int(n int64) *Statement {
	st.text = strconv.AppendInt(st.text, n, 10)
	return st
}

// Ints appends ns as a comma-separated list.
func (st *Statement) Ints(ns []int64) *Statement {
	for i, n := range ns {
		if i > 0 {
			st.text = append(st.text, ", "...)
		}
		st.text = strconv.AppendInt(st.text, n, 10)
	}
	return st
}

// Query returns the statement and the arguments of the values past the
// budget (none, usually).
func (st *Statement) Query() (string, []any) { return string(st.text), st.args }

// inline reports whether a value of n bytes still fits the budget, and
// counts it when it does.
func (st *Statement) inline(n int) bool {
	if st.inlined+n > InlineBudget {
		return false
	}
	st.inlined += n
	return true
}

// arg appends a value past the budget as an argument.
func (st *Statement) arg(v []byte) *Statement {
	st.text = append(st.text, '?')
	st.args = append(st.args, v)
	return st
}

const hexDigits = "0123456789abcdef"
