package tokenauth

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
)

// Benchmarks of RS256 JWTs whose key comes from a JWKS (a real key server on
// loopback), through ServeHTTP and through the verifier alone:
//
//	go test -run XXX -bench JWT -benchmem

// jkBenchHandler provisions a handler whose only key is an RSA JWK served by a
// key server, and waits until the key set is loaded.
func jkBenchHandler(b *testing.B) *TokenAuth {
	b.Helper()
	k := jkKeys()
	srv := newJKServer(b, "", jkJWK(b, k["rsa1"], "bench", "RS256"))
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	b.Cleanup(cancel)
	h := &TokenAuth{
		DB:  filepath.Join(b.TempDir(), "tokens.db"),
		JWT: &JWTConfig{JWKSURL: []string{srv.URL + "/jwks.json"}},
	}
	if err := h.Provision(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = h.Cleanup() })
	h.logger = zap.NewNop()
	if _, reason := jkCheck(h.verifier, jkSign(b, "RS256", k["rsa1"], "bench", "warm", nil)); reason != "" {
		b.Fatal(reason)
	}
	return h
}

// jkBenchTokens signs n distinct RS256 tokens.
func jkBenchTokens(b *testing.B, n int) []string {
	toks := make([]string, n)
	for i := range toks {
		toks[i] = jkSign(b, "RS256", jkKeys()["rsa1"], "bench", "bench", jwt.MapClaims{"jti": i})
	}
	return toks
}

// jkServeLoop runs ServeHTTP with the i-th Authorization value each time.
func jkServeLoop(b *testing.B, h *TokenAuth, auth func(i int) []string) {
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	w := httptest.NewRecorder()
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		req.Header["Authorization"] = auth(i)
		r := req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
		if err := h.ServeHTTP(w, r, next); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkJWTJWKSServeHTTPRS256Repeated: one token again and again, served
// from the verified-token cache after the first request.
func BenchmarkJWTJWKSServeHTTPRS256Repeated(b *testing.B) {
	h := jkBenchHandler(b)
	auth := []string{"Bearer " + jkBenchTokens(b, 1)[0]}
	jkServeLoop(b, h, func(int) []string { return auth })
}

// BenchmarkJWTJWKSServeHTTPRS256Distinct: a different token each time, so
// each is parsed and its RSA signature verified.
func BenchmarkJWTJWKSServeHTTPRS256Distinct(b *testing.B) {
	h := jkBenchHandler(b)
	toks := jkBenchTokens(b, 2048)
	auth := make([][]string, len(toks))
	for i, t := range toks {
		auth[i] = []string{"Bearer " + t}
	}
	h.verifier.cache = newVerifiedCache(1) // every token is new to it
	jkServeLoop(b, h, func(i int) []string { return auth[i%len(auth)] })
}

// BenchmarkJWTVerifyRS256Cached is jwtVerifier.verify on a repeated token.
func BenchmarkJWTVerifyRS256Cached(b *testing.B) {
	v := jkBenchHandler(b).verifier
	tok := jkBenchTokens(b, 1)[0]
	d := digestOf(tok)
	b.ReportAllocs()
	for b.Loop() {
		if _, reason := v.verify(tok, d, time.Now()); reason != "" {
			b.Fatal(reason)
		}
	}
}

// BenchmarkJWTVerifyRS256Uncached is jwtVerifier.verify on distinct tokens.
func BenchmarkJWTVerifyRS256Uncached(b *testing.B) {
	v := jkBenchHandler(b).verifier
	v.cache = newVerifiedCache(1)
	toks := jkBenchTokens(b, 2048)
	digests := make([]Digest, len(toks))
	for i, t := range toks {
		digests[i] = digestOf(t)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		j := i % len(toks)
		if _, reason := v.verify(toks[j], digests[j], time.Now()); reason != "" {
			b.Fatal(reason)
		}
	}
}
