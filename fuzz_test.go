package tokenauth

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// Fuzz tests for every parser of untrusted input. Their seeds run with the
// ordinary tests; run one for longer with, e.g.:
//
//	go test -run XXX -fuzz FuzzCredentialExtraction -fuzztime 5m

// FuzzTokenShape: the format check never panics, and accepts only what the
// format allows.
func FuzzTokenShape(f *testing.F) {
	good, _ := newToken()
	for _, s := range []string{good, "tka_", "my-secret-token-0001", "", "\x00", strings.Repeat("a", 600), good[:40]} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if checkTokenShape(s) != "" {
			return
		}
		if strings.HasPrefix(s, tokenPrefix) {
			if len(s) != tokenLen {
				t.Fatalf("accepted tka_ token of length %d", len(s))
			}
			return
		}
		if len(s) < legacyMinLen || len(s) > legacyMaxLen {
			t.Fatalf("accepted legacy token of length %d", len(s))
		}
		for i := 0; i < len(s); i++ {
			if s[i] <= ' ' || s[i] > '~' {
				t.Fatalf("accepted byte %#x", s[i])
			}
		}
	})
}

// FuzzQueryCredential: finding and removing the query credential never
// panics, and removal leaves every other parameter byte for byte.
func FuzzQueryCredential(f *testing.F) {
	for _, s := range []string{"token=abc", "a=1&token=x&b=2", "token=1&token=2", "%74oken=v", "&&token=&", "token=%zz", "=&="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		c, aerr := findQueryCredential(raw, "token")
		if aerr != nil || c.source == "" {
			return
		}
		rest := removeQueryPair(raw, c.queryStart, c.queryEnd)
		var want []string
		for _, pair := range strings.Split(raw, "&") {
			k, _, _ := strings.Cut(pair, "=")
			if !queryKeyIs(k, "token") {
				want = append(want, pair)
			}
		}
		if got := strings.Join(want, "&"); rest != got && !(rest == "" && got == "") {
			t.Fatalf("removing from %q left %q, want %q", raw, rest, got)
		}
	})
}

// FuzzCredentialExtraction drives ServeHTTP with arbitrary query, header,
// cookie and Authorization values: never a panic, never a pass, never a
// status outside 400/401.
func FuzzCredentialExtraction(f *testing.F) {
	hs := "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"
	f.Add("token=abc", "", "", "Bearer "+hs)
	f.Add("", "k", "sid=v; sid=w", "")
	f.Add("token=tka_"+strings.Repeat("A", 49), "", "", "Basic x")
	f.Add("", "", "", "Bearer "+hs+"."+hs)
	f.Fuzz(func(t *testing.T, rawQuery, apiKey, cookie, authorization string) {
		h := fuzzHandler(t)
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.URL.RawQuery = rawQuery
		if apiKey != "" {
			req.Header.Set("X-API-Key", apiKey)
		}
		if cookie != "" {
			req.Header.Set("Cookie", cookie)
		}
		if authorization != "" {
			req.Header.Set("Authorization", authorization)
		}
		repl := caddy.NewReplacer()
		req = req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, repl))
		passed := false
		err := h.ServeHTTP(httptest.NewRecorder(), req, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
			passed = true
			return nil
		}))
		if passed {
			t.Fatalf("passed with query %q key %q cookie %q authorization %q", rawQuery, apiKey, cookie, authorization)
		}
		var herr caddyhttp.HandlerError
		if !errors.As(err, &herr) || (herr.StatusCode != 400 && herr.StatusCode != 401) {
			t.Fatalf("error %v, want a 400 or 401 handler error", err)
		}
	})
}

// FuzzJWTVerify: arbitrary compact tokens never panic and never verify.
func FuzzJWTVerify(f *testing.F) {
	f.Add("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln")
	f.Add("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4IiwiZXhwIjo5OTk5OTk5OTk5fQ.")
	f.Add(b64(`{"alg":"HS256","crit":["x"]}`) + "." + b64(`{"exp":1e400}`) + ".AAAA")
	f.Fuzz(func(t *testing.T, raw string) {
		v := fuzzHandler(t).verifier
		if id, reason := v.verify(raw, digestOf(raw), time.Now()); id != nil || reason == "" {
			t.Fatalf("unsigned input %q verified", raw)
		}
	})
}

// FuzzCaddyfile: the parser never panics on arbitrary token_auth blocks.
func FuzzCaddyfile(f *testing.F) {
	f.Add("token_auth {\n\tdb x\n\tquery off\n\trequire_scope a b\n}")
	f.Add("token_auth {\n\tjwt {\n\t\tsecret 0123456789abcdef0123456789abcdef\n\t\tleeway 5s\n\t}\n}")
	f.Add("token_auth {\n\tstore bolt /x\n\trealm \"a b\"\n}")
	f.Add("token_auth {\n\tjwt {\n\t\talgorithms none\n\t}\n}")
	f.Fuzz(func(t *testing.T, input string) {
		var ta TokenAuth
		_ = ta.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))
	})
}

var (
	fuzzOnce    sync.Once
	fuzzShared  *TokenAuth
	fuzzInitErr error
)

// fuzzHandler is a provisioned handler shared by the fuzz targets: an empty
// bbolt store, a header and a cookie source, and an HMAC-keyed jwt block.
func fuzzHandler(t *testing.T) *TokenAuth {
	fuzzOnce.Do(func() {
		dir, err := os.MkdirTemp("", "token-auth-fuzz-")
		if err != nil {
			fuzzInitErr = err
			return
		}
		h := &TokenAuth{DB: filepath.Join(dir, "tokens.db"), Header: "X-API-Key", Cookie: "sid", JWT: &JWTConfig{Secret: testSecret}}
		ctx, _ := caddy.NewContext(caddy.Context{Context: context.Background()})
		if fuzzInitErr = h.Provision(ctx); fuzzInitErr == nil {
			h.logger = zap.NewNop()
			fuzzShared = h
		}
	})
	if fuzzInitErr != nil {
		t.Fatal(fuzzInitErr)
	}
	return fuzzShared
}
