package tokenauth

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Opaque tokens through a real Caddy, real bbolt file and real upstream.

func TestOpaqueTokenEachSource(t *testing.T) {
	g := startGateway(t, "header X-API-Key\n\t\tcookie api_token")
	rec, tok := g.create(t, CreateRequest{User: "alice", Name: "ci key", Scopes: []string{"read", "write"}, Meta: map[string]string{"team": "blue"}})

	for _, tc := range []struct {
		name, target, source string
		kv                   []string
	}{
		{"query", "/restaurants?token=" + tok, "query", nil},
		{"header", "/restaurants", "header", []string{"X-API-Key", tok}},
		{"cookie", "/restaurants", "cookie", []string{"Cookie", "theme=dark; api_token=" + tok + "; lang=en"}},
		{"authorization", "/restaurants", "authorization", bearer(tok)},
		{"authorization lower-case scheme", "/restaurants", "authorization", []string{"Authorization", "bearer " + tok}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := expectPass(t, g.get(t, tc.target, tc.kv...), "alice")
			for h, want := range map[string]string{
				"X-Token-Type": "opaque", "X-Token-Source": tc.source, "X-Token-Id": rec.ID,
				"X-Token-Name": "ci key", "X-Token-Scopes": "read write", "X-User-Team": "blue",
				"X-Jwt-Sub": "", "X-Jwt-Missing": "",
			} {
				if got := up.Header.Get(h); got != want {
					t.Errorf("%s = %q, want %q", h, got, want)
				}
			}
			// the credential never reaches the upstream
			if up.RawQuery != "" || up.Header.Get("X-API-Key") != "" || up.Header.Get("Authorization") != "" ||
				strings.Contains(up.Header.Get("Cookie"), "api_token") {
				t.Errorf("credential forwarded: query %q headers %v", up.RawQuery, up.Header)
			}
			if tc.source == "cookie" && up.Header.Get("Cookie") != "theme=dark; lang=en" {
				t.Errorf("other cookies = %q", up.Header.Get("Cookie"))
			}
		})
	}
}

func TestQueryStrippingPreservesRestOfQuery(t *testing.T) {
	g := startGateway(t, "")
	_, tok := g.create(t, CreateRequest{User: "bob"})
	for _, tc := range []struct{ query, want string }{
		{"b=2&token=" + tok + "&a=1&b=3", "b=2&a=1&b=3"},
		{"token=" + tok + "&z=%20x&y", "z=%20x&y"},
		{"q=a+b&token=" + tok, "q=a+b"},
		{"token=" + tok, ""},
		{"x=1&%74oken=" + tok + "&y=%2F", "x=1&y=%2F"}, // escaped parameter name
	} {
		r := g.get(t, "/p?"+tc.query)
		up := expectPass(t, r, "bob")
		if up.RawQuery != tc.want {
			t.Errorf("query %q reached upstream as %q, want %q", tc.query, up.RawQuery, tc.want)
		}
		if cc := r.header.Get("Cache-Control"); cc != "private" {
			t.Errorf("Cache-Control %q on a query-authenticated response, want private", cc)
		}
	}
	// an upstream's no-store is kept; public is replaced by private
	r := g.get(t, "/p?token="+tok, "X-Upstream-Cache-Control", "no-store")
	if cc := r.header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q, want no-store kept", cc)
	}
	r = g.get(t, "/p?token="+tok, "X-Upstream-Cache-Control", "public, max-age=60")
	if cc := r.header.Get("Cache-Control"); cc != "private, max-age=60" {
		t.Errorf("Cache-Control %q, want private, max-age=60", cc)
	}
	// a header-authenticated response is not touched
	r = g.get(t, "/p", bearer(tok)...)
	if cc := r.header.Get("Cache-Control"); cc != "" {
		t.Errorf("Cache-Control %q on a header-authenticated response", cc)
	}
}

func TestKeepCredentials(t *testing.T) {
	g := startGateway(t, "keep_credentials")
	_, tok := g.create(t, CreateRequest{User: "carol"})
	up := expectPass(t, g.get(t, "/?a=1&token="+tok), "carol")
	if up.RawQuery != "a=1&token="+tok {
		t.Errorf("query %q, want the token kept", up.RawQuery)
	}
	up = expectPass(t, g.get(t, "/", bearer(tok)...), "carol")
	if up.Header.Get("Authorization") != "Bearer "+tok {
		t.Errorf("Authorization not kept")
	}
}

func TestCustomQueryParameterAndQueryOff(t *testing.T) {
	g := startGateway(t, "query api_key")
	_, tok := g.create(t, CreateRequest{User: "dan"})
	expectPass(t, g.get(t, "/?api_key="+tok), "dan")
	// "token" is just another parameter now: no credential
	expectRefusal(t, g.get(t, "/?token="+tok), 401, "", "no credentials")

	g = startGateway(t, "query off")
	_, tok = g.create(t, CreateRequest{User: "dan"})
	expectRefusal(t, g.get(t, "/?token="+tok), 401, "", "no credentials")
	expectPass(t, g.get(t, "/", bearer(tok)...), "dan")
}

func TestFailureTable(t *testing.T) {
	g := startGateway(t, "header X-API-Key\n\t\trequire_scope read\n\t\trealm api")
	_, good := g.create(t, CreateRequest{User: "erin", Scopes: []string{"read"}})
	_, noScope := g.create(t, CreateRequest{User: "erin", Scopes: []string{"write"}})
	past := time.Now().Add(-time.Hour)
	expiredRec, expired := g.create(t, CreateRequest{User: "erin", Scopes: []string{"read"}})
	revokedRec, revoked := g.create(t, CreateRequest{User: "erin", Scopes: []string{"read"}})
	if _, err := g.store.Revoke(context.Background(), revokedRec.ID, past); err != nil {
		t.Fatal(err)
	}
	// make one expired by writing the record with a past expiry
	if err := g.store.(*boltStore).db.Update(func(tx *boltTx) error {
		expiredRec.ExpiresAt = &past
		return putTx(tx, expiredRec, digestOf(expired))
	}); err != nil {
		t.Fatal(err)
	}
	unknown, _ := newToken()

	expectPass(t, g.get(t, "/", bearer(good)...), "erin")

	for _, tc := range []struct {
		name   string
		target string
		kv     []string
		status int
		code   string
		desc   string
	}{
		{"no credentials", "/", nil, 401, "", "no credentials"},
		{"unknown token", "/?token=" + unknown, nil, 401, "invalid_token", "unknown token"},
		{"malformed token", "/?token=tka_short", nil, 401, "invalid_token", "malformed token"},
		{"bad checksum", "/?token=" + good[:len(good)-1] + flip(good[len(good)-1]), nil, 401, "invalid_token", "malformed token"},
		{"expired token", "/?token=" + expired, nil, 401, "invalid_token", "token expired"},
		{"revoked token", "/?token=" + revoked, nil, 401, "invalid_token", "token revoked"},
		{"two credentials", "/?token=" + good, bearer(good), 400, "invalid_request", "more than one credential"},
		{"query and header", "/?token=" + good, []string{"X-API-Key", good}, 400, "invalid_request", "more than one credential"},
		{"repeated parameter", "/?token=" + good + "&token=" + good, nil, 400, "invalid_request", "repeated token parameter"},
		{"repeated header", "/", []string{"X-API-Key", good, "X-API-Key", good}, 400, "invalid_request", "repeated X-API-Key header"},
		{"repeated bearer", "/", []string{"Authorization", "Bearer " + good, "Authorization", "Bearer " + good}, 400, "invalid_request", "repeated Authorization header"},
		{"oversized", "/", bearer(strings.Repeat("a", maxCredentialLen+1)), 400, "invalid_request", "credential too large"},
		{"missing scope", "/", bearer(noScope), 403, "insufficient_scope", "insufficient scope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := g.get(t, tc.target, tc.kv...)
			expectRefusal(t, r, tc.status, tc.code, tc.desc)
			if www := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(www, `Bearer realm="api"`) {
				t.Errorf("WWW-Authenticate %q, want realm api", www)
			}
			if tc.code == "insufficient_scope" && !strings.Contains(r.header.Get("WWW-Authenticate"), `scope="read"`) {
				t.Errorf("WWW-Authenticate %q lacks scope", r.header.Get("WWW-Authenticate"))
			}
		})
	}
}

func flip(c byte) string {
	if c == 'A' {
		return "B"
	}
	return "A"
}

func TestOptionalMode(t *testing.T) {
	g := startGateway(t, "optional")
	_, tok := g.create(t, CreateRequest{User: "frank"})
	// anonymous: passes with every placeholder empty, spoofed identity overwritten
	up := expectPass(t, g.get(t, "/?a=1", "X-User-Id", "admin", "X-Token-Type", "opaque"), "")
	if up.Header.Get("X-Token-Type") != "" || up.RawQuery != "a=1" {
		t.Errorf("anonymous request: type %q query %q", up.Header.Get("X-Token-Type"), up.RawQuery)
	}
	expectPass(t, g.get(t, "/?token="+tok), "frank")
	// a bad credential still fails
	expectRefusal(t, g.get(t, "/?token=not-a-real-token-at-all"), 401, "invalid_token", "unknown token")
	expectRefusal(t, g.get(t, "/", bearer("x")...), 401, "invalid_token", "malformed token")
}

func TestSpoofedIdentityHeadersOverwritten(t *testing.T) {
	g := startGateway(t, "")
	_, tok := g.create(t, CreateRequest{User: "grace"})
	up := expectPass(t, g.get(t, "/?token="+tok, "X-User-Id", "admin", "X-Token-Scopes", "everything", "X-Jwt-Sub", "root"), "grace")
	if up.Header.Get("X-Token-Scopes") != "" || up.Header.Get("X-Jwt-Sub") != "" {
		t.Errorf("spoofed headers survived: %v", up.Header)
	}
}

func TestCORSPreflightPassesThrough(t *testing.T) {
	g := startGateway(t, "")
	h := http.Header{"Origin": {"https://app.example"}, "Access-Control-Request-Method": {"POST"}}
	expectPass(t, g.do(t, http.MethodOptions, "/", h), "")
	// an OPTIONS that is not a preflight is authenticated as usual
	expectRefusal(t, g.do(t, http.MethodOptions, "/", http.Header{"Origin": {"https://app.example"}}), 401, "", "")
}

func TestRevocationTakesEffectOnNextRequest(t *testing.T) {
	g := startGateway(t, "")
	rec, tok := g.create(t, CreateRequest{User: "heidi"})
	expectPass(t, g.get(t, "/?token="+tok), "heidi") // now cached
	if _, err := g.store.Revoke(context.Background(), rec.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	expectRefusal(t, g.get(t, "/?token="+tok), 401, "invalid_token", "token revoked")
}

func TestOtherAuthorizationSchemesIgnored(t *testing.T) {
	g := startGateway(t, "")
	_, tok := g.create(t, CreateRequest{User: "ivan"})
	expectRefusal(t, g.get(t, "/", "Authorization", "Basic YWxhZGRpbjpvcGVuc2VzYW1l"), 401, "", "no credentials")
	// Basic alongside a query token: ours is the query token, Basic is forwarded
	up := expectPass(t, g.get(t, "/?token="+tok, "Authorization", "Basic YWxhZGRpbjpvcGVuc2VzYW1l"), "ivan")
	if up.Header.Get("Authorization") != "Basic YWxhZGRpbjpvcGVuc2VzYW1l" {
		t.Errorf("Basic credential not forwarded: %q", up.Header.Get("Authorization"))
	}
}

func TestLegacyTokenImportedAsIs(t *testing.T) {
	g := startGateway(t, "")
	legacy := "my-secret-token-0001"
	g.create(t, CreateRequest{User: "strapi-user-7", Token: legacy})
	expectPass(t, g.get(t, "/restaurants?token="+legacy), "strapi-user-7")
}

// JWTs through the same real Caddy.

func TestJWTEachKeyFamily(t *testing.T) {
	keys := keysForTest(t)
	g := startGateway(t, `jwt {
			secret `+testSecret+`
			public_key %KEYDIR%/RSA.pem
			public_key %KEYDIR%/P-256.pem
			public_key %KEYDIR%/P-384.pem
			public_key %KEYDIR%/P-521.pem
			public_key %KEYDIR%/Ed25519.pem
		}`)
	for _, tc := range []struct {
		alg string
		key any
	}{
		{"HS256", []byte(testSecret)}, {"HS384", []byte(testSecret)}, {"HS512", []byte(testSecret)},
		{"RS256", keys[familyRSA].private}, {"RS384", keys[familyRSA].private}, {"RS512", keys[familyRSA].private},
		{"PS256", keys[familyRSA].private}, {"PS384", keys[familyRSA].private}, {"PS512", keys[familyRSA].private},
		{"ES256", keys[familyP256].private}, {"ES384", keys[familyP384].private}, {"ES512", keys[familyP521].private},
		{"EdDSA", keys[familyEd25519].private}, {"Ed25519", keys[familyEd25519].private},
	} {
		t.Run(tc.alg, func(t *testing.T) {
			claims := validClaims("user-" + tc.alg)
			claims["jti"] = "jti-" + tc.alg
			up := expectPass(t, g.get(t, "/", bearer(signJWT(t, tc.alg, tc.key, claims, nil))...), "user-"+tc.alg)
			if up.Header.Get("X-Token-Type") != "jwt" || up.Header.Get("X-Token-Id") != "jti-"+tc.alg ||
				up.Header.Get("X-Token-Source") != "authorization" || up.Header.Get("Authorization") != "" {
				t.Errorf("placeholders: %v", up.Header)
			}
		})
	}
}

func TestJWTClaimPlaceholders(t *testing.T) {
	g := startGateway(t, "jwt {\n\t\t\tsecret "+testSecret+"\n\t\t\tuser_claim id\n\t\t}")
	claims := validClaims("ignored")
	// Strapi-style numeric user ID, and the other claim shapes
	raw := signJWT(t, "HS256", []byte(testSecret), claims, nil)
	_ = raw
	claims["id"] = 12345678901
	claims["big"] = 1e10
	claims["roles"] = []string{"editor", "author"}
	claims["obj"] = map[string]any{"a": 1}
	claims["admin"] = true
	claims["scope"] = "read write"
	up := expectPass(t, g.get(t, "/", bearer(signJWT(t, "HS256", []byte(testSecret), claims, nil))...), "12345678901")
	for h, want := range map[string]string{
		"X-Jwt-Id": "12345678901", "X-Jwt-Big": "10000000000", "X-Jwt-Roles": "editor,author",
		"X-Jwt-Obj": `{"a":1}`, "X-Jwt-Admin": "true", "X-Jwt-Sub": "ignored", "X-Jwt-Missing": "",
		"X-Token-Scopes": "read write", "X-Token-Id": "",
	} {
		if got := up.Header.Get(h); got != want {
			t.Errorf("%s = %q, want %q", h, got, want)
		}
	}
}

func TestJWTRules(t *testing.T) {
	keys := keysForTest(t)
	g := startGateway(t, `jwt {
			public_key %KEYDIR%/RSA.pem
			issuer https://id.example https://id2.example
			audience api other
			leeway 30s
		}`)
	rsaKey := keys[familyRSA].private
	now := time.Now()
	base := func() jwt.MapClaims {
		return jwt.MapClaims{"sub": "judy", "iss": "https://id.example", "aud": "api",
			"exp": now.Add(time.Hour).Unix(), "iat": now.Unix()}
	}
	with := func(k string, v any) jwt.MapClaims {
		c := base()
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	pemBytes, err := os.ReadFile(keys[familyRSA].pemPath)
	if err != nil {
		t.Fatal(err)
	}
	good := signJWT(t, "RS256", rsaKey, base(), nil)
	expectPass(t, g.get(t, "/", bearer(good)...), "judy")
	expectPass(t, g.get(t, "/", bearer(signJWT(t, "RS256", rsaKey, with("iss", "https://id2.example"), nil))...), "judy")
	expectPass(t, g.get(t, "/", bearer(signJWT(t, "RS256", rsaKey, with("aud", []string{"x", "other"}), nil))...), "judy")
	expectPass(t, g.get(t, "/", bearer(signJWT(t, "RS256", rsaKey, with("exp", now.Add(-10*time.Second).Unix()), nil))...), "judy") // within leeway
	expectPass(t, g.get(t, "/", bearer(signJWT(t, "RS256", rsaKey, base(), map[string]any{"typ": "at+jwt"}))...), "judy")
	expectPass(t, g.get(t, "/", bearer(signJWT(t, "RS256", rsaKey, base(), map[string]any{"typ": nil}))...), "judy")

	attacker, _ := keysForTest(t)[familyP256].private, 0
	parts := strings.Split(good, ".")
	tampered := parts[0] + "." + b64(`{"sub":"admin","iss":"https://id.example","aud":"api","exp":9999999999}`) + "." + parts[2]

	for _, tc := range []struct {
		name, token, desc string
	}{
		{"expired", signJWT(t, "RS256", rsaKey, with("exp", now.Add(-time.Minute).Unix()), nil), "token expired"},
		{"not yet valid", signJWT(t, "RS256", rsaKey, with("nbf", now.Add(time.Minute).Unix()), nil), "token not yet valid"},
		{"issued in the future", signJWT(t, "RS256", rsaKey, with("iat", now.Add(time.Minute).Unix()), nil), "token issued in the future"},
		{"no exp", signJWT(t, "RS256", rsaKey, with("exp", nil), nil), "token has no exp claim"},
		{"wrong issuer", signJWT(t, "RS256", rsaKey, with("iss", "https://evil.example"), nil), "wrong issuer"},
		{"no issuer", signJWT(t, "RS256", rsaKey, with("iss", nil), nil), "wrong issuer"},
		{"wrong audience", signJWT(t, "RS256", rsaKey, with("aud", "nope"), nil), "wrong audience"},
		{"no sub", signJWT(t, "RS256", rsaKey, with("sub", nil), nil), "token has no sub claim"},
		{"alg none", unsignedJWT(base()), "algorithm not allowed"},
		{"HS256 with the RSA public key as secret", signJWT(t, "HS256", pemBytes, base(), nil), "algorithm not allowed"},
		{"ES256 not configured", signJWT(t, "ES256", attacker, base(), nil), "algorithm not allowed"},
		{"tampered payload", tampered, "bad signature"},
		{"jwk header with attacker key", signJWT(t, "RS256", mustRSA(t), base(), map[string]any{"jwk": map[string]any{"kty": "RSA", "n": "AQAB", "e": "AQAB"}}), "bad signature"},
		{"jku header to attacker set", signJWT(t, "RS256", mustRSA(t), base(), map[string]any{"jku": "http://127.0.0.1:1/keys"}), "bad signature"},
		{"wrong typ", signJWT(t, "RS256", rsaKey, base(), map[string]any{"typ": "JOSE+JSON"}), "unsupported token type"},
		{"crit header", signJWT(t, "RS256", rsaKey, base(), map[string]any{"crit": []string{"exp"}}), "unsupported critical header"},
		{"garbage in JWT shape", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.AAAA", "bad signature"},
		{"undecodable header", "e30x.e30.AAAA", "malformed token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			expectRefusal(t, g.get(t, "/", bearer(tc.token)...), 401, "invalid_token", tc.desc)
		})
	}
}

var (
	extraRSAOnce sync.Once
	extraRSA     any
)

// mustRSA is a second RSA key, the attacker's.
func mustRSA(t testing.TB) any {
	extraRSAOnce.Do(func() {
		extraRSA = generateRSA(t)
	})
	return extraRSA
}

// TestReloadWhileRequestsFlow reloads 50 changed configs sharing one bbolt file
// while clients send authenticated requests: every request answered is
// authenticated, nothing waits on the file lock, and no goroutine or file
// descriptor is left behind.
func TestReloadWhileRequestsFlow(t *testing.T) {
	g := startGateway(t, "")
	_, tok := g.create(t, CreateRequest{User: "kim"})
	cfgFor := func(i int) string {
		auth := fmt.Sprintf("realm r%d", i)
		if i%2 == 1 { // every other config also validates JWTs
			auth += "\n\t\tjwt {\n\t\t\tsecret " + testSecret + "\n\t\t}"
		}
		// in-flight requests may finish on the old config; connections are not reused
		// across reloads (closing idle keep-alive connections is Caddy's business, not ours)
		// no idle upstream connections, so that the process's own counts can be judged too
		cfg := strings.Replace(gatewayCaddyfile, "%UPSTREAM% {", "%UPSTREAM% {\n\t\ttransport http {\n\t\t\tkeepalive off\n\t\t}", 1)
		return strings.NewReplacer("%DB%", g.dbPath, "%AUTH%", auth, "grace_period 1ns", "grace_period 5s",
			"%UPSTREAM%", g.upstream.Listener.Addr().String()).Replace(cfg)
	}
	g.tc.InitServer(cfgFor(0), "caddyfile")
	goroutinesBefore, fdsBefore, ourBefore := runtime.NumGoroutine(), openFDs(t), pluginGoroutines()

	var stop atomic.Bool
	var ok, failed, resets atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			transport := &http.Transport{DisableKeepAlives: true}
			defer transport.CloseIdleConnections()
			client := &http.Client{Timeout: 5 * time.Second, Transport: transport}
			for !stop.Load() {
				res, err := client.Get(gatewayURL + "/?token=" + url.QueryEscape(tok))
				if err != nil {
					// Caddy binds with SO_REUSEPORT: a connection still queued on the
					// old listener when it closes is reset before any request is read.
					// That is Caddy's listener swap, not authentication: count it apart.
					resets.Add(1)
					continue
				}
				if res.StatusCode != http.StatusOK {
					if failed.Add(1) == 1 {
						t.Logf("first failure: status %d", res.StatusCode)
					}
				} else {
					ok.Add(1)
				}
				res.Body.Close()
			}
		}()
	}
	start := time.Now()
	const reloads = 50
	for i := 1; i <= reloads; i++ {
		g.tc.InitServer(cfgFor(i), "caddyfile")
	}
	elapsed := time.Since(start)
	stop.Store(true)
	wg.Wait()
	t.Logf("%d reloads in %v; %d requests ok, %d refused, %d connections reset by the listener swap",
		reloads, elapsed, ok.Load(), failed.Load(), resets.Load())
	if failed.Load() != 0 || ok.Load() == 0 {
		t.Fatalf("%d requests refused during reloads (%d ok)", failed.Load(), ok.Load())
	}
	if elapsed > 60*time.Second {
		t.Fatalf("reloads took %v: something waits on the file lock", elapsed)
	}

	// Leaks: goroutines running token_auth code, handles on the db file (one,
	// shared by every config), and the whole process's goroutines and files.
	// Poll: old servers finish shutting down in the background.
	var ours, dbHandles, goroutines, fds int
	leaked := func() bool {
		return ours > ourBefore || dbHandles != 1 || goroutines > goroutinesBefore+5 || fds > fdsBefore+5
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		ours, dbHandles, goroutines, fds = pluginGoroutines(), dbFileHandles(t), runtime.NumGoroutine(), openFDs(t)
		if !leaked() || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("token_auth goroutines %d -> %d, db file handles %d; whole process: goroutines %d -> %d, open files %d -> %d",
		ourBefore, ours, dbHandles, goroutinesBefore, goroutines, fdsBefore, fds)
	if leaked() {
		t.Fatalf("leak after %d reloads", reloads)
	}
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count file descriptors: %v", err)
	}
	return len(entries)
}

// dbFileHandles counts open file descriptors on bbolt files.
func dbFileHandles(t *testing.T) int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count file descriptors: %v", err)
	}
	n := 0
	for _, e := range entries {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasSuffix(target, ".db") {
			n++
		}
	}
	return n
}

// pluginGoroutines counts goroutines running this package's non-test code.
func pluginGoroutines() int {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "caddy-token-auth.") && !strings.Contains(g, "testing.tRunner") {
			n++
		}
	}
	return n
}

// TestRequestMetrics: outcomes are counted by result and credential type on
// the admin endpoint's /metrics, with no token, user or address in any label.
func TestRequestMetrics(t *testing.T) {
	g := startGateway(t, "")
	_, tok := g.create(t, CreateRequest{User: "metrics-user"})
	before := scrapeMetrics(t)
	expectPass(t, g.get(t, "/?token="+tok), "metrics-user")
	expectPass(t, g.get(t, "/", bearer(tok)...), "metrics-user")
	expectRefusal(t, g.get(t, "/"), 401, "", "")
	expectRefusal(t, g.get(t, "/?token=unknown-token-0000000"), 401, "invalid_token", "")
	after := scrapeMetrics(t)
	for series, want := range map[string]float64{
		`caddy_token_auth_requests_total{result="ok",type="opaque"}`:            2,
		`caddy_token_auth_requests_total{result="no_credentials",type="none"}`:  1,
		`caddy_token_auth_requests_total{result="invalid_token",type="opaque"}`: 1,
	} {
		if got := after[series] - before[series]; got != want {
			t.Errorf("%s rose by %v, want %v", series, got, want)
		}
	}
	for series := range after {
		if strings.Contains(series, tok) || strings.Contains(series, "metrics-user") || strings.Contains(series, "127.0.0.1") {
			t.Errorf("metric series carries client data: %s", series)
		}
	}
}

// scrapeMetrics reads the caddy_token_auth_* series from the admin endpoint.
func scrapeMetrics(t *testing.T) map[string]float64 {
	t.Helper()
	res, err := http.Get("http://localhost:2999/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	out := map[string]float64{}
	for line := range strings.SplitSeq(string(body), "\n") {
		if !strings.HasPrefix(line, "caddy_token_auth_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	if len(out) == 0 {
		t.Fatal("no caddy_token_auth_ series on /metrics")
	}
	return out
}
