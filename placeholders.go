package tokenauth

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"
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
