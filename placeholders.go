package tokenauth

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
)

// Placeholder names and namespaces set by the handler.
const (
	phUserID      = "http.auth.user.id"
	phTokenType   = "http.auth.token.type"
	phTokenSource = "http.auth.token.source"
	phTokenID     = "http.auth.token.id"
	phTokenName   = "http.auth.token.name"
	phTokenScopes = "http.auth.token.scopes"
	phError       = "http.auth.token_auth.error"
	phErrorDesc   = "http.auth.token_auth.error_description"
)

// emptyAuthPlaceholders answers every placeholder of our namespaces that the
// handler did not set with "", so that {http.auth.jwt.missing} in a header
// sent upstream is empty instead of its own literal text. Values set with
// Replacer.Set are found first.
func emptyAuthPlaceholders(key string) (any, bool) {
	if strings.HasPrefix(key, "http.auth.") {
		rest := key[len("http.auth."):]
		if strings.HasPrefix(rest, "user.") || strings.HasPrefix(rest, "token.") ||
			strings.HasPrefix(rest, "jwt.") || strings.HasPrefix(rest, "token_auth.") {
			return "", true
		}
	}
	return nil, false
}

// opaquePlaceholders answers the http.auth.* placeholders of a request
// authenticated by an opaque token. Values are looked up only when a
// placeholder is used, so an authenticated request costs one allocation here.
func opaquePlaceholders(rec *TokenRecord, source string) caddy.ReplacerFunc {
	return func(key string) (any, bool) {
		switch key {
		case phUserID:
			return rec.User, true
		case phTokenType:
			return "opaque", true
		case phTokenSource:
			return source, true
		case phTokenID:
			return rec.ID, true
		case phTokenName:
			return rec.Name, true
		case phTokenScopes:
			return rec.scopesJoined, true
		}
		if k, ok := strings.CutPrefix(key, "http.auth.user."); ok {
			if v, ok := rec.Meta[k]; ok {
				return v, true
			}
		}
		return emptyAuthPlaceholders(key)
	}
}

// jwtPlaceholders answers the http.auth.* placeholders of a request
// authenticated by a JWT, including {http.auth.jwt.<claim>}.
func jwtPlaceholders(id *jwtIdentity, source string) caddy.ReplacerFunc {
	return func(key string) (any, bool) {
		switch key {
		case phUserID:
			return id.user, true
		case phTokenType:
			return "jwt", true
		case phTokenSource:
			return source, true
		case phTokenID:
			return id.jti, true
		case phTokenScopes:
			return id.scopesText, true
		}
		if k, ok := strings.CutPrefix(key, "http.auth.jwt."); ok {
			if v, ok := id.claims[k]; ok {
				return v, true
			}
		}
		return emptyAuthPlaceholders(key)
	}
}

// formatClaim renders a JWT claim for a placeholder: strings as is, integers
// in plain decimal, booleans, arrays joined by ",", objects as JSON.
func formatClaim(v any) string {
	switch c := v.(type) {
	case nil:
		return ""
	case string:
		return c
	case json.Number:
		return formatNumber(c)
	case bool:
		return strconv.FormatBool(c)
	case []any:
		parts := make([]string, len(c))
		for i, e := range c {
			parts[i] = formatClaim(e)
		}
		return strings.Join(parts, ",")
	default:
		b, err := json.Marshal(c)
		if err != nil {
			return ""
		}
		return string(b)
	}
}

// formatNumber writes a JSON number in plain decimal: 12345678901, never 1.2345678901e+10.
func formatNumber(n json.Number) string {
	s := n.String()
	if isPlainInteger(s) {
		return s // exact, even beyond int64
	}
	f, err := n.Float64()
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return s
	}
	return strconv.FormatFloat(f, 'f', -1, 64)
}

func isPlainInteger(s string) bool {
	if strings.HasPrefix(s, "-") {
		s = s[1:]
	}
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
