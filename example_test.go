package tokenauth

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

// TestCaddyfileExampleAdapts: Caddyfile.example, which the README tells
// people to run, adapts without warnings and puts token_auth in front of
// reverse_proxy, with the query filter that keeps tokens out of the log.
func TestCaddyfileExampleAdapts(t *testing.T) {
	body, err := os.ReadFile("Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	cfg, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt(body, map[string]any{"filename": "Caddyfile.example"})
	if err != nil {
		t.Fatalf("adapting Caddyfile.example: %v", err)
	}
	if len(warnings) > 0 {
		t.Fatalf("warnings: %v", warnings)
	}
	var pretty map[string]any
	if err := json.Unmarshal(cfg, &pretty); err != nil {
		t.Fatal(err)
	}
	s := string(cfg)
	for _, want := range []string{`"handler":"token_auth"`, `"handler":"reverse_proxy"`, `"request\u003euri"`, `"delete"`} {
		if !strings.Contains(s, want) {
			t.Errorf("adapted config lacks %s", want)
		}
	}
	if strings.Index(s, `"handler":"token_auth"`) > strings.Index(s, `"handler":"reverse_proxy"`) {
		t.Error("token_auth does not come before reverse_proxy")
	}
}
