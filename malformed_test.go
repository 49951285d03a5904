package tokenauth

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestMalformedInputsNeverPassNorFail500 sends hostile and broken credentials
// through a real Caddy: each must be answered 400 or 401 — never 2xx, never 5xx.
func TestMalformedInputsNeverPassNorFail500(t *testing.T) {
	g := startGateway(t, "header X-API-Key\n\t\tcookie sid\n\t\tjwt {\n\t\t\tsecret "+testSecret+"\n\t\t}")
	_, good := g.create(t, CreateRequest{User: "mallory-target"})
	hs := signJWT(t, "HS256", []byte(testSecret), validClaims("u"), nil)
	parts := strings.Split(hs, ".")

	type input struct {
		name   string
		target string
		kv     []string
	}
	inputs := []input{
		{"empty query token", "/?token=", nil},
		{"query token one char", "/?token=x", nil},
		{"query token 15 chars", "/?token=abcdefghijklmno", nil},
		{"query token 513 chars", "/?token=" + strings.Repeat("a", 513), nil},
		{"query token oversized", "/?token=" + strings.Repeat("a", maxCredentialLen+10), nil},
		{"query token with NUL", "/?token=aaaaaaaaaaaaaaaa%00bbbb", nil},
		{"query token with newline", "/?token=aaaaaaaaaaaaaaaa%0D%0AX-Evil:1", nil},
		{"query token with space", "/?token=aaaaaaaa+aaaaaaaaaa", nil},
		{"query token utf-8", "/?token=%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9", nil},
		{"query token bad escape", "/?token=%zz%zz", nil},
		{"query token repeated", "/?token=" + good + "&token=x", nil},
		{"query token escaped name repeated", "/?token=" + good + "&%74oken=" + good, nil},
		{"tka prefix short", "/?token=tka_", nil},
		{"tka bad checksum", "/?token=" + good[:len(good)-6] + "AAAAAA", nil},
		{"tka wrong alphabet", "/?token=tka_" + strings.Repeat("_", 49), nil},
		{"good token plus suffix", "/?token=" + good + "x", nil},
		{"bearer empty", "/", []string{"Authorization", "Bearer"}},
		{"bearer spaces only", "/", []string{"Authorization", "Bearer    "}},
		{"bearer short", "/", []string{"Authorization", "Bearer abc"}},
		{"bearer oversized", "/", []string{"Authorization", "Bearer " + strings.Repeat("A", maxCredentialLen+1)}},
		{"bearer oversized JWT shape", "/", []string{"Authorization", "Bearer " + strings.Repeat("A", 5000) + "." + strings.Repeat("B", 5000) + ".C"}},
		{"bearer with tab", "/", []string{"Authorization", "Bearer aaaaaaaa\taaaaaaaaaa"}},
		{"bearer two tokens", "/", []string{"Authorization", "Bearer " + good + " " + good}},
		{"two bearer headers", "/", []string{"Authorization", "Bearer " + good, "Authorization", "Bearer " + good}},
		{"bearer plus query", "/?token=" + good, []string{"Authorization", "Bearer " + good}},
		{"header plus cookie", "/", []string{"X-API-Key", good, "Cookie", "sid=" + good}},
		{"repeated api key header", "/", []string{"X-API-Key", good, "X-API-Key", good}},
		{"repeated cookie", "/", []string{"Cookie", "sid=" + good + "; sid=" + good}},
		{"empty api key header", "/", []string{"X-API-Key", ""}},
		{"cookie empty value", "/", []string{"Cookie", "sid="}},
		{"wrong scheme only", "/", []string{"Authorization", "Basic Zm9vOmJhcg=="}},
		{"scheme without space", "/", []string{"Authorization", "Bearer" + good}},
		{"JWT garbage base64", "/", []string{"Authorization", "Bearer AAAA.BBBB.CCCC"}},
		{"JWT header not JSON", "/", []string{"Authorization", "Bearer " + b64("not json") + "." + parts[1] + "." + parts[2]}},
		{"JWT header JSON array", "/", []string{"Authorization", "Bearer " + b64("[1,2]") + "." + parts[1] + "." + parts[2]}},
		{"JWT alg number", "/", []string{"Authorization", "Bearer " + b64(`{"alg":256}`) + "." + parts[1] + "." + parts[2]}},
		{"JWT alg unknown", "/", []string{"Authorization", "Bearer " + b64(`{"alg":"XS256"}`) + "." + parts[1] + "." + parts[2]}},
		{"JWT alg none", "/", []string{"Authorization", "Bearer " + unsignedJWT(validClaims("u"))}},
		{"JWT alg NONE", "/", []string{"Authorization", "Bearer " + b64(`{"alg":"NONE"}`) + "." + parts[1] + "."}},
		{"JWT payload not JSON", "/", []string{"Authorization", "Bearer " + parts[0] + "." + b64("{{{") + "." + parts[2]}},
		{"JWT exp string", "/", []string{"Authorization", "Bearer " + parts[0] + "." + b64(`{"sub":"u","exp":"tomorrow"}`) + "." + parts[2]}},
		{"JWT signature stripped", "/", []string{"Authorization", "Bearer " + parts[0] + "." + parts[1] + "."}},
		{"JWT padded base64", "/", []string{"Authorization", "Bearer " + parts[0] + "=." + parts[1] + "." + parts[2]}},
		{"JWT four parts", "/", []string{"Authorization", "Bearer " + hs + ".x"}},
		{"JWT in query", "/?token=" + hs, nil},
		{"JWT with sub object", "/", []string{"Authorization", "Bearer " + signJWT(t, "HS256", []byte(testSecret), func() map[string]any {
			c := validClaims("u")
			c["sub"] = map[string]any{"id": 1}
			return c
		}(), nil)}},
		{"JWT with control char sub", "/", []string{"Authorization", "Bearer " + signJWT(t, "HS256", []byte(testSecret), func() map[string]any {
			c := validClaims("u\r\nX-Evil: 1")
			return c
		}(), nil)}},
	}
	if len(inputs) < 30 {
		t.Fatalf("only %d inputs", len(inputs))
	}
	for _, in := range inputs {
		t.Run(in.name, func(t *testing.T) {
			r := g.get(t, in.target, in.kv...)
			if r.status != http.StatusBadRequest && r.status != http.StatusUnauthorized {
				t.Fatalf("status %d (body %q), want 400 or 401", r.status, r.body)
			}
			if r.upstream != nil {
				t.Fatal("reached the upstream")
			}
			if strings.Contains(r.body, good) || strings.Contains(r.header.Get("WWW-Authenticate"), good) {
				t.Fatal("the token is echoed back")
			}
		})
	}

	// Raw requests that no Go client would send.
	for _, raw := range []string{
		"GET /?token=a\x01aaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: localhost\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer aaaaaaaaaaaaaaaaaaaaa\x7f\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer \xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\xf7\xf6\xf5\xf4\xf3\xf2\xf1\xf0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: localhost\r\nX-API-Key: \xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: localhost\r\nCookie: sid=\"" + good + "\"; sid=\r\n\r\n",
	} {
		status := rawStatus(t, raw)
		if status != 400 && status != 401 {
			t.Errorf("raw request %q: status %d, want 400 or 401", raw, status)
		}
	}
}

// rawStatus writes a raw HTTP/1.1 request to the gateway and reads the status.
func rawStatus(t *testing.T, raw string) int {
	t.Helper()
	conn, err := net.DialTimeout("tcp", "localhost:9080", 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte(raw)); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading response to %q: %v", raw, err)
	}
	res.Body.Close()
	return res.StatusCode
}
