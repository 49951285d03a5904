package tokenauth

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// Benchmarks of ServeHTTP on each request path. Each iteration builds what
// Caddy builds per request (a replacer in the context), so compare with
// BenchmarkServeHTTPBaseline, which does that and nothing else.
//
//	go test -run XXX -bench ServeHTTP -benchmem

// provisionForBench provisions a handler with a fresh bbolt file.
func provisionForBench(b *testing.B, h *TokenAuth) *TokenAuth {
	b.Helper()
	h.DB = filepath.Join(b.TempDir(), "tokens.db")
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	b.Cleanup(cancel)
	if err := h.Provision(ctx); err != nil {
		b.Fatal(err)
	}
	h.logger = zap.NewNop()
	b.Cleanup(func() { _ = h.Cleanup() })
	return h
}

var okNext = caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error { return nil })

// serveLoop runs ServeHTTP b.N times on a request rebuilt by reset.
func serveLoop(b *testing.B, h caddyhttp.MiddlewareHandler, req *http.Request, reset func(*http.Request)) {
	b.Helper()
	w := httptest.NewRecorder()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		reset(req)
		r := req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
		if err := h.ServeHTTP(w, r, okNext); err != nil {
			b.Fatal(err)
		}
	}
}

type passThrough struct{}

func (passThrough) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	return next.ServeHTTP(w, r)
}

func BenchmarkServeHTTPBaseline(b *testing.B) {
	req := httptest.NewRequest(http.MethodGet, "/restaurants?a=1", nil)
	serveLoop(b, passThrough{}, req, func(*http.Request) {})
}

func BenchmarkServeHTTPOpaqueQuery(b *testing.B) {
	h := provisionForBench(b, &TokenAuth{})
	_, tok, err := createToken(context.Background(), h.store, CreateRequest{User: "bench", Scopes: []string{"read"}}, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	query := "a=1&token=" + tok
	req := httptest.NewRequest(http.MethodGet, "/restaurants?"+query, nil)
	serveLoop(b, h, req, func(r *http.Request) { r.URL.RawQuery = query })
}

func BenchmarkServeHTTPOpaqueBearer(b *testing.B) {
	h := provisionForBench(b, &TokenAuth{})
	_, tok, err := createToken(context.Background(), h.store, CreateRequest{User: "bench"}, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	benchBearer(b, h, tok)
}

func benchBearer(b *testing.B, h *TokenAuth, tok string) {
	req := httptest.NewRequest(http.MethodGet, "/restaurants", nil)
	auth := []string{"Bearer " + tok}
	serveLoop(b, h, req, func(r *http.Request) { r.Header["Authorization"] = auth })
}

func BenchmarkServeHTTPJWTHS256(b *testing.B) {
	h := provisionForBench(b, &TokenAuth{JWT: &JWTConfig{Secret: testSecret}})
	benchBearer(b, h, signJWT(b, "HS256", []byte(testSecret), validClaims("bench"), nil))
}

func BenchmarkServeHTTPJWTRS256Repeated(b *testing.B) {
	keys := keysForTest(b)
	h := provisionForBench(b, &TokenAuth{JWT: &JWTConfig{PublicKey: []string{keys[familyRSA].pemPath}}})
	benchBearer(b, h, signJWT(b, "RS256", keys[familyRSA].private, validClaims("bench"), nil))
}

// BenchmarkServeHTTPJWTRS256Distinct verifies a different token every
// request: the cost of a signature check, with no help from the cache.
func BenchmarkServeHTTPJWTRS256Distinct(b *testing.B) {
	keys := keysForTest(b)
	h := provisionForBench(b, &TokenAuth{JWT: &JWTConfig{PublicKey: []string{keys[familyRSA].pemPath}}})
	const n = 4096
	auth := make([][]string, n)
	for i := range auth {
		c := validClaims("bench")
		c["jti"] = fmt.Sprint(i)
		auth[i] = []string{"Bearer " + signJWT(b, "RS256", keys[familyRSA].private, c, nil)}
	}
	h.verifier.cache = newVerifiedCache(1) // every token is new to it
	req := httptest.NewRequest(http.MethodGet, "/restaurants", nil)
	i := 0
	serveLoop(b, h, req, func(r *http.Request) {
		r.Header["Authorization"] = auth[i%n]
		i++
	})
}

func BenchmarkServeHTTPRefusedUnknownToken(b *testing.B) {
	h := provisionForBench(b, &TokenAuth{})
	tok, _ := newToken()
	req := httptest.NewRequest(http.MethodGet, "/restaurants", nil)
	w := httptest.NewRecorder()
	auth := []string{"Bearer " + tok}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req.Header["Authorization"] = auth
		r := req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
		if err := h.ServeHTTP(w, r, okNext); err == nil {
			b.Fatal("unknown token passed")
		}
	}
}
