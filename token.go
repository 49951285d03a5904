package tokenauth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"math/big"
)

// The opaque token format (SPEC §2):
//
//	tka_ <43 base62 characters: 32 random bytes> <6 base62 characters: CRC32 of what precedes>
//
// The checksum lets a malformed or mistyped token be refused without a store
// read, and lets secret scanners recognise a leaked token with few false hits.
const (
	tokenPrefix      = "tka_"
	tokenBodyLen     = 43 // ceil(256 / log2(62))
	tokenChecksumLen = 6  // ceil(32 / log2(62))
	tokenLen         = len(tokenPrefix) + tokenBodyLen + tokenChecksumLen

	// Imported legacy tokens may be any printable string of this length.
	legacyMinLen = 16
	legacyMaxLen = 512
)

const base62Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// Digest is the SHA-256 digest of a token: the only form in which a token is stored.
type Digest [sha256.Size]byte

// String returns the digest in lower-case hex, as used in exports.
func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// digestOf hashes a token value. Tokens up to 1 KiB are copied on the stack,
// so the request path does not allocate for it.
func digestOf(token string) Digest {
	var buf [1024]byte
	if len(token) <= len(buf) {
		return sha256.Sum256(append(buf[:0], token...))
	}
	return sha256.Sum256([]byte(token))
}

// parseDigest reads a digest written by Digest.String.
func parseDigest(s string) (Digest, error) {
	var d Digest
	if len(s) != hex.EncodedLen(len(d)) {
		return d, fmt.Errorf("digest must be %d hex characters", hex.EncodedLen(len(d)))
	}
	if _, err := hex.Decode(d[:], []byte(s)); err != nil {
		return d, errors.New("digest is not hex")
	}
	return d, nil
}

// newToken returns a fresh random token in the tka_ format.
func newToken() (string, error) {
	var secret [32]byte
	if _, err := rand.Read(secret[:]); err != nil {
		return "", fmt.Errorf("reading random bytes: %w", err)
	}
	b := make([]byte, 0, tokenLen)
	b = append(b, tokenPrefix...)
	b = appendBase62(b, new(big.Int).SetBytes(secret[:]), tokenBodyLen)
	b = appendChecksum(b, crc32.ChecksumIEEE(b))
	return string(b), nil
}

// newPublicID returns a record ID such as tok_3fK9aZ0bQ1xY.
func newPublicID() (string, error) {
	var raw [9]byte // 72 bits, shown as 12 base62 characters
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("reading random bytes: %w", err)
	}
	return string(appendBase62([]byte("tok_"), new(big.Int).SetBytes(raw[:]), 12)), nil
}

// appendBase62 appends n as exactly width base62 digits (zero-padded, truncated to width).
func appendBase62(dst []byte, n *big.Int, width int) []byte {
	digits := make([]byte, width)
	base := big.NewInt(62)
	mod := new(big.Int)
	for i := width - 1; i >= 0; i-- {
		n.DivMod(n, base, mod)
		digits[i] = base62Alphabet[mod.Int64()]
	}
	return append(dst, digits...)
}

// appendChecksum appends the 6-character base62 form of a CRC32.
func appendChecksum(dst []byte, sum uint32) []byte {
	var digits [tokenChecksumLen]byte
	v := uint64(sum)
	for i := tokenChecksumLen - 1; i >= 0; i-- {
		digits[i] = base62Alphabet[v%62]
		v /= 62
	}
	return append(dst, digits[:]...)
}

// checkTokenShape reports why an opaque credential cannot be a token, or "" if
// it may be one. It reads no store and does not allocate. A value starting with
// tka_ must carry a valid checksum; anything else is a legacy token and must
// be 16–512 printable ASCII characters.
func checkTokenShape(tok string) string {
	if len(tok) >= len(tokenPrefix) && tok[:len(tokenPrefix)] == tokenPrefix {
		if len(tok) != tokenLen {
			return "malformed token"
		}
		for i := len(tokenPrefix); i < tokenLen; i++ {
			if !isBase62(tok[i]) {
				return "malformed token"
			}
		}
		var want [tokenChecksumLen]byte
		appendChecksum(want[:0], crc32OfString(tok[:tokenLen-tokenChecksumLen]))
		if string(want[:]) != tok[tokenLen-tokenChecksumLen:] {
			return "malformed token"
		}
		return ""
	}
	if len(tok) < legacyMinLen || len(tok) > legacyMaxLen {
		return "malformed token"
	}
	for i := 0; i < len(tok); i++ {
		if tok[i] <= ' ' || tok[i] > '~' {
			return "malformed token"
		}
	}
	return ""
}

// validLegacyToken reports whether a value may be imported or created as a
// caller-chosen token.
func validLegacyToken(tok string) error {
	if checkTokenShape(tok) != "" {
		return fmt.Errorf("token must be %d–%d printable ASCII characters without spaces (or a valid %s token)",
			legacyMinLen, legacyMaxLen, tokenPrefix)
	}
	return nil
}

// ieeeTable is the CRC-32 (IEEE) table.
var ieeeTable = crc32.MakeTable(crc32.IEEE)

// crc32OfString is crc32.ChecksumIEEE of a string without converting it to a
// byte slice (which would escape to the heap through the hash package).
func crc32OfString(s string) uint32 {
	crc := ^uint32(0)
	for i := 0; i < len(s); i++ {
		crc = ieeeTable[byte(crc)^s[i]] ^ (crc >> 8)
	}
	return ^crc
}

func isBase62(c byte) bool {
	return ('0' <= c && c <= '9') || ('A' <= c && c <= 'Z') || ('a' <= c && c <= 'z')
}
