// Command gen writes the credentials used by bench/run.sh:
//
//	<out>/hs256.secret        HMAC secret (48 random bytes, base64url, 64 chars)
//	<out>/hs256.jwt           one HS256 JWT  (sub=bench)
//	<out>/rs256_pub.pem       RSA-2048 public key (PKIX PEM) for token_auth's public_key
//	<out>/rs256_key.pem       the private key (PKCS#8 PEM), for reference
//	<out>/rs256.jwt           one RS256 JWT  (sub=bench)
//	<out>/rs256_distinct.txt  -distinct RS256 JWTs, one a line, each with its own sub and jti
//	<out>/legacy_<n>.jsonl    with -legacy n (repeatable via comma list): n import lines
//	                          {"token":"bench-legacy-<i>-<random>","user":"u<i>"}
//	<out>/legacy_<n>.sample   2,000 of those tokens spread evenly over the file, one a line
//
// Every JWT expires in ten years, so cached runs never hit exp.
package main

import (
	"bufio"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func main() {
	out := flag.String("out", "bench/out/creds", "output directory")
	distinct := flag.Int("distinct", 2000, "number of distinct RS256 JWTs")
	legacy := flag.String("legacy", "", "comma-separated sizes of legacy-token import files to write, e.g. 1000,1000000")
	flag.Parse()
	if err := os.MkdirAll(*out, 0o700); err != nil {
		log.Fatal(err)
	}
	now := time.Now()
	exp := now.Add(10 * 365 * 24 * time.Hour)

	// HS256
	raw := make([]byte, 48)
	must(rand.Read(raw))
	secret := base64.RawURLEncoding.EncodeToString(raw)
	write(*out, "hs256.secret", secret+"\n")
	hs, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims("bench", "hs-1", now, exp)).SignedString([]byte(secret))
	must(err)
	write(*out, "hs256.jwt", hs+"\n")

	// RS256
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	must(err)
	write(*out, "rs256_pub.pem", string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})))
	priv, err := x509.MarshalPKCS8PrivateKey(key)
	must(err)
	write(*out, "rs256_key.pem", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: priv})))
	rs, err := jwt.NewWithClaims(jwt.SigningMethodRS256, claims("bench", "rs-1", now, exp)).SignedString(key)
	must(err)
	write(*out, "rs256.jwt", rs+"\n")

	var sb strings.Builder
	for i := 0; i < *distinct; i++ {
		t, err := jwt.NewWithClaims(jwt.SigningMethodRS256, claims("u"+strconv.Itoa(i), "rs-d-"+strconv.Itoa(i), now, exp)).SignedString(key)
		must(err)
		sb.WriteString(t)
		sb.WriteByte('\n')
	}
	write(*out, "rs256_distinct.txt", sb.String())

	if *legacy != "" {
		for _, s := range strings.Split(*legacy, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || n <= 0 {
				log.Fatalf("bad -legacy size %q", s)
			}
			writeLegacy(*out, n)
		}
	}
}

func claims(sub, jti string, now, exp time.Time) jwt.MapClaims {
	return jwt.MapClaims{
		"sub":   sub,
		"jti":   jti,
		"iat":   now.Unix(),
		"exp":   exp.Unix(),
		"scope": "read write",
	}
}

// writeLegacy writes n import lines of distinct legacy tokens (16+ printable
// characters) and a sample of 2,000 of them spread evenly over the file.
func writeLegacy(dir string, n int) {
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("legacy_%d.jsonl", n)))
	must(err)
	w := bufio.NewWriterSize(f, 1<<20)
	sample := 2000
	if sample > n {
		sample = n
	}
	step := n / sample
	var sb strings.Builder
	rnd := make([]byte, 8)
	for i := 0; i < n; i++ {
		must(rand.Read(rnd))
		tok := "bench-legacy-" + strconv.Itoa(i) + "-" + hex.EncodeToString(rnd)
		fmt.Fprintf(w, "{\"token\":%q,\"user\":\"u%d\"}\n", tok, i)
		if i%step == step/2 && i/step < sample {
			sb.WriteString(tok)
			sb.WriteByte('\n')
		}
	}
	must(w.Flush())
	must(f.Close())
	write(dir, fmt.Sprintf("legacy_%d.sample", n), sb.String())
}

func write(dir, name, content string) {
	must(os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600))
}

func must(v ...any) {
	if len(v) > 0 {
		if err, ok := v[len(v)-1].(error); ok && err != nil {
			log.Fatal(err)
		}
	}
}
