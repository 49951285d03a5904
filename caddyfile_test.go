package tokenauth

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestUnmarshalCaddyfile(t *testing.T) {
	keysForTest(t)
	input := `token_auth {
		db /var/lib/tokens.db
		query api_key
		header X-API-Key
		cookie session_token
		optional
		keep_credentials
		require_scope read write
		realm "my api"
		jwt {
			secret {env.JWT_SECRET}
			public_key ` + testKeyDir + `/RSA.pem
			jwks_url https://id.example/jwks.json
			issuer https://id.example
			audience api
			algorithms RS256 HS256
			user_claim id
			scope_claim permissions
			leeway 30s
		}
	}`
	var got TokenAuth
	if err := got.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err != nil {
		t.Fatal(err)
	}
	want := TokenAuth{
		DB: "/var/lib/tokens.db", Query: "api_key", Header: "X-API-Key", Cookie: "session_token",
		Optional: true, KeepCredentials: true, RequireScope: []string{"read", "write"}, Realm: "my api",
		JWT: &JWTConfig{
			Secret: "{env.JWT_SECRET}", PublicKey: []string{testKeyDir + "/RSA.pem"},
			JWKSURL: []string{"https://id.example/jwks.json"}, Issuer: []string{"https://id.example"},
			Audience: []string{"api"}, Algorithms: []string{"RS256", "HS256"}, UserClaim: "id",
			ScopeClaim: "permissions", Leeway: caddy.Duration(30e9),
		},
	}
	if !reflect.DeepEqual(got, want) {
		g, _ := json.Marshal(got)
		w, _ := json.Marshal(want)
		t.Fatalf("got  %s\nwant %s", g, w)
	}
}

func TestUnmarshalCaddyfileErrors(t *testing.T) {
	keys := keysForTest(t)
	privatePEM := filepath.Join(t.TempDir(), "private.pem")
	if err := os.WriteFile(privatePEM, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, input, want, wantLine string
	}{
		{"unknown subdirective", "token_auth {\n\tdb x\n\tfrobnicate\n}", "unrecognized subdirective 'frobnicate'", "at Testfile:3"},
		{"missing argument", "token_auth {\n\tdb\n}", "wrong argument count", "at Testfile:2"},
		{"too many arguments", "token_auth {\n\theader A B\n}", "wrong argument count", "at Testfile:2"},
		{"argument on directive", "token_auth foo {\n}", "wrong argument count", ""},
		{"unknown jwt subdirective", "token_auth {\n\tjwt {\n\t\tsecrets x\n\t}\n}", "unrecognized jwt subdirective 'secrets'", "at Testfile:3"},
		{"unknown algorithm", "token_auth {\n\tjwt {\n\t\talgorithms HS256 XS999\n\t}\n}", "unknown jwt algorithm 'XS999'", "at Testfile:3"},
		{"none algorithm", "token_auth {\n\tjwt {\n\t\talgorithms none\n\t}\n}", "unknown jwt algorithm 'none'", ""},
		{"weak secret", "token_auth {\n\tjwt {\n\t\tsecret short\n\t}\n}", "jwt secret is 5 bytes; an HMAC secret needs at least 32", "at Testfile:2"},
		{"PEM as secret", "token_auth {\n\tjwt {\n\t\tsecret \"-----BEGIN PUBLIC KEY----- xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"\n\t}\n}", "looks like a PEM key", "at Testfile:2"},
		{"unreadable key file", "token_auth {\n\tjwt {\n\t\tpublic_key /nonexistent/key.pem\n\t}\n}", "jwt public_key: open /nonexistent/key.pem", "at Testfile:2"},
		{"private key given", "token_auth {\n\tjwt {\n\t\tpublic_key " + privatePEM + "\n\t}\n}", "this is a private key", "at Testfile:2"},
		{"key does not fit algorithms", "token_auth {\n\tjwt {\n\t\tpublic_key " + keys[familyRSA].pemPath + "\n\t\tpublic_key " + keys[familyP256].pemPath + "\n\t\talgorithms RS256\n\t}\n}", "fits none of the allowed algorithms", "at Testfile:2"},
		{"algorithm without key", "token_auth {\n\tjwt {\n\t\tsecret " + testSecret + "\n\t\talgorithms HS256 ES256\n\t}\n}", "jwt algorithm ES256 needs a P-256 key", "at Testfile:2"},
		{"no key at all", "token_auth {\n\tjwt {\n\t\tuser_claim id\n\t}\n}", "configure a secret, a public_key, a jwks_url or an issuer", "at Testfile:2"},
		{"bad leeway", "token_auth {\n\tjwt {\n\t\tsecret " + testSecret + "\n\t\tleeway soon\n\t}\n}", "leeway 'soon'", "at Testfile:4"},
		{"jwt twice", "token_auth {\n\tjwt {\n\t\tsecret " + testSecret + "\n\t}\n\tjwt {\n\t}\n}", "jwt block given twice", "at Testfile:5"},
		{"bad realm", "token_auth {\n\trealm \"a\\\"b\"\n}", "no quotes", "at Testfile:2"},
		{"unknown store", "token_auth {\n\tstore redis x\n}", "unknown store backend 'redis'", "at Testfile:2"},
		{"optional with argument", "token_auth {\n\toptional yes\n}", "wrong argument count", "at Testfile:2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ta TokenAuth
			err := ta.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.wantLine) {
				t.Fatalf("error %v, want it to contain %q and %q", err, tc.want, tc.wantLine)
			}
		})
	}
}
