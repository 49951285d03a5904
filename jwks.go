package tokenauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Remote key sets (jwks_url, and OIDC discovery from the issuer).
//
// JWKs are parsed and checked by github.com/MicahParks/jwkset. Fetching and
// refreshing is done here rather than by jwkset's HTTP storage or by
// github.com/MicahParks/keyfunc/v3, because those (v0.11.4 / v3.9.2) fetch
// synchronously when created (Provision must not wait on the network), refresh
// at a fixed interval (no Cache-Control), read documents without a size limit,
// rate-limit unknown-kid refreshes with one limiter that makes requests wait
// (up to a minute by default), and do not tie a key's alg to the token's.

const (
	// jwksMaxBytes bounds a fetched JWKS or discovery document.
	jwksMaxBytes = 1 << 20
	// jwksFetchTimeout bounds one refresh: discovery (if any) and the key set.
	jwksFetchTimeout = 10 * time.Second
	// jwksDefaultRefresh is the refresh interval when the server sends no max-age.
	jwksDefaultRefresh = time.Hour
	// jwksMinRefresh and jwksMaxRefresh bound the refresh interval.
	jwksMinRefresh = time.Minute
	jwksMaxRefresh = 24 * time.Hour
	// jwksRefetchEvery is the least time between two fetches asked for by
	// requests (an unknown kid, or no key set loaded yet).
	jwksRefetchEvery = 5 * time.Second
	// jwksRetryFirst and jwksRetryMax bound the back-off after a failed fetch.
	jwksRetryFirst = 5 * time.Second
	jwksRetryMax   = time.Minute
	// jwksRequestWait bounds how long a request waits for a fetch it asked for.
	jwksRequestWait = 3 * time.Second
)

// remoteKeySources starts the remote key sets of the config (jwks_url, or
// OIDC discovery from the issuer when no key is configured). Their background
// work stops when ctx is cancelled (config unload). Nothing here touches the
// network: the first fetch happens in the background.
func (c *JWTConfig) remoteKeySources(ctx caddy.Context, static staticKeys) ([]keySource, error) {
	repl := caddy.NewReplacer()
	logger := ctx.Logger().Named("jwks")
	var sets []*remoteKeySet
	for _, raw := range c.JWKSURL {
		u := repl.ReplaceKnown(raw, "")
		if err := checkRemoteURL(u); err != nil {
			return nil, fmt.Errorf("jwt jwks_url %q: %w", u, err)
		}
		sets = append(sets, newRemoteKeySet(u, "", logger))
	}
	if len(c.JWKSURL) == 0 && len(static) == 0 {
		for _, iss := range c.Issuer {
			if err := checkRemoteURL(iss); err != nil {
				return nil, fmt.Errorf("jwt issuer %q: OIDC discovery needs an http:// or https:// issuer URL (or configure a key): %w", iss, err)
			}
			sets = append(sets, newRemoteKeySet("", iss, logger))
		}
	}
	sources := make([]keySource, len(sets))
	for i, s := range sets {
		s.done = ctx.Done()
		go s.run(ctx)
		sources[i] = s
	}
	return sources, nil
}

// checkRemoteURL accepts absolute http:// and https:// URLs.
func checkRemoteURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return errors.New("want an http:// or https:// URL")
	}
	if u.Host == "" {
		return errors.New("URL has no host")
	}
	return nil
}

// remoteKey is one usable key of a remote set.
type remoteKey struct {
	kid    string
	alg    string // "" serves every algorithm of the family
	family string
	key    any
}

// remoteKeySet is a JWKS fetched from jwksURL, or from the jwks_uri that the
// issuer's discovery document names. One goroutine (run) does every fetch;
// requests read the current keys without locking.
type remoteKeySet struct {
	jwksURL string // configured URL; "" when discovered
	issuer  string // issuer to discover from; "" for a configured URL
	client  *http.Client
	logger  *zap.Logger
	every   time.Duration // least time between request-triggered fetches
	wait    time.Duration // how long a request waits for a fetch

	keys atomic.Pointer[[]remoteKey] // nil until the first successful fetch
	kick chan struct{}               // capacity 1: asks run to fetch now
	done <-chan struct{}             // closed when the config is unloaded

	mu        sync.Mutex
	lastStart time.Time     // start of the latest fetch, or of one asked for
	fetching  bool          // a fetch is running
	waiters   chan struct{} // closed when the next fetch ends; nil if nobody waits

	discovered string // jwks_uri from discovery; used by the fetching goroutine only
}

func newRemoteKeySet(jwksURL, issuer string, logger *zap.Logger) *remoteKeySet {
	return &remoteKeySet{
		jwksURL: jwksURL,
		issuer:  issuer,
		client:  newJWKSClient(),
		logger:  logger,
		every:   jwksRefetchEvery,
		wait:    jwksRequestWait,
		kick:    make(chan struct{}, 1),
	}
}

// newJWKSClient returns an HTTP client for key fetches: time-limited, without
// keep-alive (fetches are minutes apart, and no connection may outlive the
// config), and refusing redirects from https to http.
func newJWKSClient() *http.Client {
	return &http.Client{
		Timeout: jwksFetchTimeout,
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: jwksFetchTimeout}).DialContext,
			TLSHandshakeTimeout:   jwksFetchTimeout,
			ResponseHeaderTimeout: jwksFetchTimeout,
			DisableKeepAlives:     true,
			ForceAttemptHTTP2:     true,
		},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return errors.New("too many redirects")
			}
			if via[0].URL.Scheme == "https" && req.URL.Scheme != "https" {
				return errors.New("redirect from https to http refused")
			}
			return nil
		},
	}
}

// name identifies the set in logs, without any userinfo of the URL.
func (s *remoteKeySet) name() string {
	raw := s.jwksURL
	if raw == "" {
		raw = s.issuer
	}
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	return raw
}

// appendKeys implements keySource. Keys are matched by kid when the token
// has one (a key without kid matches any), and each key serves only its
// family, and only its alg if it has one.
func (s *remoteKeySet) appendKeys(dst []any, kid, alg, family string) ([]any, error) {
	keys := s.keys.Load()
	if keys == nil {
		return dst, errKeysNotLoaded
	}
	for _, k := range *keys {
		if k.family != family || (kid != "" && k.kid != "" && k.kid != kid) {
			continue
		}
		if k.alg != "" && k.alg != alg && !(family == familyEd25519 && algorithmFamily[k.alg] == familyEd25519) {
			continue // EdDSA and Ed25519 (RFC 9864) name the same verification
		}
		dst = append(dst, k.key)
	}
	return dst, nil
}

// wantsFetch reports whether a fetch might find a key for a token with kid
// that found none: the set has never loaded, or the token names a kid the
// set lacks. A token without kid never causes a fetch of a loaded set.
func (s *remoteKeySet) wantsFetch(kid string) bool {
	keys := s.keys.Load()
	if keys == nil {
		return true
	}
	return kid != "" && !slices.ContainsFunc(*keys, func(k remoteKey) bool { return k.kid == kid })
}

// refetchRemote is called when no source had a key for a token: it asks the
// remote sets that might have it for a fetch (each at most once per
// jwksRefetchEvery) and waits a little for them. It reports whether any
// fetch ended, so that the keys are worth looking up again.
func refetchRemote(sources []keySource, kid string) bool {
	var sets []*remoteKeySet
	for _, src := range sources {
		if s, ok := src.(*remoteKeySet); ok && s.wantsFetch(kid) {
			sets = append(sets, s)
		}
	}
	switch len(sets) {
	case 0:
		return false
	case 1:
		return sets[0].refetch()
	}
	var fetched atomic.Bool
	var wg sync.WaitGroup
	for _, s := range sets {
		wg.Go(func() {
			if s.refetch() {
				fetched.Store(true)
			}
		})
	}
	wg.Wait()
	return fetched.Load()
}

// refetch asks run for a fetch, unless one was asked for or started less than
// s.every ago, and waits for the running or asked-for fetch to end. It reports
// whether a fetch ended while it waited.
func (s *remoteKeySet) refetch() bool {
	s.mu.Lock()
	if s.waiters == nil {
		if !s.fetching && time.Since(s.lastStart) < s.every {
			s.mu.Unlock()
			return false
		}
		s.waiters = make(chan struct{})
		if !s.fetching {
			s.lastStart = time.Now()
			select {
			case s.kick <- struct{}{}:
			default:
			}
		}
	}
	ch := s.waiters
	s.mu.Unlock()
	t := time.NewTimer(s.wait)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
	case <-s.done:
	}
	return false
}

// run fetches the key set now, then again when it is due (Cache-Control
// max-age, bounded), sooner after a failure, and whenever a request asks,
// until ctx is done.
func (s *remoteKeySet) run(ctx context.Context) {
	defer s.client.CloseIdleConnections()
	retry := jwksRetryFirst
	for {
		next, err := s.fetchNow(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			next = retry
			retry = min(2*retry, jwksRetryMax)
			level := zapcore.WarnLevel
			if s.keys.Load() == nil {
				level = zapcore.ErrorLevel // JWTs are refused until a fetch succeeds
			}
			if c := s.logger.Check(level, "fetching JWT signing keys failed"); c != nil {
				c.Write(zap.String("source", s.name()), zap.Error(err), zap.Duration("retry_in", next))
			}
		} else {
			retry = jwksRetryFirst
		}
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-s.kick:
			t.Stop()
		}
	}
}

// fetchNow does one fetch, publishes the keys on success, and wakes the
// requests waiting for it. It returns when the next refresh is due.
func (s *remoteKeySet) fetchNow(ctx context.Context) (time.Duration, error) {
	s.mu.Lock()
	s.fetching = true
	s.lastStart = time.Now()
	s.mu.Unlock()

	keys, next, err := s.fetch(ctx)
	if err == nil {
		s.keys.Store(&keys)
		handlerMetrics().jwksFetchSuccess.Inc()
	} else if ctx.Err() == nil {
		handlerMetrics().jwksFetchFailure.Inc()
	}

	s.mu.Lock()
	s.fetching = false
	ch := s.waiters
	s.waiters = nil
	s.mu.Unlock()
	if ch != nil {
		close(ch)
	}
	select { // a request's ask is answered by this fetch
	case <-s.kick:
	default:
	}
	return next, err
}

// fetch gets and parses the key set, discovering its URL first if needed.
func (s *remoteKeySet) fetch(ctx context.Context) ([]remoteKey, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, jwksFetchTimeout)
	defer cancel()
	target := s.jwksURL
	if target == "" {
		if s.discovered == "" {
			u, err := s.discover(ctx)
			if err != nil {
				return nil, 0, err
			}
			s.discovered = u
		}
		target = s.discovered
	}
	body, header, err := s.get(ctx, target)
	if err != nil {
		if s.issuer != "" {
			s.discovered = "" // discover again next time: the jwks_uri may have moved
		}
		return nil, 0, err
	}
	keys, skipped, err := parseJWKS(body)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", target, err)
	}
	if len(skipped) > 0 {
		if c := s.logger.Check(zapcore.DebugLevel, "JWKS keys ignored"); c != nil {
			c.Write(zap.String("source", s.name()), zap.Strings("reasons", skipped))
		}
	}
	return keys, refreshInterval(header), nil
}

// discover reads the issuer's OpenID Provider configuration and returns its
// jwks_uri. The document must name the configured issuer exactly (OpenID
// Connect Discovery 1.0 §4.3), else it is refused.
func (s *remoteKeySet) discover(ctx context.Context) (string, error) {
	body, _, err := s.get(ctx, strings.TrimSuffix(s.issuer, "/")+"/.well-known/openid-configuration")
	if err != nil {
		return "", err
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return "", fmt.Errorf("OIDC discovery document: %w", err)
	}
	if doc.Issuer != s.issuer {
		return "", fmt.Errorf("OIDC discovery document names issuer %q, not the configured %q: refused", doc.Issuer, s.issuer)
	}
	if err := checkRemoteURL(doc.JWKSURI); err != nil {
		return "", fmt.Errorf("OIDC discovery document: jwks_uri %q: %w", doc.JWKSURI, err)
	}
	return doc.JWKSURI, nil
}

// get fetches a JSON document of at most jwksMaxBytes.
func (s *remoteKeySet) get(ctx context.Context, target string) ([]byte, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	req.Header.Set("User-Agent", "caddy-token-auth")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("%s: HTTP status %d", req.URL.Redacted(), resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, jwksMaxBytes+1))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", req.URL.Redacted(), err)
	}
	if len(body) > jwksMaxBytes {
		return nil, nil, fmt.Errorf("%s: document larger than %d bytes", req.URL.Redacted(), jwksMaxBytes)
	}
	return body, resp.Header, nil
}

// parseJWKS reads a JSON Web Key Set and keeps the public signature keys this
// handler can use. Symmetric ("oct") keys are always dropped: a remote set
// never supplies an HMAC key. skipped says why the other keys were dropped.
func parseJWKS(body []byte) (keys []remoteKey, skipped []string, err error) {
	var set struct {
		Keys *[]json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, nil, fmt.Errorf("not a JWK set: %w", err)
	}
	if set.Keys == nil {
		return nil, nil, errors.New(`not a JWK set: no "keys" member`)
	}
	keys = []remoteKey{} // non-nil: loaded, even if empty
	for i, raw := range *set.Keys {
		k, reason := parseJWK(raw)
		if reason != "" {
			skipped = append(skipped, fmt.Sprintf("key %d: %s", i, reason))
			continue
		}
		keys = append(keys, k)
	}
	return keys, skipped, nil
}

// parseJWK turns one JWK into a usable key, or says why it is not one.
func parseJWK(raw json.RawMessage) (remoteKey, string) {
	var m jwkset.JWKMarshal
	if err := json.Unmarshal(raw, &m); err != nil {
		return remoteKey{}, "malformed"
	}
	if m.KTY == jwkset.KtyOct {
		return remoteKey{}, "symmetric (oct) keys are never taken from a remote set"
	}
	if m.USE != "" && m.USE != jwkset.UseSig {
		return remoteKey{}, fmt.Sprintf("use %q", m.USE)
	}
	if len(m.KEYOPS) > 0 && !slices.Contains(m.KEYOPS, jwkset.KeyOpsVerify) {
		return remoteKey{}, "key_ops lacks verify"
	}
	// Public parts only; x5u is never fetched (GetX5U is nil).
	jwk, err := jwkset.NewJWKFromMarshal(m, jwkset.JWKMarshalOptions{}, jwkset.JWKValidateOptions{SkipX5UScheme: true})
	if err != nil {
		return remoteKey{}, err.Error()
	}
	family, err := keyFamily(jwk.Key())
	if err != nil {
		return remoteKey{}, err.Error()
	}
	alg := string(m.ALG)
	if alg != "" && algorithmFamily[alg] != family {
		return remoteKey{}, fmt.Sprintf("alg %q does not fit a %s key", alg, family)
	}
	return remoteKey{kid: m.KID, alg: alg, family: family, key: jwk.Key()}, ""
}

// refreshInterval reads Cache-Control max-age (less Age), bounded to
// [jwksMinRefresh, jwksMaxRefresh]; no-cache and no-store mean the minimum.
func refreshInterval(h http.Header) time.Duration {
	d := jwksDefaultRefresh
	for _, line := range h.Values("Cache-Control") {
		for dir := range strings.SplitSeq(line, ",") {
			name, val, _ := strings.Cut(strings.TrimSpace(dir), "=")
			switch strings.ToLower(name) {
			case "max-age":
				if n, err := strconv.ParseInt(strings.Trim(val, `"`), 10, 64); err == nil && n >= 0 {
					d = time.Duration(min(n, int64(jwksMaxRefresh/time.Second))) * time.Second
				}
			case "no-cache", "no-store":
				return jwksMinRefresh
			}
		}
	}
	if age, err := strconv.ParseInt(h.Get("Age"), 10, 64); err == nil && age > 0 {
		d -= time.Duration(min(age, int64(jwksMaxRefresh/time.Second))) * time.Second
	}
	return min(max(d, jwksMinRefresh), jwksMaxRefresh)
}

// Interface guard
var _ keySource = (*remoteKeySet)(nil)
