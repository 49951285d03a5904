package tokenauth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.etcd.io/bbolt"
)

// testKey is a signing key and the PEM file of its public half.
type testKey struct {
	name    string // family label used in test names
	private crypto.Signer
	pemPath string
}

var (
	testKeysOnce sync.Once
	testKeys     map[string]*testKey // by family: RSA, P-256, P-384, P-521, Ed25519
	testKeyDir   string
)

// keysForTest generates one key per family once per test binary and writes
// their public PEM files.
func keysForTest(t testing.TB) map[string]*testKey {
	t.Helper()
	testKeysOnce.Do(func() {
		dir, err := os.MkdirTemp("", "token-auth-keys-")
		if err != nil {
			panic(err)
		}
		testKeyDir = dir
		testKeys = map[string]*testKey{}
		rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
		p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
		_, edKey, _ := ed25519.GenerateKey(rand.Reader)
		for name, k := range map[string]crypto.Signer{
			familyRSA: rsaKey, familyP256: p256, familyP384: p384, familyP521: p521, familyEd25519: edKey,
		} {
			der, err := x509.MarshalPKIXPublicKey(k.Public())
			if err != nil {
				panic(err)
			}
			path := filepath.Join(dir, name+".pem")
			if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
				panic(err)
			}
			testKeys[name] = &testKey{name: name, private: k, pemPath: path}
		}
	})
	return testKeys
}

// testSecret is an HMAC secret of 40 bytes.
const testSecret = "0123456789abcdef0123456789abcdef-secret"

// signJWT signs claims with alg and key, adding header fields.
func signJWT(t testing.TB, alg string, key any, claims jwt.MapClaims, header map[string]any) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.GetSigningMethod(alg), claims)
	for k, v := range header {
		if v == nil {
			delete(tok.Header, k)
		} else {
			tok.Header[k] = v
		}
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("signing %s: %v", alg, err)
	}
	return s
}

// validClaims returns claims for user valid for an hour.
func validClaims(user string) jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{"sub": user, "exp": now.Add(time.Hour).Unix(), "iat": now.Unix()}
}

// boltTx lets tests write records directly, e.g. with a past expiry.
type boltTx = bbolt.Tx

// b64 is unpadded base64url, as in a JWS.
func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// unsignedJWT builds an alg=none token.
func unsignedJWT(claims jwt.MapClaims) string {
	payload, _ := json.Marshal(claims)
	return b64(`{"alg":"none","typ":"JWT"}`) + "." + b64(string(payload)) + "."
}

// generateRSA makes a fresh RSA-2048 key.
func generateRSA(t testing.TB) *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// clone returns a copy of a record that a test may modify.
func (r *TokenRecord) clone() *TokenRecord {
	c := *r
	c.Scopes = append([]string(nil), r.Scopes...)
	if r.Meta != nil {
		c.Meta = make(map[string]string, len(r.Meta))
		for k, v := range r.Meta {
			c.Meta[k] = v
		}
	}
	c.scopesJoined, c.lastMarked = "", 0
	return &c
}
