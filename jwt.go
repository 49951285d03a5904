package tokenauth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/golang-jwt/jwt/v5"
)

// JWTConfig configures how JWTs in the Authorization header are validated.
type JWTConfig struct {
	// Secret is an HMAC key of at least 32 bytes. {env.X} and {file.path}
	// placeholders are resolved once at load.
	Secret string `json:"secret,omitempty"`
	// PublicKey lists PEM files, each an RSA, ECDSA or Ed25519 public key
	// (PKIX or PKCS#1) or a certificate.
	PublicKey []string `json:"public_key,omitempty"`
	// JWKSURL lists remote JSON Web Key Sets (http:// or https://), fetched
	// in the background and refreshed as their Cache-Control max-age says
	// (between 1 minute and 24 hours; default 1 hour). A token with an
	// unknown kid causes a refetch, at most once per 5 seconds per set.
	// Symmetric (oct) keys in a remote set are ignored.
	JWKSURL []string `json:"jwks_url,omitempty"`
	// Issuer lists accepted issuers (any one); when set, the iss claim must
	// match. When no secret, public_key or jwks_url is configured, the keys
	// are found by OIDC discovery: <issuer>/.well-known/openid-configuration,
	// whose issuer must equal the configured one, names the jwks_uri.
	Issuer []string `json:"issuer,omitempty"`
	// Audience lists accepted audiences (any one); when set, the aud claim must contain one.
	Audience []string `json:"audience,omitempty"`
	// Algorithms is the allow-list of signing algorithms. Default: every
	// algorithm the configured keys can verify. "none" is always refused.
	Algorithms []string `json:"algorithms,omitempty"`
	// UserClaim names the claim holding the user ID. Default: sub.
	UserClaim string `json:"user_claim,omitempty"`
	// ScopeClaim names the claim holding granted scopes (a space-separated
	// string or an array). Default: scope, or else scp.
	ScopeClaim string `json:"scope_claim,omitempty"`
	// Leeway is the clock skew allowed on exp, nbf and iat. Default: 0.
	Leeway caddy.Duration `json:"leeway,omitempty"`
}

// Key families: which key type verifies which algorithm.
const (
	familyHMAC    = "HMAC"
	familyRSA     = "RSA"
	familyP256    = "P-256"
	familyP384    = "P-384"
	familyP521    = "P-521"
	familyEd25519 = "Ed25519"
)

// algorithmFamily maps every supported algorithm to the key family that verifies it.
var algorithmFamily = map[string]string{
	"HS256": familyHMAC, "HS384": familyHMAC, "HS512": familyHMAC,
	"RS256": familyRSA, "RS384": familyRSA, "RS512": familyRSA,
	"PS256": familyRSA, "PS384": familyRSA, "PS512": familyRSA,
	"ES256": familyP256, "ES384": familyP384, "ES512": familyP521,
	"EdDSA": familyEd25519, "Ed25519": familyEd25519,
}

// algorithmsOf lists, in a stable order, the algorithms of a key family.
func algorithmsOf(family string) []string {
	var out []string
	for alg, f := range algorithmFamily {
		if f == family {
			out = append(out, alg)
		}
	}
	slices.Sort(out)
	return out
}

// minHMACSecret is the shortest HMAC secret accepted (RFC 7518 §3.2 for HS256).
const minHMACSecret = 32

// ed25519Alias is the fully specified algorithm name Ed25519 (RFC 9864), the
// same verification as EdDSA with an Ed25519 key.
type ed25519Alias struct{ *jwt.SigningMethodEd25519 }

func (ed25519Alias) Alg() string { return "Ed25519" }

func init() {
	jwt.RegisterSigningMethod("Ed25519", func() jwt.SigningMethod {
		return ed25519Alias{jwt.SigningMethodEdDSA}
	})
}

// verificationKey is one key that may verify tokens.
type verificationKey struct {
	kid    string // "" matches any kid
	family string
	key    any
	source string // for error messages: the file, or "secret"
}

// keySource provides keys at verification time (static keys, or a remote key set).
type keySource interface {
	// appendKeys appends the keys of family that may have signed a token
	// with kid and alg (family is algorithmFamily[alg]). A remote set that
	// has never loaded returns errKeysNotLoaded.
	appendKeys(dst []any, kid, alg, family string) ([]any, error)
}

// staticKeys are keys fixed at load: the secret and the PEM files.
type staticKeys []verificationKey

func (s staticKeys) appendKeys(dst []any, kid, _, family string) ([]any, error) {
	for _, k := range s {
		if k.family == family && (k.kid == "" || kid == "" || k.kid == kid) {
			dst = append(dst, k.key)
		}
	}
	return dst, nil
}

// loadStaticKeys resolves the secret and reads the PEM files.
func (c *JWTConfig) loadStaticKeys(repl *caddy.Replacer) (staticKeys, error) {
	var keys staticKeys
	if c.Secret != "" {
		secret := repl.ReplaceKnown(c.Secret, "")
		if strings.HasPrefix(strings.TrimSpace(secret), "-----BEGIN") {
			return nil, errors.New("jwt secret looks like a PEM key: use public_key for RSA, ECDSA or Ed25519 keys")
		}
		if len(secret) < minHMACSecret {
			return nil, fmt.Errorf("jwt secret is %d bytes; an HMAC secret needs at least %d", len(secret), minHMACSecret)
		}
		keys = append(keys, verificationKey{family: familyHMAC, key: []byte(secret), source: "secret"})
	}
	for _, file := range c.PublicKey {
		file = repl.ReplaceKnown(file, "")
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("jwt public_key: %w", err)
		}
		key, family, err := parsePublicKeyPEM(data)
		if err != nil {
			return nil, fmt.Errorf("jwt public_key %s: %w", file, err)
		}
		keys = append(keys, verificationKey{family: family, key: key, source: file})
	}
	return keys, nil
}

// parsePublicKeyPEM reads the first public key or certificate in a PEM file.
func parsePublicKeyPEM(data []byte) (any, string, error) {
	for {
		block, rest := pem.Decode(data)
		if block == nil {
			return nil, "", errors.New("no PEM public key or certificate found")
		}
		data = rest
		var pub any
		var err error
		switch block.Type {
		case "PUBLIC KEY":
			pub, err = x509.ParsePKIXPublicKey(block.Bytes)
		case "RSA PUBLIC KEY":
			pub, err = x509.ParsePKCS1PublicKey(block.Bytes)
		case "CERTIFICATE":
			var cert *x509.Certificate
			if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
				pub = cert.PublicKey
			}
		default:
			if strings.Contains(block.Type, "PRIVATE") {
				return nil, "", errors.New("this is a private key; give the public key")
			}
			continue
		}
		if err != nil {
			return nil, "", err
		}
		family, err := keyFamily(pub)
		return pub, family, err
	}
}

// keyFamily tells which algorithms a public key can verify.
func keyFamily(pub any) (string, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return "", fmt.Errorf("RSA key of %d bits; at least 2048 required", k.N.BitLen())
		}
		return familyRSA, nil
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return familyP256, nil
		case elliptic.P384():
			return familyP384, nil
		case elliptic.P521():
			return familyP521, nil
		}
		return "", fmt.Errorf("unsupported ECDSA curve %s", k.Curve.Params().Name)
	case ed25519.PublicKey:
		return familyEd25519, nil
	}
	return "", fmt.Errorf("unsupported key type %T", pub)
}

// usesRemoteKeys reports whether keys come from remote key sets: jwks_url,
// or OIDC discovery from the issuer when no key is configured.
func (c *JWTConfig) usesRemoteKeys(static staticKeys) bool {
	return len(c.JWKSURL) > 0 || (len(static) == 0 && len(c.Issuer) > 0)
}

// resolveAlgorithms checks the allow-list against the keys, or derives it
// from them. remote says whether remote key sets may add keys later.
func (c *JWTConfig) resolveAlgorithms(keys staticKeys, remote bool) ([]string, error) {
	if len(keys) == 0 && !remote {
		return nil, errors.New("jwt: configure a secret, a public_key, a jwks_url or an issuer to discover keys from")
	}
	families := map[string]bool{}
	for _, k := range keys {
		families[k.family] = true
	}
	if len(c.Algorithms) == 0 {
		var algs []string
		for alg, f := range algorithmFamily {
			if families[f] || (remote && f != familyHMAC) {
				algs = append(algs, alg)
			}
		}
		slices.Sort(algs)
		return algs, nil
	}
	served := map[string]bool{}
	for _, alg := range c.Algorithms {
		if strings.EqualFold(alg, "none") {
			return nil, errors.New(`jwt algorithm "none" is never allowed`)
		}
		f, ok := algorithmFamily[alg]
		if !ok {
			return nil, fmt.Errorf("unknown jwt algorithm %q (supported: HS256/384/512, RS256/384/512, PS256/384/512, ES256/384/512, EdDSA, Ed25519)", alg)
		}
		if !families[f] && (!remote || f == familyHMAC) { // a remote set never supplies an HMAC key
			return nil, fmt.Errorf("jwt algorithm %s needs a %s key, and none is configured", alg, f)
		}
		served[f] = true
	}
	for _, k := range keys {
		if !served[k.family] {
			return nil, fmt.Errorf("jwt key %s (%s) fits none of the allowed algorithms %v; allow one of %v",
				k.source, k.family, c.Algorithms, algorithmsOf(k.family))
		}
	}
	return slices.Clone(c.Algorithms), nil
}

// jwtVerifier validates JWTs; built once in Provision, used concurrently.
type jwtVerifier struct {
	parser     *jwt.Parser
	sources    []keySource
	allowed    map[string]bool
	issuers    []string
	userClaim  string
	scopeClaim string
	leeway     time.Duration
	cache      *verifiedCache
}

// jwtIdentity is what a valid JWT yields, precomputed for the request path.
type jwtIdentity struct {
	user       string
	scopes     []string
	scopesText string
	jti        string
	claims     map[string]string // every top-level claim, formatted for {http.auth.jwt.<claim>}
	validUntil time.Time         // exp plus leeway
}

// newJWTVerifier builds the verifier from the config and its key sources.
func newJWTVerifier(c *JWTConfig, sources []keySource, algorithms []string) *jwtVerifier {
	opts := []jwt.ParserOption{
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(time.Duration(c.Leeway)),
		jwt.WithJSONNumber(),
	}
	if len(c.Audience) > 0 {
		opts = append(opts, jwt.WithAudience(c.Audience...))
	}
	v := &jwtVerifier{
		parser:     jwt.NewParser(opts...),
		sources:    sources,
		allowed:    make(map[string]bool, len(algorithms)),
		issuers:    c.Issuer,
		userClaim:  c.UserClaim,
		scopeClaim: c.ScopeClaim,
		leeway:     time.Duration(c.Leeway),
		cache:      newVerifiedCache(verifiedCacheMax),
	}
	if v.userClaim == "" {
		v.userClaim = "sub"
	}
	for _, a := range algorithms {
		v.allowed[a] = true
	}
	return v
}

// Reasons a JWT is refused, for error_description. None contains token data.
var (
	errAlgorithmNotAllowed = errors.New("algorithm not allowed")
	errNoKey               = errors.New("no key for this token")
	errTokenType           = errors.New("unsupported token type")
	errCritical            = errors.New("unsupported critical header")
)

// verify validates a JWT and returns its identity, or a reason for refusal.
func (v *jwtVerifier) verify(raw string, digest Digest, now time.Time) (*jwtIdentity, string) {
	if id := v.cache.get(digest, now); id != nil {
		handlerMetrics().jwtCacheHit.Inc()
		return id, ""
	}
	handlerMetrics().jwtCacheMiss.Inc()
	claims := jwt.MapClaims{}
	_, err := v.parser.ParseWithClaims(raw, claims, v.keyFor)
	if err != nil {
		return nil, jwtErrorReason(err)
	}
	if len(v.issuers) > 0 {
		iss, _ := claims["iss"].(string)
		if !slices.Contains(v.issuers, iss) {
			return nil, "wrong issuer"
		}
	}
	id, reason := v.identityOf(claims)
	if reason != "" {
		return nil, reason
	}
	exp, _ := claims.GetExpirationTime() // required and checked by the parser
	id.validUntil = exp.Add(v.leeway)
	v.cache.put(digest, id, now)
	return id, ""
}

// keyFor is the jwt.Keyfunc: it ties the algorithm to the key family, so an
// RSA key can never verify an HMAC signature, and never follows jku, x5u or jwk.
func (v *jwtVerifier) keyFor(t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	if !v.allowed[alg] {
		return nil, errAlgorithmNotAllowed
	}
	if typ, ok := t.Header["typ"]; ok {
		s, _ := typ.(string)
		switch strings.ToLower(s) {
		case "jwt", "at+jwt", "application/at+jwt":
		default:
			return nil, errTokenType
		}
	}
	if _, ok := t.Header["crit"]; ok {
		return nil, errCritical
	}
	kid, _ := t.Header["kid"].(string)
	family := algorithmFamily[alg]
	keys, err := collectKeys(v.sources, kid, alg, family)
	if len(keys) == 0 && refetchRemote(v.sources, kid) { // unknown kid, or keys not loaded yet
		keys, err = collectKeys(v.sources, kid, alg, family)
	}
	switch len(keys) {
	case 0:
		if err != nil {
			return nil, err
		}
		return nil, errNoKey
	case 1:
		return keys[0], nil
	}
	set := jwt.VerificationKeySet{Keys: make([]jwt.VerificationKey, len(keys))}
	for i, k := range keys {
		set.Keys[i] = k
	}
	return set, nil
}

// collectKeys gathers the keys of every source for a token. An error of one
// source (a remote set not loaded yet) does not hide the keys of the others.
func collectKeys(sources []keySource, kid, alg, family string) ([]any, error) {
	var keys []any
	var firstErr error
	for _, src := range sources {
		var err error
		if keys, err = src.appendKeys(keys, kid, alg, family); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return keys, firstErr
}

// jwtErrorReason maps a parser error to a short, secret-free description.
func jwtErrorReason(err error) string {
	for _, m := range []struct {
		err    error
		reason string
	}{
		{errAlgorithmNotAllowed, "algorithm not allowed"},
		{errTokenType, "unsupported token type"},
		{errCritical, "unsupported critical header"},
		{errNoKey, "no key for this token"},
		{errKeysNotLoaded, "signing keys not available yet"},
		{jwt.ErrTokenMalformed, "malformed token"},
		{jwt.ErrTokenSignatureInvalid, "bad signature"},
		{jwt.ErrTokenExpired, "token expired"},
		{jwt.ErrTokenNotValidYet, "token not yet valid"},
		{jwt.ErrTokenUsedBeforeIssued, "token issued in the future"},
		{jwt.ErrTokenInvalidAudience, "wrong audience"},
		{jwt.ErrTokenRequiredClaimMissing, "required claim missing"},
		{jwt.ErrTokenInvalidClaims, "invalid claims"},
		{jwt.ErrTokenUnverifiable, "token unverifiable"},
	} {
		if errors.Is(err, m.err) {
			if m.err == jwt.ErrTokenRequiredClaimMissing && strings.Contains(err.Error(), "exp") {
				return "token has no exp claim"
			}
			if m.err == jwt.ErrTokenInvalidAudience && strings.Contains(err.Error(), "missing") {
				return "token has no aud claim"
			}
			return m.reason
		}
	}
	return "invalid token"
}

// errKeysNotLoaded is returned by remote key sources before their first successful fetch.
var errKeysNotLoaded = errors.New("signing keys not available yet")

// identityOf extracts the user, scopes and placeholder values from valid claims.
func (v *jwtVerifier) identityOf(claims jwt.MapClaims) (*jwtIdentity, string) {
	user := ""
	switch u := claims[v.userClaim].(type) {
	case string:
		user = u
	case json.Number:
		user = formatNumber(u)
	}
	if user == "" {
		return nil, "token has no " + v.userClaim + " claim"
	}
	if len(user) > maxFieldLen || checkField("user", user) != nil {
		return nil, "unusable " + v.userClaim + " claim"
	}
	id := &jwtIdentity{user: user}
	id.jti, _ = claims["jti"].(string)
	scopeClaim := v.scopeClaim
	if scopeClaim == "" {
		scopeClaim = "scope"
		if _, ok := claims["scope"]; !ok {
			scopeClaim = "scp"
		}
	}
	switch s := claims[scopeClaim].(type) {
	case string:
		id.scopes = strings.Fields(s)
	case []any:
		for _, e := range s {
			if str, ok := e.(string); ok {
				id.scopes = append(id.scopes, str)
			}
		}
	}
	id.scopesText = strings.Join(id.scopes, " ")
	id.claims = make(map[string]string, len(claims))
	for k, v := range claims {
		id.claims[k] = formatClaim(v)
	}
	return id, ""
}
