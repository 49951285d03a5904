package tokenauth

import (
	"net/http"
	"testing"
)

func TestFindQueryCredentialAndRemoval(t *testing.T) {
	for _, tc := range []struct {
		raw, value, rest string
		found            bool
		errStatus        int
	}{
		{raw: "token=abc", value: "abc", rest: "", found: true},
		{raw: "a=1&token=abc&b=2", value: "abc", rest: "a=1&b=2", found: true},
		{raw: "a=1&token=abc", value: "abc", rest: "a=1", found: true},
		{raw: "token=a%2Bb&x", value: "a+b", rest: "x", found: true},
		{raw: "token=a+b", value: "a b", rest: "", found: true},
		{raw: "tok%65n=v&z=%zz", value: "v", rest: "z=%zz", found: true},
		{raw: "tokens=abc&xtoken=1", found: false},
		{raw: "token", value: "", rest: "", found: true},
		{raw: "token=1&token=2", errStatus: 400},
		{raw: "token=%zz", errStatus: 400},
	} {
		c, aerr := findQueryCredential(tc.raw, "token")
		if tc.errStatus != 0 {
			if aerr == nil || aerr.status != tc.errStatus {
				t.Errorf("%q: error %v, want status %d", tc.raw, aerr, tc.errStatus)
			}
			continue
		}
		if aerr != nil || (c.source != "") != tc.found {
			t.Errorf("%q: credential %v error %v, want found=%v", tc.raw, c, aerr, tc.found)
			continue
		}
		if c.source == "" {
			continue
		}
		if c.value != tc.value {
			t.Errorf("%q: value %q, want %q", tc.raw, c.value, tc.value)
		}
		if rest := removeQueryPair(tc.raw, c.queryStart, c.queryEnd); rest != tc.rest {
			t.Errorf("%q: rest %q, want %q", tc.raw, rest, tc.rest)
		}
	}
}

func TestLooksLikeJWT(t *testing.T) {
	for v, want := range map[string]bool{
		"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln": true,
		"eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.":      true, // alg none: routed to the JWT checks, refused there
		"a.b":                                       false,
		"a.b.c.d":                                   false,
		".b.c":                                      false,
		"a..c":                                      false,
		"a.b.c=":                                    false,
		"tka_abc":                                   false,
		"a b.c.d":                                   false,
		"my.legacy.token-with-dots.xyz":             false,
	} {
		if got := looksLikeJWT(v); got != want {
			t.Errorf("looksLikeJWT(%q) = %v, want %v", v, got, want)
		}
	}
}

func TestFindBearer(t *testing.T) {
	for _, tc := range []struct {
		vals  []string
		token string
		n     int
	}{
		{[]string{"Bearer abc"}, "abc", 1},
		{[]string{"bearer   abc"}, "abc", 1},
		{[]string{"Basic abc"}, "", 0},
		{[]string{"Bearerabc"}, "", 0},
		{[]string{"Bearer"}, "", 1},
		{[]string{"Basic x", "Bearer y"}, "y", 1},
		{[]string{"Bearer x", "Bearer y"}, "y", 2},
	} {
		tok, n := findBearer(tc.vals)
		if tok != tc.token || n != tc.n {
			t.Errorf("findBearer(%q) = %q, %d; want %q, %d", tc.vals, tok, n, tc.token, tc.n)
		}
	}
}

func TestCookieFindAndRemove(t *testing.T) {
	h := http.Header{"Cookie": {"a=1; api=tok; b=2", "c=3"}}
	v, n := findCookie(h["Cookie"], "api")
	if v != "tok" || n != 1 {
		t.Fatalf("findCookie = %q, %d", v, n)
	}
	removeCookie(h, "api")
	if got := h.Get("Cookie"); got != "a=1; b=2; c=3" {
		t.Fatalf("after removal: %q", got)
	}
	if _, n := findCookie([]string{"api=1; api=2"}, "api"); n != 2 {
		t.Fatalf("repeated cookie counted %d", n)
	}
}

func TestMakePrivate(t *testing.T) {
	for in, want := range map[string]string{
		"":                          "private",
		"no-store":                  "no-store",
		"public, max-age=60":        "private, max-age=60",
		"max-age=60, s-maxage=3600": "private, max-age=60",
		"private":                   "private",
		"no-cache, NO-STORE":        "no-cache, NO-STORE",
	} {
		h := http.Header{}
		if in != "" {
			h.Set("Cache-Control", in)
		}
		makePrivate(h)
		if got := h.Get("Cache-Control"); got != want {
			t.Errorf("makePrivate(%q) = %q, want %q", in, got, want)
		}
	}
}
