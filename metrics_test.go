package tokenauth

import (
	"context"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

// counterValue reads a counter.
func counterValue(t testing.TB, c prometheus.Counter) float64 {
	t.Helper()
	return testutil.ToFloat64(c)
}

// gathered returns the series of a metric family in reg, by result label.
func gathered(t testing.TB, reg prometheus.Gatherer, name string) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			out[resultLabel(m)] = m.GetCounter().GetValue()
		}
	}
	return out
}

func resultLabel(m *dto.Metric) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == "result" {
			return l.GetValue()
		}
	}
	return ""
}

func TestRegisterMetricsTwice(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	for range 3 { // every handler of a config registers
		if err := registerMetrics(reg); err != nil {
			t.Fatalf("registerMetrics: %v", err)
		}
	}
	if err := registerMetrics(prometheus.NewPedanticRegistry()); err != nil {
		t.Fatalf("a second config's registry: %v", err)
	}
	if err := registerMetrics(nil); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"caddy_token_auth_jwks_fetches_total", "caddy_token_auth_jwt_cache_total"} {
		if n, err := testutil.GatherAndCount(reg, name); err != nil || n != 2 {
			t.Errorf("%s: %d series, %v; want 2 (one per result)", name, n, err)
		}
	}
	// A different collector under our name is a real conflict, not ignored.
	clash := prometheus.NewCounter(prometheus.CounterOpts{Name: "caddy_token_auth_jwt_cache_total", Help: "x"})
	reg2 := prometheus.NewPedanticRegistry()
	reg2.MustRegister(clash)
	if err := registerMetrics(reg2); err == nil {
		t.Fatal("a clashing collector was ignored")
	}
}

func TestMetricsThroughProvision(t *testing.T) {
	k := jkKeys()
	srv := newJKServer(t, "", jkJWK(t, k["rsa1"], "a", ""))
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	h := &TokenAuth{DB: t.TempDir() + "/t.db", JWT: &JWTConfig{JWKSURL: []string{
		srv.URL + "/jwks.json",
		"http://" + jkFreeAddr(t) + "/jwks.json", // down: a failure
	}}}
	m := handlerMetrics()
	ok0, fail0 := counterValue(t, m.jwksFetchSuccess), counterValue(t, m.jwksFetchFailure)
	hit0, miss0 := counterValue(t, m.jwtCacheHit), counterValue(t, m.jwtCacheMiss)
	if err := h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer h.Cleanup()
	tok := jkSign(t, "RS256", k["rsa1"], "a", "u", nil)
	for range 3 {
		if _, reason := jkCheck(h.verifier, tok); reason != "" {
			t.Fatal(reason)
		}
	}
	reg := ctx.GetMetricsRegistry()
	fetches := gathered(t, reg, "caddy_token_auth_jwks_fetches_total")
	cache := gathered(t, reg, "caddy_token_auth_jwt_cache_total")
	t.Logf("fetches %v, cache %v", fetches, cache)
	if fetches["success"]-ok0 < 1 || fetches["failure"]-fail0 < 1 {
		t.Fatalf("fetches %v (before: %v success, %v failure)", fetches, ok0, fail0)
	}
	if cache["hit"]-hit0 != 2 || cache["miss"]-miss0 != 1 {
		t.Fatalf("cache %v (before: %v hit, %v miss); want +2 hits, +1 miss", cache, hit0, miss0)
	}
}
