package tokenauth

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestNoSecretInLogsOrStore runs every kind of request — valid, refused,
// expired, revoked, JWT — with debug logging on, then searches every log line
// Caddy wrote and the bbolt file for the tokens and the HMAC secret.
//
// Caddy logs a copy of each request as it arrived (before any handler), and
// hides only Authorization and Cookie by itself; the query parameter and a
// custom header are hidden by the log filters the README prescribes, which
// this config uses. Everything token_auth itself logs must be clean anyway.
func TestNoSecretInLogsOrStore(t *testing.T) {
	keys := keysForTest(t)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "caddy.log")
	accessPath := filepath.Join(dir, "access.log")
	g := &gateway{dbPath: filepath.Join(dir, "tokens.db"), upstream: newEchoUpstream(t)}
	store, key, err := acquireBoltStore(g.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = releaseStore(key) })
	g.store = store
	cfg := strings.NewReplacer("%LOG%", logPath, "%ACCESS%", accessPath, "%DB%", g.dbPath,
		"%UPSTREAM%", g.upstream.Listener.Addr().String(), "%SECRET%", testSecret, "%RSA%", keys[familyRSA].pemPath).Replace(`
{
	admin localhost:2999
	http_port 9080
	https_port 9443
	grace_period 1ns
	skip_install_trust
	log {
		output file %LOG%
		level DEBUG
		format filter {
			request>uri query {
				delete token
			}
			request>headers>X-Api-Key delete
		}
	}
}
:9080 {
	log {
		output file %ACCESS%
		format filter {
			request>uri query {
				delete token
			}
			request>headers>X-Api-Key delete
		}
	}
	token_auth {
		db %DB%
		header X-API-Key
		jwt {
			secret %SECRET%
			public_key %RSA%
		}
	}
	reverse_proxy %UPSTREAM% {
		header_up X-User-Id {http.auth.user.id}
	}
}
`)
	g.tc = newTester(t)
	g.tc.InitServer(cfg, "caddyfile")

	rec, valid := g.create(t, CreateRequest{User: "zed"})
	revokedRec, revoked := g.create(t, CreateRequest{User: "zed"})
	if _, err := g.store.Revoke(t.Context(), revokedRec.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	unknown, _ := newToken()
	nearMiss := valid[:len(valid)-7] + "A" + valid[len(valid)-6:]
	jwtHS := signJWT(t, "HS256", []byte(testSecret), validClaims("zed"), nil)
	jwtRS := signJWT(t, "RS256", keys[familyRSA].private, validClaims("zed"), nil)
	expiredJWT := signJWT(t, "HS256", []byte(testSecret), map[string]any{"sub": "zed", "exp": time.Now().Add(-time.Hour).Unix()}, nil)

	expectPass(t, g.get(t, "/?token="+valid), "zed")
	expectPass(t, g.get(t, "/", "X-API-Key", valid), "zed")
	expectPass(t, g.get(t, "/", bearer(valid)...), "zed")
	expectPass(t, g.get(t, "/", bearer(jwtHS)...), "zed")
	expectPass(t, g.get(t, "/", bearer(jwtRS)...), "zed")
	for _, r := range []result{
		g.get(t, "/", bearer(revoked)...),
		g.get(t, "/", bearer(unknown)...),
		g.get(t, "/", bearer(nearMiss)...),
		g.get(t, "/", bearer(expiredJWT)...),
		g.get(t, "/", "X-API-Key", revoked),
		g.get(t, "/", bearer(valid+"x")...),
		g.get(t, "/", append(bearer(valid), "X-API-Key", valid)...),
	} {
		if r.status != 400 && r.status != 401 {
			t.Fatalf("status %d", r.status)
		}
	}
	_ = rec
	time.Sleep(200 * time.Millisecond) // let the file writers flush

	secrets := map[string]string{
		"valid token": valid, "revoked token": revoked, "near-miss token": nearMiss,
		"HS256 JWT signature": jwtHS[strings.LastIndexByte(jwtHS, '.')+1:],
		"RS256 JWT signature": jwtRS[strings.LastIndexByte(jwtRS, '.')+1:],
		"HMAC secret":         testSecret,
	}
	for _, path := range []string{logPath, accessPath, g.dbPath} {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(data) == 0 {
			t.Fatalf("%s is empty: the test would prove nothing", path)
		}
		for what, s := range secrets {
			if bytes.Contains(data, []byte(s)) {
				t.Errorf("%s found in %s", what, filepath.Base(path))
			}
		}
	}
	// the store did record something: the digest of the valid token
	data, _ := os.ReadFile(g.dbPath)
	d := digestOf(valid)
	if !bytes.Contains(data, d[:]) {
		t.Error("the valid token's digest is not in the store: is this the right file?")
	}
	// {http.auth.user.id} fills the access log's user_id
	accessData, _ := os.ReadFile(accessPath)
	if !bytes.Contains(accessData, []byte(`"user_id":"zed"`)) {
		t.Error(`the access log has no "user_id":"zed"`)
	}
	// and the debug log did log refusals, without their credentials
	logData, _ := os.ReadFile(logPath)
	if !bytes.Contains(logData, []byte("request refused")) {
		t.Error("no debug line for refused requests: debug logging was not on")
	}
}
