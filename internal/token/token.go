// Package token makes the random identifiers the library needs: claim
// owners, fencing tokens, client instance names. One helper, so every
// package draws them the same way.
package token

import (
	"crypto/rand"
	"encoding/hex"
)

// New returns a random 128-bit value as 32 lowercase hex digits.
func New() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never returns an error
	return hex.EncodeToString(b[:])
}
