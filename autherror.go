package tokenauth

import (
	"fmt"
	"net/http"
	"strings"
)

// RFC 6750 §3.1 error codes, and ours for an unreachable store.
const (
	codeInvalidRequest    = "invalid_request"
	codeInvalidToken      = "invalid_token"
	codeInsufficientScope = "insufficient_scope"
	codeStoreUnavailable  = "temporarily_unavailable"
)

// authError is a refused request: its status, RFC 6750 error code and a
// short description that never contains the credential.
type authError struct {
	status int
	code   string // "" for a request that carried no credential
	desc   string
	scope  string // for insufficient_scope
}

func (e *authError) Error() string {
	if e.code == "" {
		return e.desc
	}
	return e.code + ": " + e.desc
}

// resultIndex is the refusal's result label for metrics.
func (e *authError) resultIndex() int {
	switch {
	case e.status == http.StatusServiceUnavailable:
		return resultUnavailable
	case e.code == "":
		return resultNoCredentials
	case e.code == codeInvalidRequest:
		return resultInvalidRequest
	case e.code == codeInsufficientScope:
		return resultInsufficientScope
	}
	return resultInvalidToken
}

// errNoCredentials is a request without any credential: a bare challenge.
var errNoCredentials = &authError{status: http.StatusUnauthorized, desc: "no credentials"}

// invalidToken is a 401 invalid_token with the given reason.
func invalidToken(reason string) *authError {
	return &authError{status: http.StatusUnauthorized, code: codeInvalidToken, desc: reason}
}

// challenge renders the WWW-Authenticate value (RFC 6750 §3).
func (e *authError) challenge(realm string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `Bearer realm="%s"`, realm)
	if e.code != "" {
		fmt.Fprintf(&b, `, error="%s", error_description="%s"`, e.code, e.desc)
	}
	if e.scope != "" {
		fmt.Fprintf(&b, `, scope="%s"`, e.scope)
	}
	return b.String()
}

// validateRealm refuses realms that cannot be quoted in a header as is.
func validateRealm(realm string) error {
	for _, c := range realm {
		if c < ' ' || c == '"' || c == '\\' || c == 0x7f {
			return fmt.Errorf("realm %q: no quotes, backslashes or control characters", realm)
		}
	}
	return nil
}
