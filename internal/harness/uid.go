package harness

import (
	"crypto/rand"
	"math/big"
)

// NewUID returns a fresh UUID-derived UID (PS3.5 B.2): "2.25." and a
// version 4 UUID as a decimal integer.
func NewUID() string {
	var b [16]byte
	rand.Read(b[:])         // never fails (crypto/rand)
	b[6] = b[6]&0x0F | 0x40 // version 4
	b[8] = b[8]&0x3F | 0x80 // RFC 4122 variant
	return "2.25." + new(big.Int).SetBytes(b[:]).String()
}
