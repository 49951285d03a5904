package tokenauth

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Prometheus metrics of the handler. The collectors are created once per
// process and registered with the metrics registry of every config that uses
// the handler (each config has its own registry; see registerMetrics).
// Labels take a few fixed values only: never a token, a user, a client
// address or a URL.
//
// To add a metric: a field below, its construction in initMetrics, and an
// entry in collectors.
type tokenAuthMetrics struct {
	// caddy_token_auth_requests_total{result, type}: every request the
	// handler decided on, by outcome and credential type.
	requests *prometheus.CounterVec
	// byOutcome holds the children of requests, so that counting a request
	// is one atomic add: [result][credential type].
	byOutcome [numResults][numCredTypes]prometheus.Counter

	// caddy_token_auth_store_errors_total: token store lookups that failed
	// (not "unknown token": the store could not answer).
	storeErrors prometheus.Counter

	// caddy_token_auth_jwks_fetches_total{result="success|failure"}
	jwksFetches      *prometheus.CounterVec
	jwksFetchSuccess prometheus.Counter
	jwksFetchFailure prometheus.Counter

	// caddy_token_auth_jwt_cache_total{result="hit|miss"}
	jwtCache     *prometheus.CounterVec
	jwtCacheHit  prometheus.Counter
	jwtCacheMiss prometheus.Counter
}

const metricsNamespace, metricsSubsystem = "caddy", "token_auth"

var (
	metricsOnce sync.Once
	metricsSet  tokenAuthMetrics
)

// handlerMetrics returns the package's collectors, creating them on first use.
func handlerMetrics() *tokenAuthMetrics {
	metricsOnce.Do(initMetrics)
	return &metricsSet
}

// Values of the result label of caddy_token_auth_requests_total.
const (
	resultOK                = iota // authenticated and passed on
	resultAnonymous                // no credential, optional: passed on
	resultNoCredentials            // no credential: 401
	resultInvalidToken             // 401 invalid_token
	resultInvalidRequest           // 400 invalid_request
	resultInsufficientScope        // 403
	resultUnavailable              // 503: the store could not be reached
	numResults
)

var resultNames = [numResults]string{"ok", "anonymous", "no_credentials", "invalid_token", "invalid_request", "insufficient_scope", "unavailable"}

// Values of the type label: the credential's type.
const (
	credNone = iota
	credOpaque
	credJWT
	numCredTypes
)

var credTypeNames = [numCredTypes]string{"none", "opaque", "jwt"}

// countRequest counts one decided request.
func (m *tokenAuthMetrics) countRequest(result, credType int) {
	m.byOutcome[result][credType].Inc()
}

func initMetrics() {
	m := &metricsSet
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Subsystem: metricsSubsystem,
		Name:      "requests_total",
		Help:      "Requests decided by token_auth, by result and credential type.",
	}, []string{"result", "type"})
	for r := range numResults {
		for c := range numCredTypes {
			m.byOutcome[r][c] = m.requests.WithLabelValues(resultNames[r], credTypeNames[c])
		}
	}
	m.storeErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Subsystem: metricsSubsystem,
		Name:      "store_errors_total",
		Help:      "Token store lookups that failed because the store could not answer.",
	})

	m.jwksFetches = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Subsystem: metricsSubsystem,
		Name:      "jwks_fetches_total",
		Help:      "Fetches of remote JWT signing key sets (jwks_url, OIDC discovery), by result.",
	}, []string{"result"})
	m.jwksFetchSuccess = m.jwksFetches.WithLabelValues("success")
	m.jwksFetchFailure = m.jwksFetches.WithLabelValues("failure")

	m.jwtCache = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Subsystem: metricsSubsystem,
		Name:      "jwt_cache_total",
		Help:      "Lookups of JWTs in the cache of verified tokens, by result.",
	}, []string{"result"})
	m.jwtCacheHit = m.jwtCache.WithLabelValues("hit")
	m.jwtCacheMiss = m.jwtCache.WithLabelValues("miss")
}

// collectors lists what registerMetrics registers.
func (m *tokenAuthMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.storeErrors, m.jwksFetches, m.jwtCache}
}

// registerMetrics registers the collectors with a config's registry
// (caddy.Context.GetMetricsRegistry). Registering again, as every handler of
// a config does, is not an error.
func registerMetrics(reg *prometheus.Registry) error {
	if reg == nil {
		return nil
	}
	for _, c := range handlerMetrics().collectors() {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return err
			}
		}
	}
	return nil
}
