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

func initMetrics() {
	m := &metricsSet
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
	return []prometheus.Collector{m.jwksFetches, m.jwtCache}
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
