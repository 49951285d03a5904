package tokenauth

import (
	"hash/crc32"
	"strings"
	"testing"
)

func TestNewTokenFormat(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 200; i++ {
		tok, err := newToken()
		if err != nil {
			t.Fatal(err)
		}
		if len(tok) != tokenLen || !strings.HasPrefix(tok, "tka_") {
			t.Fatalf("token %q: want tka_ and %d characters", tok, tokenLen)
		}
		if reason := checkTokenShape(tok); reason != "" {
			t.Fatalf("fresh token refused: %s", reason)
		}
		if seen[tok] {
			t.Fatal("duplicate token")
		}
		seen[tok] = true
		// any single-character change is caught by the checksum
		for _, pos := range []int{4, 20, tokenLen - 7, tokenLen - 1} {
			b := []byte(tok)
			if b[pos] == 'a' {
				b[pos] = 'b'
			} else {
				b[pos] = 'a'
			}
			if checkTokenShape(string(b)) == "" {
				t.Fatalf("token with character %d changed passes the checksum", pos)
			}
		}
	}
}

func TestCheckTokenShape(t *testing.T) {
	good, _ := newToken()
	for _, tc := range []struct {
		tok string
		ok  bool
	}{
		{good, true},
		{"my-secret-token-0001", true},            // legacy, 20 printable characters
		{strings.Repeat("x", legacyMaxLen), true}, // legacy at the limit
		{strings.Repeat("x", legacyMaxLen+1), false},
		{"short", false},
		{"fifteen-chars!!", false},
		{"has space in the middle", false},
		{"tab\tinside-the-token", false},
		{"nul\x00inside-the-token", false},
		{"non-ascii-tökén-value", false},
		{"tka_" + strings.Repeat("A", 49), false}, // right length, wrong checksum
		{good + "x", false},
		{good[:len(good)-1], false},
		{"tka_" + strings.Repeat("-", 49), false}, // not base62
	} {
		if got := checkTokenShape(tc.tok) == ""; got != tc.ok {
			t.Errorf("checkTokenShape(%q) ok=%v, want %v", tc.tok, got, tc.ok)
		}
	}
}

func TestDigestRoundTrip(t *testing.T) {
	d := digestOf("tka_example")
	back, err := parseDigest(d.String())
	if err != nil || back != d {
		t.Fatalf("parseDigest(String()) = %v, %v", back, err)
	}
	for _, bad := range []string{"", "abc", strings.Repeat("z", 64)} {
		if _, err := parseDigest(bad); err == nil {
			t.Errorf("parseDigest(%q) accepted", bad)
		}
	}
}

func TestNewPublicID(t *testing.T) {
	id, err := newPublicID()
	if err != nil {
		t.Fatal(err)
	}
	if len(id) != len("tok_")+12 || !strings.HasPrefix(id, "tok_") {
		t.Fatalf("id %q", id)
	}
}

func TestCRC32OfString(t *testing.T) {
	for _, s := range []string{"", "a", "tka_", strings.Repeat("xyz", 40)} {
		if got, want := crc32OfString(s), crc32.ChecksumIEEE([]byte(s)); got != want {
			t.Errorf("crc32OfString(%q) = %x, want %x", s, got, want)
		}
	}
}
