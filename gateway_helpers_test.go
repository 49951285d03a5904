package tokenauth

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
)

// echoed is what the test upstream saw of a request.
type echoed struct {
	RawQuery string      `json:"raw_query"`
	Header   http.Header `json:"header"`
}

// newEchoUpstream starts a real HTTP upstream that answers with what it received.
func newEchoUpstream(t testing.TB) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if cc := r.Header.Get("X-Upstream-Cache-Control"); cc != "" {
			w.Header().Set("Cache-Control", cc)
		}
		_ = json.NewEncoder(w).Encode(echoed{RawQuery: r.URL.RawQuery, Header: r.Header})
	}))
	t.Cleanup(srv.Close)
	return srv
}

// gateway is a real Caddy (caddytest) running token_auth in front of a real
// upstream, with the bbolt store it uses open for the test to manage tokens.
type gateway struct {
	tc       *caddytest.Tester
	store    TokenStore
	dbPath   string
	upstream *httptest.Server
}

const gatewayURL = "http://localhost:9080"

// gatewayCaddyfile is the config of startGateway: %DB%, %AUTH% (the body of
// the token_auth block) and %UPSTREAM% are filled in.
const gatewayCaddyfile = `
{
	admin localhost:2999
	http_port 9080
	https_port 9443
	grace_period 1ns
	skip_install_trust
}
:9080 {
	token_auth {
		db %DB%
		%AUTH%
	}
	reverse_proxy %UPSTREAM% {
		header_up X-User-Id {http.auth.user.id}
		header_up X-User-Team {http.auth.user.team}
		header_up X-Token-Type {http.auth.token.type}
		header_up X-Token-Source {http.auth.token.source}
		header_up X-Token-Id {http.auth.token.id}
		header_up X-Token-Name {http.auth.token.name}
		header_up X-Token-Scopes {http.auth.token.scopes}
		header_up X-Jwt-Sub {http.auth.jwt.sub}
		header_up X-Jwt-Id {http.auth.jwt.id}
		header_up X-Jwt-Big {http.auth.jwt.big}
		header_up X-Jwt-Roles {http.auth.jwt.roles}
		header_up X-Jwt-Obj {http.auth.jwt.obj}
		header_up X-Jwt-Admin {http.auth.jwt.admin}
		header_up X-Jwt-Missing {http.auth.jwt.missing}
	}
	handle_errors {
		respond "{http.error.status_code}|{http.auth.token_auth.error}|{http.auth.token_auth.error_description}"
	}
}
`

// startGateway loads a Caddyfile whose token_auth block holds auth (plus a
// fresh db), and opens the same store for the test through the shared pool.
func startGateway(t *testing.T, auth string) *gateway {
	t.Helper()
	keysForTest(t)
	g := &gateway{dbPath: filepath.Join(t.TempDir(), "tokens.db"), upstream: newEchoUpstream(t)}
	store, key, err := acquireBoltStore(g.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = releaseStore(key) })
	g.store = store
	cfg := strings.NewReplacer(
		"%DB%", g.dbPath,
		"%AUTH%", strings.ReplaceAll(auth, "%KEYDIR%", testKeyDir),
		"%UPSTREAM%", g.upstream.Listener.Addr().String(),
	).Replace(gatewayCaddyfile)
	g.tc = newTester(t)
	g.tc.InitServer(cfg, "caddyfile")
	return g
}

// newTester is caddytest's tester with timeouts that survive a loaded machine.
func newTester(t *testing.T) *caddytest.Tester {
	return caddytest.NewTester(t).WithDefaultOverrides(caddytest.Config{
		LoadRequestTimeout: 30 * time.Second,
		TestRequestTimeout: 30 * time.Second,
	})
}

// create makes a token in the gateway's store.
func (g *gateway) create(t testing.TB, req CreateRequest) (*TokenRecord, string) {
	t.Helper()
	rec, tok, err := createToken(context.Background(), g.store, req, time.Now())
	if err != nil {
		t.Fatalf("creating token: %v", err)
	}
	return rec, tok
}

// result is a response from the gateway.
type result struct {
	status   int
	header   http.Header
	body     string
	upstream *echoed // nil unless the upstream answered
}

// do sends a request through the gateway. target is path and query.
func (g *gateway) do(t testing.TB, method, target string, header http.Header) result {
	t.Helper()
	req, err := http.NewRequest(method, gatewayURL+target, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	return g.send(t, req)
}

func (g *gateway) send(t testing.TB, req *http.Request) result {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	out := result{status: res.StatusCode, header: res.Header, body: string(body)}
	if res.StatusCode == http.StatusOK && strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") {
		out.upstream = new(echoed)
		if err := json.Unmarshal(body, out.upstream); err != nil {
			t.Fatalf("decoding upstream echo: %v", err)
		}
	}
	return out
}

// get is do with GET and optional header pairs.
func (g *gateway) get(t testing.TB, target string, kv ...string) result {
	t.Helper()
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return g.do(t, http.MethodGet, target, h)
}

// bearer returns header pairs for Authorization: Bearer tok.
func bearer(tok string) []string { return []string{"Authorization", "Bearer " + tok} }

// expectRefusal checks a refused request's status, error code and description.
func expectRefusal(t testing.TB, r result, status int, code, desc string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d (body %q)", r.status, status, r.body)
	}
	if r.upstream != nil {
		t.Fatalf("refused request reached the upstream")
	}
	parts := strings.SplitN(r.body, "|", 3)
	if len(parts) != 3 || parts[1] != code || (desc != "" && parts[2] != desc) {
		t.Fatalf("body %q, want error %q description %q", r.body, code, desc)
	}
	www := r.header.Get("WWW-Authenticate")
	switch {
	case status == http.StatusServiceUnavailable:
		if www != "" {
			t.Fatalf("503 carries WWW-Authenticate %q", www)
		}
	case code == "":
		if !strings.HasPrefix(www, `Bearer realm="`) || strings.Contains(www, "error=") {
			t.Fatalf("WWW-Authenticate %q, want a bare Bearer challenge", www)
		}
	default:
		if !strings.HasPrefix(www, `Bearer realm="`) || !strings.Contains(www, `error="`+code+`"`) {
			t.Fatalf("WWW-Authenticate %q, want error=%q", www, code)
		}
		if desc != "" && !strings.Contains(www, `error_description="`+desc+`"`) {
			t.Fatalf("WWW-Authenticate %q, want error_description=%q", www, desc)
		}
	}
}

// expectPass checks that the upstream got the request as user.
func expectPass(t testing.TB, r result, user string) *echoed {
	t.Helper()
	if r.status != http.StatusOK || r.upstream == nil {
		t.Fatalf("status %d body %q, want 200 from upstream", r.status, r.body)
	}
	if got := r.upstream.Header.Get("X-User-Id"); got != user {
		t.Fatalf("upstream saw user %q, want %q", got, user)
	}
	return r.upstream
}
