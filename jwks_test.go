package tokenauth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
)

// ---- test key material and JWKs (built by hand, not by the library under test)

// jkKeys holds one private key per family, generated once per test binary.
var jkKeys = sync.OnceValue(func() map[string]crypto.Signer {
	rsa1, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsa2, _ := rsa.GenerateKey(rand.Reader, 2048)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	return map[string]crypto.Signer{"rsa1": rsa1, "rsa2": rsa2, "p256": p256, "p384": p384, "ed": ed}
})

func jkB64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// jkJWK is the public JWK of key with kid and alg ("" leaves them out).
func jkJWK(t testing.TB, key crypto.Signer, kid, alg string) map[string]any {
	t.Helper()
	m := map[string]any{}
	switch pub := key.Public().(type) {
	case *rsa.PublicKey:
		m["kty"] = "RSA"
		m["n"] = jkB64(pub.N.Bytes())
		m["e"] = jkB64(big.NewInt(int64(pub.E)).Bytes())
	case *ecdsa.PublicKey:
		size := (pub.Curve.Params().BitSize + 7) / 8
		m["kty"] = "EC"
		m["crv"] = pub.Curve.Params().Name
		m["x"] = jkB64(pub.X.FillBytes(make([]byte, size)))
		m["y"] = jkB64(pub.Y.FillBytes(make([]byte, size)))
	case ed25519.PublicKey:
		m["kty"] = "OKP"
		m["crv"] = "Ed25519"
		m["x"] = jkB64(pub)
	default:
		t.Fatalf("no JWK for %T", pub)
	}
	if kid != "" {
		m["kid"] = kid
	}
	if alg != "" {
		m["alg"] = alg
	}
	return m
}

// jkSign signs a token for user with alg, key and kid ("" for none), valid for an hour.
func jkSign(t testing.TB, alg string, key any, kid, user string, extra jwt.MapClaims) string {
	t.Helper()
	now := time.Now()
	claims := jwt.MapClaims{"sub": user, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	for k, v := range extra {
		claims[k] = v
	}
	tok := jwt.NewWithClaims(jwt.GetSigningMethod(alg), claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("sign %s: %v", alg, err)
	}
	return s
}

func jkRandomKid() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// ---- a real key server on loopback

// jkServer serves a JWKS at /jwks.json (and /keys) and an OIDC discovery
// document, and counts the fetches.
type jkServer struct {
	*httptest.Server
	mu           sync.Mutex
	keys         []map[string]any
	issuer       string // in the discovery document; "" means the server's URL
	cacheControl string
	body         []byte // when set, served instead of the key set

	jwksHits      atomic.Int64
	discoveryHits atomic.Int64
}

func (s *jkServer) setKeys(keys ...map[string]any) {
	s.mu.Lock()
	s.keys = keys
	s.mu.Unlock()
}

func (s *jkServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch r.URL.Path {
	case "/jwks.json", "/keys":
		s.jwksHits.Add(1)
		if s.cacheControl != "" {
			w.Header().Set("Cache-Control", s.cacheControl)
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		if s.body != nil {
			w.Write(s.body)
			return
		}
		keys := s.keys
		if keys == nil {
			keys = []map[string]any{}
		}
		json.NewEncoder(w).Encode(map[string]any{"keys": keys})
	case "/.well-known/openid-configuration":
		s.discoveryHits.Add(1)
		base := "http://" + r.Host
		iss := s.issuer
		if iss == "" {
			iss = base
		}
		json.NewEncoder(w).Encode(map[string]any{"issuer": iss, "jwks_uri": base + "/keys"})
	default:
		http.NotFound(w, r)
	}
}

// newJKServer starts a key server on loopback; addr "" picks a free port.
func newJKServer(t testing.TB, addr string, keys ...map[string]any) *jkServer {
	t.Helper()
	s := &jkServer{keys: keys}
	s.Server = httptest.NewUnstartedServer(s)
	if addr != "" {
		var l net.Listener
		var err error
		for range 50 { // the port was just released; retry briefly
			if l, err = net.Listen("tcp", addr); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("listen %s: %v", addr, err)
		}
		s.Listener.Close()
		s.Listener = l
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// jkFreeAddr returns a loopback address where nothing listens.
func jkFreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// jkVerifier builds a verifier with only remote keys, as Provision does. Its
// background work stops at the end of the test. every > 0 overrides the
// least time between request-triggered fetches.
func jkVerifier(t testing.TB, cfg *JWTConfig, every time.Duration) (*jwtVerifier, []*remoteKeySet) {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	srcs, err := cfg.remoteKeySources(ctx, nil)
	if err != nil {
		t.Fatalf("remoteKeySources: %v", err)
	}
	var sets []*remoteKeySet
	for _, src := range srcs {
		s := src.(*remoteKeySet)
		if every > 0 {
			s.every = every
		}
		sets = append(sets, s)
	}
	algs, err := cfg.resolveAlgorithms(nil, len(srcs) > 0)
	if err != nil {
		t.Fatalf("resolveAlgorithms: %v", err)
	}
	return newJWTVerifier(cfg, append([]keySource{staticKeys(nil)}, srcs...), algs), sets
}

// jkCheck verifies tok and returns the user, or the reason for refusal.
func jkCheck(v *jwtVerifier, tok string) (user, reason string) {
	id, reason := v.verify(tok, digestOf(tok), time.Now())
	if id != nil {
		return id.user, ""
	}
	return "", reason
}

// ---- tests

func TestJWKSKeyTypes(t *testing.T) {
	k := jkKeys()
	srv := newJKServer(t, "",
		jkJWK(t, k["rsa1"], "rsa-noalg", ""), // no alg: serves RS* and PS*
		jkJWK(t, k["rsa2"], "rsa-rs256", "RS256"),
		jkJWK(t, k["p256"], "ec256", "ES256"),
		jkJWK(t, k["p384"], "ec384", ""),
		jkJWK(t, k["ed"], "ed", "EdDSA"),
	)
	v, _ := jkVerifier(t, &JWTConfig{JWKSURL: []string{srv.URL + "/jwks.json"}}, 0)

	tests := []struct {
		name, alg, keyName, kid string
		wantReason              string
	}{
		{"RS256 key without alg", "RS256", "rsa1", "rsa-noalg", ""},
		{"PS384 key without alg", "PS384", "rsa1", "rsa-noalg", ""},
		{"RS512 key without alg", "RS512", "rsa1", "rsa-noalg", ""},
		{"RS256 key with alg", "RS256", "rsa2", "rsa-rs256", ""},
		{"PS256 refused by an RS256 key", "PS256", "rsa2", "rsa-rs256", "no key for this token"},
		{"ES256 P-256", "ES256", "p256", "ec256", ""},
		{"ES384 P-384 without alg", "ES384", "p384", "ec384", ""},
		{"ES384 token naming the P-256 kid", "ES384", "p384", "ec256", "no key for this token"},
		{"EdDSA", "EdDSA", "ed", "ed", ""},
		{"Ed25519 (RFC 9864 name) with an EdDSA key", "Ed25519", "ed", "ed", ""},
		{"RSA token naming an EC kid", "RS256", "rsa1", "ec256", "no key for this token"},
		{"no kid tries every RSA key", "RS256", "rsa2", "", ""},
		{"no kid, other RSA key", "PS512", "rsa1", "", ""},
		{"no kid, EC", "ES256", "p256", "", ""},
		{"signed by a key not in the set's kid", "RS256", "rsa1", "rsa-rs256", "bad signature"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := jkSign(t, tt.alg, k[tt.keyName], tt.kid, "alice", nil)
			user, reason := jkCheck(v, tok)
			if reason != tt.wantReason {
				t.Fatalf("reason = %q, want %q", reason, tt.wantReason)
			}
			if tt.wantReason == "" && user != "alice" {
				t.Fatalf("user = %q", user)
			}
		})
	}
}

func TestJWKSRemoteHMACKeyNeverUsed(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef-remote")
	k := jkKeys()
	srv := newJKServer(t, "",
		map[string]any{"kty": "oct", "kid": "hmac", "alg": "HS256", "k": jkB64(secret)},
		jkJWK(t, k["rsa1"], "rsa", "RS256"),
	)
	tok := jkSign(t, "HS256", secret, "hmac", "mallory", nil)
	noKid := jkSign(t, "HS256", secret, "", "mallory", nil)

	// Default allow-list: every asymmetric algorithm, never HMAC.
	v, _ := jkVerifier(t, &JWTConfig{JWKSURL: []string{srv.URL + "/jwks.json"}}, 0)
	for _, tok := range []string{tok, noKid} {
		if _, reason := jkCheck(v, tok); reason != "algorithm not allowed" {
			t.Fatalf("HS256 with the remote oct key: reason %q, want algorithm not allowed", reason)
		}
	}
	if user, reason := jkCheck(v, jkSign(t, "RS256", k["rsa1"], "rsa", "bob", nil)); user != "bob" {
		t.Fatalf("RSA key of the same set: %q", reason)
	}

	// An explicit HS256 with only remote keys is a configuration error.
	cfg := &JWTConfig{JWKSURL: []string{srv.URL + "/jwks.json"}, Algorithms: []string{"HS256", "RS256"}}
	if _, err := cfg.resolveAlgorithms(nil, true); err == nil {
		t.Fatal("algorithms HS256 accepted with only a remote key set")
	}

	// Even if the allow-list lets HS256 through (a secret configured too),
	// the remote oct key does not verify anything.
	static := staticKeys{{family: familyHMAC, key: []byte("another-secret-of-at-least-32-bytes!!"), source: "secret"}}
	cfg.Secret = "x" // only marks the config as having a key
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	srcs, err := cfg.remoteKeySources(ctx, static)
	if err != nil {
		t.Fatal(err)
	}
	v = newJWTVerifier(cfg, append([]keySource{static}, srcs...), []string{"HS256", "RS256"})
	for _, tok := range []string{tok, noKid} {
		if _, reason := jkCheck(v, tok); reason != "bad signature" && reason != "no key for this token" {
			t.Fatalf("HS256 signed with the remote oct key: reason %q", reason)
		}
	}

	keys, skipped, err := parseJWKS([]byte(`{"keys":[{"kty":"oct","k":"` + jkB64(secret) + `"}]}`))
	if err != nil || len(keys) != 0 || len(skipped) != 1 {
		t.Fatalf("oct key: keys %d, skipped %v, err %v", len(keys), skipped, err)
	}
}

func TestParseJWKS(t *testing.T) {
	k := jkKeys()
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	_, x25519, _ := ed25519.GenerateKey(rand.Reader)
	with := func(m map[string]any, kv ...any) map[string]any {
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	x25519JWK := with(jkJWK(t, x25519, "x", ""), "crv", "X25519")
	tests := []struct {
		name    string
		keys    []map[string]any
		want    int
		wantErr bool
	}{
		{"usable", []map[string]any{jkJWK(t, k["rsa1"], "a", ""), jkJWK(t, k["p256"], "b", "ES256")}, 2, false},
		{"use enc", []map[string]any{with(jkJWK(t, k["rsa1"], "a", ""), "use", "enc")}, 0, false},
		{"use sig", []map[string]any{with(jkJWK(t, k["rsa1"], "a", ""), "use", "sig")}, 1, false},
		{"key_ops without verify", []map[string]any{with(jkJWK(t, k["rsa1"], "a", ""), "key_ops", []string{"encrypt"})}, 0, false},
		{"key_ops verify", []map[string]any{with(jkJWK(t, k["rsa1"], "a", ""), "key_ops", []string{"verify"})}, 1, false},
		{"RSA 1024 bits", []map[string]any{jkJWK(t, small, "a", "")}, 0, false},
		{"alg of another family", []map[string]any{jkJWK(t, k["rsa1"], "a", "ES256")}, 0, false},
		{"P-256 claiming ES384", []map[string]any{jkJWK(t, k["p256"], "a", "ES384")}, 0, false},
		{"HMAC alg on an RSA key", []map[string]any{jkJWK(t, k["rsa1"], "a", "HS256")}, 0, false},
		{"unknown alg", []map[string]any{jkJWK(t, k["rsa1"], "a", "RSA-OAEP")}, 0, false},
		{"X25519", []map[string]any{x25519JWK}, 0, false},
		{"unknown kty", []map[string]any{{"kty": "XYZ"}}, 0, false},
		{"oct", []map[string]any{{"kty": "oct", "k": "c2VjcmV0"}}, 0, false},
		{"empty set", []map[string]any{}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, _ := json.Marshal(map[string]any{"keys": tt.keys})
			keys, _, err := parseJWKS(body)
			if (err != nil) != tt.wantErr || len(keys) != tt.want {
				t.Fatalf("keys %d, err %v; want %d keys", len(keys), err, tt.want)
			}
			if err == nil && keys == nil {
				t.Fatal("a parsed set must be non-nil (loaded)")
			}
		})
	}
	for _, bad := range []string{``, `[]`, `{}`, `{"keys":{}}`, `{"keys":[}`, `<html>`} {
		if _, _, err := parseJWKS([]byte(bad)); err == nil {
			t.Errorf("parseJWKS(%q) accepted", bad)
		}
	}
}

func TestRefreshInterval(t *testing.T) {
	tests := []struct {
		cc, age string
		want    time.Duration
	}{
		{"", "", time.Hour},
		{"max-age=300", "", 5 * time.Minute},
		{"public, max-age=7200, must-revalidate", "", 2 * time.Hour},
		{"max-age=300", "100", 200 * time.Second},
		{"max-age=10", "", time.Minute},
		{"max-age=0", "", time.Minute},
		{"max-age=9999999999", "", 24 * time.Hour},
		{"max-age=999999999999999999999", "", time.Hour}, // unparsable: default
		{`max-age="600"`, "", 10 * time.Minute},
		{"no-cache", "", time.Minute},
		{"no-store, max-age=3600", "", time.Minute},
		{"MAX-AGE=120", "", 2 * time.Minute},
		{"max-age=abc", "", time.Hour},
		{"max-age=300", "1000", time.Minute},
	}
	for _, tt := range tests {
		h := http.Header{}
		if tt.cc != "" {
			h.Set("Cache-Control", tt.cc)
		}
		if tt.age != "" {
			h.Set("Age", tt.age)
		}
		if got := refreshInterval(h); got != tt.want {
			t.Errorf("Cache-Control %q, Age %q: %v, want %v", tt.cc, tt.age, got, tt.want)
		}
	}
}

func TestJWKSRotation(t *testing.T) {
	k := jkKeys()
	srv := newJKServer(t, "", jkJWK(t, k["rsa1"], "old", "RS256"))
	v, _ := jkVerifier(t, &JWTConfig{JWKSURL: []string{srv.URL + "/jwks.json"}}, 300*time.Millisecond)

	oldTok := jkSign(t, "RS256", k["rsa1"], "old", "alice", nil)
	if _, reason := jkCheck(v, oldTok); reason != "" {
		t.Fatalf("old key: %s", reason)
	}
	newTok := jkSign(t, "ES256", k["p256"], "new", "bob", nil)
	if _, reason := jkCheck(v, newTok); reason != "no key for this token" {
		t.Fatalf("new kid before rotation: %q", reason)
	}

	// The identity provider rotates: the new key appears, the old one goes.
	srv.setKeys(jkJWK(t, k["p256"], "new", "ES256"))
	time.Sleep(400 * time.Millisecond) // past the refetch rate limit
	before := srv.jwksHits.Load()
	// The first request with the new kid fetches the set and is accepted.
	newTok2 := jkSign(t, "ES256", k["p256"], "new", "bob", jwt.MapClaims{"n": 2})
	if user, reason := jkCheck(v, newTok2); user != "bob" {
		t.Fatalf("new kid after rotation: %q", reason)
	}
	if got := srv.jwksHits.Load() - before; got != 1 {
		t.Fatalf("%d fetches for the new kid, want 1", got)
	}
	// The old key is gone from the refreshed set (a token not in the cache).
	oldTok2 := jkSign(t, "RS256", k["rsa1"], "old", "alice", jwt.MapClaims{"n": 2})
	if _, reason := jkCheck(v, oldTok2); reason != "no key for this token" {
		t.Fatalf("old kid after rotation: %q", reason)
	}
}

func TestJWKSUnknownKidFlood(t *testing.T) {
	k := jkKeys()
	srv := newJKServer(t, "", jkJWK(t, k["rsa1"], "good", "RS256"))
	v, _ := jkVerifier(t, &JWTConfig{JWKSURL: []string{srv.URL + "/jwks.json"}}, 0) // the real 5 s limit
	good := jkSign(t, "RS256", k["rsa1"], "good", "alice", nil)
	if _, reason := jkCheck(v, good); reason != "" {
		t.Fatalf("good token: %s", reason)
	}
	time.Sleep(jwksRefetchEvery + 100*time.Millisecond) // so the flood may trigger one fetch

	// Forged kids, each a distinct token, from many clients at once.
	forged := make([]string, 1000)
	for i := range forged {
		forged[i] = jkSign(t, "RS256", k["rsa2"], jkRandomKid(), "mallory", nil)
	}
	start := time.Now()
	var wg sync.WaitGroup
	var accepted atomic.Int64
	for w := range 50 {
		wg.Go(func() {
			for i := w; i < len(forged); i += 50 {
				if _, reason := jkCheck(v, forged[i]); reason == "" {
					accepted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	hits := srv.jwksHits.Load()
	t.Logf("1000 forged kids: %d fetches in all, %v", hits, elapsed)
	if accepted.Load() != 0 {
		t.Fatalf("%d forged tokens accepted", accepted.Load())
	}
	if hits < 2 || hits > 3 { // the first load, and one (at most two) for the flood
		t.Fatalf("%d fetches, want 2 or 3", hits)
	}
	if elapsed > 3*time.Second {
		t.Fatalf("the flood took %v: requests must not queue behind the rate limit", elapsed)
	}
	if _, reason := jkCheck(v, good); reason != "" {
		t.Fatalf("good token after the flood: %s", reason)
	}
}

func TestJWKSServerDownAtStart(t *testing.T) {
	k := jkKeys()
	addr := jkFreeAddr(t)
	v, sets := jkVerifier(t, &JWTConfig{JWKSURL: []string{"http://" + addr + "/jwks.json"}}, 200*time.Millisecond)
	tok := jkSign(t, "ES384", k["p384"], "k1", "carol", nil)
	if _, reason := jkCheck(v, tok); reason != "signing keys not available yet" {
		t.Fatalf("key server down: reason %q", reason)
	}
	if sets[0].keys.Load() != nil {
		t.Fatal("keys loaded from nowhere")
	}

	srv := newJKServer(t, addr, jkJWK(t, k["p384"], "k1", ""))
	deadline := time.Now().Add(10 * time.Second)
	for {
		user, reason := jkCheck(v, tok)
		if user == "carol" {
			break
		}
		if reason != "signing keys not available yet" {
			t.Fatalf("while recovering: reason %q", reason)
		}
		if time.Now().After(deadline) {
			t.Fatal("never recovered after the key server came up")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if srv.jwksHits.Load() == 0 {
		t.Fatal("recovered without a fetch")
	}
}

func TestJWKSServerErrorsAndLimits(t *testing.T) {
	k := jkKeys()
	tok := jkSign(t, "RS256", k["rsa1"], "a", "dave", nil)
	tests := []struct {
		name string
		body []byte
	}{
		{"over 1 MiB", []byte(`{"keys":[],"pad":"` + strings.Repeat("x", jwksMaxBytes) + `"}`)},
		{"not JSON", []byte("<html>oops</html>")},
		{"no keys member", []byte(`{"kid":"a"}`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newJKServer(t, "", jkJWK(t, k["rsa1"], "a", ""))
			srv.body = tt.body
			v, sets := jkVerifier(t, &JWTConfig{JWKSURL: []string{srv.URL + "/jwks.json"}}, 0)
			if _, reason := jkCheck(v, tok); reason != "signing keys not available yet" {
				t.Fatalf("reason %q", reason)
			}
			if sets[0].keys.Load() != nil {
				t.Fatal("a bad document was loaded")
			}
		})
	}

	// A bad document after a good one keeps the good keys.
	srv := newJKServer(t, "", jkJWK(t, k["rsa1"], "a", ""))
	v, sets := jkVerifier(t, &JWTConfig{JWKSURL: []string{srv.URL + "/jwks.json"}}, 0)
	if _, reason := jkCheck(v, tok); reason != "" {
		t.Fatal(reason)
	}
	srv.mu.Lock()
	srv.body = []byte("garbage")
	srv.mu.Unlock()
	if _, err := sets[0].fetchNow(context.Background()); err == nil {
		t.Fatal("garbage accepted")
	}
	if _, reason := jkCheck(v, jkSign(t, "RS256", k["rsa1"], "a", "dave", jwt.MapClaims{"n": 1})); reason != "" {
		t.Fatalf("good keys lost after a failed refresh: %s", reason)
	}
}

func TestJWKSCacheControlHonoured(t *testing.T) {
	k := jkKeys()
	srv := newJKServer(t, "", jkJWK(t, k["rsa1"], "a", ""))
	srv.cacheControl = "public, max-age=90"
	set := newRemoteKeySet(srv.URL+"/jwks.json", "", zap.NewNop())
	next, err := set.fetchNow(context.Background())
	if err != nil || next != 90*time.Second {
		t.Fatalf("next refresh %v, err %v; want 1m30s", next, err)
	}
	srv.cacheControl = "max-age=5"
	if next, _ := set.fetchNow(context.Background()); next != time.Minute {
		t.Fatalf("max-age=5: next refresh %v, want the 1m minimum", next)
	}
}

func TestOIDCDiscovery(t *testing.T) {
	k := jkKeys()
	srv := newJKServer(t, "", jkJWK(t, k["ed"], "ed1", ""))
	v, _ := jkVerifier(t, &JWTConfig{Issuer: []string{srv.URL}}, 0)
	tok := jkSign(t, "EdDSA", k["ed"], "ed1", "erin", jwt.MapClaims{"iss": srv.URL})
	if user, reason := jkCheck(v, tok); user != "erin" {
		t.Fatalf("discovered keys: %q", reason)
	}
	if srv.discoveryHits.Load() != 1 || srv.jwksHits.Load() != 1 {
		t.Fatalf("discovery %d, jwks %d fetches; want 1 and 1", srv.discoveryHits.Load(), srv.jwksHits.Load())
	}
	other := jkSign(t, "EdDSA", k["ed"], "ed1", "erin", jwt.MapClaims{"iss": "https://elsewhere.example"})
	if _, reason := jkCheck(v, other); reason != "wrong issuer" {
		t.Fatalf("other issuer: %q", reason)
	}
}

func TestOIDCDiscoveryIssuerMismatch(t *testing.T) {
	k := jkKeys()
	srv := newJKServer(t, "", jkJWK(t, k["ed"], "ed1", ""))
	srv.issuer = "https://evil.example"
	v, sets := jkVerifier(t, &JWTConfig{Issuer: []string{srv.URL}}, 0)
	tok := jkSign(t, "EdDSA", k["ed"], "ed1", "erin", jwt.MapClaims{"iss": srv.URL})
	if _, reason := jkCheck(v, tok); reason != "signing keys not available yet" {
		t.Fatalf("issuer mismatch: reason %q", reason)
	}
	if sets[0].keys.Load() != nil {
		t.Fatal("keys loaded despite the issuer mismatch")
	}
	set := newRemoteKeySet("", srv.URL, zap.NewNop())
	if _, err := set.fetchNow(context.Background()); err == nil || !strings.Contains(err.Error(), "evil.example") {
		t.Fatalf("fetch error %v, want the issuer mismatch", err)
	}
	if srv.jwksHits.Load() != 0 {
		t.Fatal("the key set of a mismatched discovery document was fetched")
	}
}

func TestRemoteKeySourcesConfig(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	for _, cfg := range []*JWTConfig{
		{JWKSURL: []string{"ftp://example.com/jwks.json"}},
		{JWKSURL: []string{"/jwks.json"}},
		{JWKSURL: []string{"http://"}},
		{JWKSURL: []string{"http://example.com/%zz"}},
		{Issuer: []string{"example.com"}},
	} {
		if _, err := cfg.remoteKeySources(ctx, nil); err == nil {
			t.Errorf("accepted %+v", cfg)
		}
	}
	// An issuer with a configured key is only checked against iss: no discovery.
	static := staticKeys{{family: familyHMAC, key: []byte("k"), source: "secret"}}
	if srcs, err := (&JWTConfig{Issuer: []string{"my-issuer"}}).remoteKeySources(ctx, static); err != nil || len(srcs) != 0 {
		t.Fatalf("issuer with a secret: %d sources, %v", len(srcs), err)
	}
	// Several key sets; placeholders resolved.
	t.Setenv("JK_TEST_HOST", "127.0.0.1:1")
	srcs, err := (&JWTConfig{JWKSURL: []string{"http://{env.JK_TEST_HOST}/a", "https://example.com/b"}}).remoteKeySources(ctx, nil)
	if err != nil || len(srcs) != 2 || srcs[0].(*remoteKeySet).jwksURL != "http://127.0.0.1:1/a" {
		t.Fatalf("two URLs: %v, %v", srcs, err)
	}
}

func TestSeveralKeySources(t *testing.T) {
	k := jkKeys()
	a := newJKServer(t, "", jkJWK(t, k["rsa1"], "a", ""))
	b := newJKServer(t, "", jkJWK(t, k["p256"], "b", ""))
	secret := []byte("0123456789abcdef0123456789abcdef-static")
	cfg := &JWTConfig{JWKSURL: []string{a.URL + "/jwks.json", b.URL + "/jwks.json"}}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	static := staticKeys{
		{family: familyHMAC, key: secret, source: "secret"},
		{family: familyP384, key: k["p384"].Public(), source: "pem"},
	}
	srcs, err := cfg.remoteKeySources(ctx, static)
	if err != nil {
		t.Fatal(err)
	}
	algs, err := cfg.resolveAlgorithms(static, true)
	if err != nil {
		t.Fatal(err)
	}
	v := newJWTVerifier(cfg, append([]keySource{static}, srcs...), algs)
	for _, tok := range []string{
		jkSign(t, "HS256", secret, "", "u", nil),
		jkSign(t, "ES384", k["p384"], "", "u", nil),
		jkSign(t, "RS256", k["rsa1"], "a", "u", nil),
		jkSign(t, "ES256", k["p256"], "b", "u", nil),
		jkSign(t, "ES256", k["p256"], "", "u", nil),
	} {
		if _, reason := jkCheck(v, tok); reason != "" {
			t.Errorf("%s: %s", tok[:20], reason)
		}
	}
	// One set down does not hide the others' keys.
	b.Close()
	c := newJKServer(t, "", jkJWK(t, k["rsa1"], "c", ""))
	cfg2 := &JWTConfig{JWKSURL: []string{"http://" + jkFreeAddr(t) + "/jwks.json", c.URL + "/jwks.json"}}
	v2, _ := jkVerifier(t, cfg2, 0)
	if _, reason := jkCheck(v2, jkSign(t, "RS256", k["rsa1"], "c", "u", nil)); reason != "" {
		t.Fatalf("with one set down: %s", reason)
	}
}

// TestJWKSNoGoroutineLeak provisions and unloads 20 configs with remote key
// sets, as 20 reloads do, and checks that nothing they started is left.
func TestJWKSNoGoroutineLeak(t *testing.T) {
	k := jkKeys()
	srv := newJKServer(t, "", jkJWK(t, k["rsa1"], "a", ""))
	srv2 := newJKServer(t, "", jkJWK(t, k["ed"], "e", ""))
	dir := t.TempDir()
	tok := jkSign(t, "RS256", k["rsa1"], "a", "u", nil)

	cycle := func(i int) {
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		h := &TokenAuth{
			DB:  fmt.Sprintf("%s/t%d.db", dir, i%2),
			JWT: &JWTConfig{JWKSURL: []string{srv.URL + "/jwks.json", "http://" + jkFreeAddr(t) + "/down.json"}},
		}
		if i%3 == 0 {
			h.JWT = &JWTConfig{Issuer: []string{srv2.URL}}
			tok = jkSign(t, "EdDSA", k["ed"], "e", "u", jwt.MapClaims{"iss": srv2.URL})
		}
		if err := h.Provision(ctx); err != nil {
			t.Fatal(err)
		}
		if _, reason := jkCheck(h.verifier, tok); reason != "" {
			t.Fatalf("config %d: %s", i, reason)
		}
		cancel()
		if err := h.Cleanup(); err != nil {
			t.Fatal(err)
		}
	}
	cycle(-1) // warm up: package-level pools, metrics, test keys
	time.Sleep(100 * time.Millisecond)
	before := runtime.NumGoroutine()
	for i := range 20 {
		tok = jkSign(t, "RS256", k["rsa1"], "a", "u", jwt.MapClaims{"i": i})
		cycle(i)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		after := runtime.NumGoroutine()
		if after <= before+2 {
			t.Logf("goroutines: %d before, %d after 20 reloads", before, after)
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d before, %d after 20 reloads\n%s", before, after, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ---- the verified-token cache (jwtcache.go)

func TestVerifiedCacheNeverAdmitsExpired(t *testing.T) {
	c := newVerifiedCache(10)
	now := time.Now()
	var d Digest
	d[0] = 1
	c.put(d, &jwtIdentity{user: "u", validUntil: now}, now)
	c.put(d, &jwtIdentity{user: "u", validUntil: now.Add(-time.Second)}, now)
	if c.len() != 0 || c.get(d, now) != nil {
		t.Fatal("an expired identity was admitted")
	}
	c.put(d, &jwtIdentity{user: "u", validUntil: now.Add(time.Minute)}, now)
	if c.get(d, now.Add(59*time.Second)) == nil {
		t.Fatal("a valid entry was not served")
	}
	if c.get(d, now.Add(time.Minute)) != nil {
		t.Fatal("served at its expiry")
	}
	c.put(d, &jwtIdentity{user: "u", validUntil: now.Add(time.Hour)}, now)
	if c.get(d, now.Add(verifiedCacheMaxAge-time.Second)) == nil {
		t.Fatal("not served within the maximum age")
	}
	if c.get(d, now.Add(verifiedCacheMaxAge)) != nil {
		t.Fatal("served past the maximum age")
	}
	for i := range 100 {
		var d Digest
		d[0], d[1] = 2, byte(i)
		c.put(d, &jwtIdentity{validUntil: now.Add(time.Hour)}, now)
	}
	if c.len() > 10 {
		t.Fatalf("cache of 10 holds %d", c.len())
	}
}

func TestVerifierCachesOnlyValidTokens(t *testing.T) {
	k := jkKeys()
	srv := newJKServer(t, "", jkJWK(t, k["rsa1"], "a", ""))
	v, _ := jkVerifier(t, &JWTConfig{JWKSURL: []string{srv.URL + "/jwks.json"}, Issuer: []string{"iss"}, Audience: []string{"aud"}}, 0)
	now := time.Now()
	sign := func(claims jwt.MapClaims, key any) string {
		c := jwt.MapClaims{"sub": "u", "iss": "iss", "aud": "aud", "exp": now.Add(time.Hour).Unix()}
		for k, v := range claims {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		tok := jwt.NewWithClaims(jwt.SigningMethodRS256, c)
		tok.Header["kid"] = "a"
		s, _ := tok.SignedString(key)
		return s
	}
	bad := map[string]string{
		"expired":       sign(jwt.MapClaims{"exp": now.Add(-time.Minute).Unix()}, k["rsa1"]),
		"no exp":        sign(jwt.MapClaims{"exp": nil}, k["rsa1"]),
		"not yet valid": sign(jwt.MapClaims{"nbf": now.Add(time.Hour).Unix()}, k["rsa1"]),
		"wrong issuer":  sign(jwt.MapClaims{"iss": "other"}, k["rsa1"]),
		"wrong aud":     sign(jwt.MapClaims{"aud": "other"}, k["rsa1"]),
		"no sub":        sign(jwt.MapClaims{"sub": nil}, k["rsa1"]),
		"bad signature": sign(nil, k["rsa2"]),
	}
	for name, tok := range bad {
		for range 2 { // a second try must not be served from the cache either
			if _, reason := jkCheck(v, tok); reason == "" {
				t.Fatalf("%s: accepted", name)
			}
		}
	}
	if n := v.cache.len(); n != 0 {
		t.Fatalf("%d refused tokens in the cache", n)
	}

	hits := func() float64 { return counterValue(t, handlerMetrics().jwtCacheHit) }
	misses := func() float64 { return counterValue(t, handlerMetrics().jwtCacheMiss) }
	good := sign(nil, k["rsa1"])
	h0, m0 := hits(), misses()
	for range 3 {
		if _, reason := jkCheck(v, good); reason != "" {
			t.Fatal(reason)
		}
	}
	if v.cache.len() != 1 || hits()-h0 != 2 || misses()-m0 != 1 {
		t.Fatalf("cache %d entries, %v hits, %v misses; want 1, 2, 1", v.cache.len(), hits()-h0, misses()-m0)
	}

	// A token expiring soon leaves the cache with its exp.
	soon := sign(jwt.MapClaims{"exp": time.Now().Add(time.Second).Unix()}, k["rsa1"])
	if _, reason := jkCheck(v, soon); reason != "" {
		t.Fatal(reason)
	}
	time.Sleep(time.Until(time.Unix(time.Now().Add(time.Second).Unix(), 0)) + 1100*time.Millisecond)
	if _, reason := jkCheck(v, soon); reason != "token expired" {
		t.Fatalf("expired token served from the cache: reason %q", reason)
	}
}

// ---- end to end, through a real Caddy

// jkCaddyfile protects :9181 with remote keys from jwksURL (the reload index
// i varies the config so that each load is a real reload).
func jkCaddyfile(db, jwksURL string, i int) string {
	return fmt.Sprintf(`{
	admin localhost:2999
	http_port 9080
	https_port 9443
	grace_period 1ns
	skip_install_trust
}
:9181 {
	token_auth {
		db %s
		jwt {
			jwks_url %s
		}
	}
	respond "{http.auth.user.id} %d"
}
`, db, jwksURL, i)
}

// jkGet sends a Bearer token to the protected site without keep-alive.
func jkGet(t testing.TB, tok string) (int, string, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://localhost:9181/", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Close = true
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), resp.Header.Get("WWW-Authenticate")
}

func TestJWKSThroughCaddy(t *testing.T) {
	k := jkKeys()
	addr := jkFreeAddr(t) // the key server is down when Caddy starts
	db := t.TempDir() + "/t.db"
	tc := caddytest.NewTester(t)
	start := time.Now()
	tc.InitServer(jkCaddyfile(db, "http://"+addr+"/jwks.json", 0), "caddyfile")
	t.Logf("config loaded in %v with the key server down", time.Since(start))

	tok := jkSign(t, "RS256", k["rsa1"], "k1", "alice", nil)
	status, _, challenge := jkGet(t, tok)
	if status != http.StatusUnauthorized ||
		!strings.Contains(challenge, `error="invalid_token"`) ||
		!strings.Contains(challenge, `error_description="signing keys not available yet"`) {
		t.Fatalf("key server down: %d, WWW-Authenticate %q", status, challenge)
	}

	// The key server comes up: Caddy recovers on its own.
	srv := newJKServer(t, addr, jkJWK(t, k["rsa1"], "k1", ""))
	deadline := time.Now().Add(15 * time.Second)
	for {
		status, body, challenge := jkGet(t, tok)
		if status == http.StatusOK {
			if body != "alice 0" {
				t.Fatalf("body %q", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not recovered: %d %q", status, challenge)
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("recovered %v after the start", time.Since(start))

	// Rotation: a token with a new kid is accepted once the set has it.
	srv.setKeys(jkJWK(t, k["rsa1"], "k1", ""), jkJWK(t, k["p256"], "k2", "ES256"))
	tok2 := jkSign(t, "ES256", k["p256"], "k2", "bob", nil)
	deadline = time.Now().Add(jwksRefetchEvery + 3*time.Second)
	for {
		status, body, _ := jkGet(t, tok2)
		if status == http.StatusOK && body == "bob 0" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rotated key not accepted: %d", status)
		}
		time.Sleep(250 * time.Millisecond)
	}

	// A flood of forged kids causes at most a couple of fetches.
	before := srv.jwksHits.Load()
	for range 300 {
		forged := jkSign(t, "RS256", k["rsa2"], jkRandomKid(), "mallory", nil)
		if status, _, _ := jkGet(t, forged); status != http.StatusUnauthorized {
			t.Fatalf("forged kid: %d", status)
		}
	}
	if n := srv.jwksHits.Load() - before; n > 2 {
		t.Fatalf("300 forged kids caused %d fetches", n)
	}

	// The metrics are in the config's registry, served by the admin API.
	resp, err := http.Get("http://localhost:2999/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`caddy_token_auth_jwks_fetches_total{result="success"}`,
		`caddy_token_auth_jwks_fetches_total{result="failure"}`,
		`caddy_token_auth_jwt_cache_total{result="hit"}`,
		`caddy_token_auth_jwt_cache_total{result="miss"}`,
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("admin /metrics lacks %s", want)
		}
	}

	// 20 reloads leave no refresher behind.
	runtime.GC()
	goroutines := runtime.NumGoroutine()
	for i := 1; i <= 20; i++ {
		tc.InitServer(jkCaddyfile(db, srv.URL+"/jwks.json", i), "caddyfile")
		if status, body, _ := jkGet(t, tok); status != http.StatusOK || body != fmt.Sprintf("alice %d", i) {
			t.Fatalf("reload %d: %d %q", i, status, body)
		}
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		after := runtime.NumGoroutine()
		if after <= goroutines+5 {
			t.Logf("goroutines: %d before, %d after 20 reloads", goroutines, after)
			break
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d before, %d after 20 reloads\n%s", goroutines, after, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(100 * time.Millisecond)
	}
}
