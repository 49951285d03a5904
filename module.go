package tokenauth

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func init() {
	caddy.RegisterModule(TokenAuth{})
	httpcaddyfile.RegisterHandlerDirective("token_auth", parseCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("token_auth", httpcaddyfile.Before, "basic_auth")
}

// TokenAuth authenticates each request by one credential: an opaque API token
// (from the query, a header, a cookie or Authorization: Bearer) looked up by
// its SHA-256 digest in a token store, or a JWT in the Authorization header.
// On success it sets {http.auth.user.id} and the other http.auth.*
// placeholders, removes the credential, and calls the next handler; otherwise
// it answers 400, 401, 403 or 503 with an RFC 6750 WWW-Authenticate header,
// as a Caddy error that handle_errors can render.
type TokenAuth struct {
	// DB is the path of the bbolt token database. Default:
	// <caddy data dir>/token_auth/tokens.db.
	DB string `json:"db,omitempty"`
	// StoreRaw selects a token store module instead of db, e.g. the shared
	// PostgreSQL store: {"backend": "postgres", ...}. Default: bolt at db.
	StoreRaw json.RawMessage `json:"store,omitempty" caddy:"namespace=http.handlers.token_auth.stores inline_key=backend"`
	// Query is the query parameter carrying an opaque token, or "off".
	// Default: token.
	Query string `json:"query,omitempty"`
	// Header is a request header carrying an opaque token, e.g. X-API-Key.
	// Default: none.
	Header string `json:"header,omitempty"`
	// Cookie is a cookie carrying a token. Default: none.
	Cookie string `json:"cookie,omitempty"`
	// Optional lets requests without any credential through anonymously, with
	// every http.auth.* placeholder empty. Bad credentials still fail.
	Optional bool `json:"optional,omitempty"`
	// KeepCredentials forwards the credential to the next handler. Default:
	// it is removed from the request.
	KeepCredentials bool `json:"keep_credentials,omitempty"`
	// RequireScope lists scopes that must all be granted, else 403.
	RequireScope []string `json:"require_scope,omitempty"`
	// Realm is the realm of WWW-Authenticate challenges. Default: restricted.
	Realm string `json:"realm,omitempty"`
	// JWT enables JWTs in the Authorization header and says how to validate them.
	JWT *JWTConfig `json:"jwt,omitempty"`

	queryParam string // "" when query is off
	headerKey  string // canonical form of Header
	store      TokenStore
	storeKey   string // pool key, released in Cleanup
	verifier   *jwtVerifier
	errScope   *authError // the 403 for require_scope, built once
	metrics    *tokenAuthMetrics
	logger     *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (TokenAuth) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.token_auth",
		New: func() caddy.Module { return new(TokenAuth) },
	}
}

// Provision sets defaults, opens (or shares) the token store and builds the
// JWT verifier.
func (h *TokenAuth) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.metrics = handlerMetrics()
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return err
	}
	repl := caddy.NewReplacer()
	switch h.Query {
	case "":
		h.queryParam = "token"
	case "off":
		h.queryParam = ""
	default:
		h.queryParam = h.Query
	}
	if h.Header != "" {
		h.headerKey = http.CanonicalHeaderKey(h.Header)
	}
	if h.Realm == "" {
		h.Realm = "restricted"
	}
	h.errScope = &authError{
		status: http.StatusForbidden, code: codeInsufficientScope,
		desc: "insufficient scope", scope: strings.Join(h.RequireScope, " "),
	}
	if h.JWT != nil {
		keys, err := h.JWT.loadStaticKeys(repl)
		if err != nil {
			return err
		}
		remote, err := h.JWT.remoteKeySources(ctx, keys)
		if err != nil {
			return err
		}
		algs, err := h.JWT.resolveAlgorithms(keys, len(remote) > 0)
		if err != nil {
			return err
		}
		h.verifier = newJWTVerifier(h.JWT, append([]keySource{keys}, remote...), algs)
	}
	var backend StoreBackend = &BoltStoreModule{Path: h.DB}
	if h.StoreRaw != nil {
		if h.DB != "" {
			return errors.New("give db or store, not both")
		}
		mod, err := ctx.LoadModule(h, "StoreRaw")
		if err != nil {
			return fmt.Errorf("loading token store: %w", err)
		}
		backend = mod.(StoreBackend)
	}
	store, key, err := backend.AcquireStore(ctx)
	if err != nil {
		return err
	}
	h.store, h.storeKey = store, key
	return nil
}

// Validate checks the configuration for mistakes Provision does not catch.
func (h *TokenAuth) Validate() error {
	if err := validateRealm(h.Realm); err != nil {
		return err
	}
	for _, s := range h.RequireScope {
		if s == "" || strings.ContainsAny(s, " \"\\") {
			return fmt.Errorf("require_scope %q: a scope has no spaces, quotes or backslashes", s)
		}
	}
	return nil
}

// Cleanup gives back this config's use of the shared token store. It is safe
// after a failed Provision.
func (h *TokenAuth) Cleanup() error {
	if h.storeKey == "" {
		return nil
	}
	err := releaseStore(h.storeKey)
	h.storeKey = ""
	return err
}

// ServeHTTP authenticates the request and calls next, or refuses it.
func (h *TokenAuth) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if isPreflight(r) {
		repl.Map(emptyAuthPlaceholders)
		return next.ServeHTTP(w, r)
	}

	cred, aerr := h.extractCredential(r)
	if aerr != nil {
		return h.refuse(w, r, repl, aerr, cred)
	}
	if cred.source == "" { // no credential at all
		if h.Optional {
			h.metrics.countRequest(resultAnonymous, credNone)
			repl.Map(emptyAuthPlaceholders)
			return next.ServeHTTP(w, r)
		}
		return h.refuse(w, r, repl, errNoCredentials, cred)
	}

	var scopes []string
	if cred.jwt {
		id, reason := h.verifier.verify(cred.value, digestOf(cred.value), time.Now())
		if reason != "" {
			return h.refuse(w, r, repl, invalidToken(reason), cred)
		}
		repl.Map(jwtPlaceholders(id, cred.source))
		scopes = id.scopes
	} else {
		rec, aerr := h.lookupOpaque(r, cred.value)
		if aerr != nil {
			return h.refuse(w, r, repl, aerr, cred)
		}
		repl.Map(opaquePlaceholders(rec, cred.source))
		scopes = rec.Scopes
	}
	if missingScopes(h.RequireScope, scopes) {
		return h.refuse(w, r, repl, h.errScope, cred)
	}
	h.metrics.countRequest(resultOK, cred.typeIndex())

	if !h.KeepCredentials {
		h.removeCredential(r, cred)
	}
	if cred.source == sourceQuery {
		w = &privateCacheWriter{ResponseWriterWrapper: caddyhttp.ResponseWriterWrapper{ResponseWriter: w}}
	}
	return next.ServeHTTP(w, r)
}

// lookupOpaque checks an opaque token's shape, then finds and checks its record.
func (h *TokenAuth) lookupOpaque(r *http.Request, token string) (*TokenRecord, *authError) {
	if reason := checkTokenShape(token); reason != "" {
		return nil, invalidToken(reason)
	}
	rec, err := h.store.Lookup(r.Context(), digestOf(token))
	switch {
	case errors.Is(err, ErrTokenNotFound):
		return nil, invalidToken("unknown token")
	case err != nil:
		h.metrics.storeErrors.Inc()
		if c := h.logger.Check(zapcore.ErrorLevel, "token store lookup failed"); c != nil {
			c.Write(zap.Error(err)) // the error never carries the token: lookups are by digest
		}
		return nil, &authError{status: http.StatusServiceUnavailable, code: codeStoreUnavailable, desc: "token store unavailable"}
	}
	now := time.Now()
	if reason := rec.refusal(now); reason != "" {
		return nil, invalidToken(reason)
	}
	// note the use at most once a second per token: the store batches the writes
	if n := now.UnixNano(); n-atomic.LoadInt64(&rec.lastMarked) >= int64(time.Second) {
		atomic.StoreInt64(&rec.lastMarked, n)
		h.store.MarkUsed(rec.ID, now)
	}
	return rec, nil
}

// missingScopes reports whether any required scope is not granted.
func missingScopes(required, granted []string) bool {
	for _, want := range required {
		if !slices.Contains(granted, want) {
			return true
		}
	}
	return false
}

// refuse answers a request that failed authentication: the RFC 6750
// challenge, the error placeholders, a debug log line (never the
// credential), and a Caddy error for handle_errors.
func (h *TokenAuth) refuse(w http.ResponseWriter, r *http.Request, repl *caddy.Replacer, aerr *authError, cred credential) error {
	h.metrics.countRequest(aerr.resultIndex(), cred.typeIndex())
	if aerr.status != http.StatusForbidden { // a 403 already has its identity mapped
		repl.Map(emptyAuthPlaceholders)
	}
	if aerr.status != http.StatusServiceUnavailable {
		w.Header().Set("WWW-Authenticate", aerr.challenge(h.Realm))
	}
	repl.Set(phError, aerr.code)
	repl.Set(phErrorDesc, aerr.desc)
	if c := h.logger.Check(zapcore.DebugLevel, "request refused"); c != nil {
		c.Write(
			zap.Int("status", aerr.status),
			zap.String("error", aerr.code),
			zap.String("reason", aerr.desc),
			zap.String("source", cred.source),
		)
	}
	return caddyhttp.Error(aerr.status, aerr)
}

// privateCacheWriter marks responses to query-authenticated requests
// Cache-Control: private (RFC 6750 §2.3) unless they already say no-store.
type privateCacheWriter struct {
	caddyhttp.ResponseWriterWrapper
	wroteHeader bool
}

func (pw *privateCacheWriter) WriteHeader(status int) {
	if !pw.wroteHeader {
		if status >= 200 { // 1xx responses are informational; the final one follows
			pw.wroteHeader = true
			makePrivate(pw.Header())
		}
	}
	pw.ResponseWriterWrapper.WriteHeader(status)
}

func (pw *privateCacheWriter) Write(b []byte) (int, error) {
	if !pw.wroteHeader {
		pw.WriteHeader(http.StatusOK)
	}
	return pw.ResponseWriterWrapper.Write(b)
}

func (pw *privateCacheWriter) ReadFrom(r io.Reader) (int64, error) {
	if !pw.wroteHeader {
		pw.WriteHeader(http.StatusOK)
	}
	return pw.ResponseWriterWrapper.ReadFrom(r)
}

// makePrivate sets Cache-Control to private, keeping no-store and dropping
// directives that allow shared caching.
func makePrivate(h http.Header) {
	cc := h.Values("Cache-Control")
	if len(cc) == 0 {
		h.Set("Cache-Control", "private")
		return
	}
	kept := []string{"private"}
	for _, line := range cc {
		for d := range strings.SplitSeq(line, ",") {
			d = strings.TrimSpace(d)
			name, _, _ := strings.Cut(strings.ToLower(d), "=")
			switch name {
			case "no-store":
				return // already stricter than private
			case "private", "public", "s-maxage", "":
				continue
			}
			kept = append(kept, d)
		}
	}
	h.Set("Cache-Control", strings.Join(kept, ", "))
}

// Interface guards
var (
	_ caddy.Provisioner           = (*TokenAuth)(nil)
	_ caddy.Validator             = (*TokenAuth)(nil)
	_ caddy.CleanerUpper          = (*TokenAuth)(nil)
	_ caddyhttp.MiddlewareHandler = (*TokenAuth)(nil)
	_ http.ResponseWriter         = (*privateCacheWriter)(nil)
)
