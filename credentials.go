package tokenauth

import (
	"net/http"
	"net/url"
	"strings"
)

// Credential sources, as {http.auth.token.source} reports them.
const (
	sourceQuery         = "query"
	sourceHeader        = "header"
	sourceCookie        = "cookie"
	sourceAuthorization = "authorization"
)

// errMoreThanOne is a request with credentials in two places (RFC 6750 §2).
var errMoreThanOne = &authError{status: http.StatusBadRequest, code: codeInvalidRequest, desc: "more than one credential"}

// maxCredentialLen bounds any credential; a longer one is refused with 400.
const maxCredentialLen = 8 << 10

// credential is the one credential a request carries.
type credential struct {
	value  string
	source string
	jwt    bool // a Bearer value shaped like a JWT, with jwt configured
	// for removing a query credential: the byte range of "name=value" in RawQuery
	queryStart, queryEnd int
}

// typeIndex is the credential's type for metrics.
func (c credential) typeIndex() int {
	switch {
	case c.jwt:
		return credJWT
	case c.source != "":
		return credOpaque
	}
	return credNone
}

// extractCredential finds the request's credential (RFC 6750 §2: exactly one).
// It returns the zero credential and no error when there is none.
func (h *TokenAuth) extractCredential(r *http.Request) (credential, *authError) {
	var found credential
	add := func(c credential) *authError {
		if found.source != "" {
			return errMoreThanOne
		}
		found = c
		return nil
	}
	if h.queryParam != "" && r.URL.RawQuery != "" {
		c, aerr := findQueryCredential(r.URL.RawQuery, h.queryParam)
		if aerr != nil {
			return credential{}, aerr
		}
		if c.source != "" {
			if aerr := add(c); aerr != nil {
				return credential{}, aerr
			}
		}
	}
	if h.headerKey != "" {
		switch vals := r.Header[h.headerKey]; len(vals) {
		case 0:
		case 1:
			if aerr := add(credential{value: vals[0], source: sourceHeader}); aerr != nil {
				return credential{}, aerr
			}
		default:
			return credential{}, &authError{status: http.StatusBadRequest, code: codeInvalidRequest, desc: "repeated " + h.Header + " header"}
		}
	}
	if h.Cookie != "" {
		value, n := findCookie(r.Header["Cookie"], h.Cookie)
		if n > 1 {
			return credential{}, &authError{status: http.StatusBadRequest, code: codeInvalidRequest, desc: "repeated " + h.Cookie + " cookie"}
		}
		if n == 1 {
			if aerr := add(credential{value: value, source: sourceCookie}); aerr != nil {
				return credential{}, aerr
			}
		}
	}
	bearer, n := findBearer(r.Header["Authorization"])
	if n > 1 {
		return credential{}, &authError{status: http.StatusBadRequest, code: codeInvalidRequest, desc: "repeated Authorization header"}
	}
	if n == 1 {
		c := credential{value: bearer, source: sourceAuthorization}
		c.jwt = h.verifier != nil && looksLikeJWT(bearer)
		if aerr := add(c); aerr != nil {
			return credential{}, aerr
		}
	}
	if found.source == "" {
		return found, nil
	}
	if len(found.value) > maxCredentialLen {
		return credential{}, &authError{status: http.StatusBadRequest, code: codeInvalidRequest, desc: "credential too large"}
	}
	return found, nil
}

// findQueryCredential scans a raw query for the parameter name without
// parsing the whole query. A repeated parameter is invalid_request.
func findQueryCredential(rawQuery, name string) (credential, *authError) {
	var found credential
	for start := 0; start <= len(rawQuery); {
		end := strings.IndexByte(rawQuery[start:], '&')
		if end < 0 {
			end = len(rawQuery)
		} else {
			end += start
		}
		pair := rawQuery[start:end]
		key, value, _ := strings.Cut(pair, "=")
		if queryKeyIs(key, name) {
			if found.source != "" {
				return credential{}, &authError{status: http.StatusBadRequest, code: codeInvalidRequest, desc: "repeated " + name + " parameter"}
			}
			if strings.ContainsAny(value, "%+") {
				v, err := url.QueryUnescape(value)
				if err != nil {
					return credential{}, &authError{status: http.StatusBadRequest, code: codeInvalidRequest, desc: "bad encoding of " + name + " parameter"}
				}
				value = v
			}
			found = credential{value: value, source: sourceQuery, queryStart: start, queryEnd: end}
		}
		start = end + 1
	}
	return found, nil
}

// queryKeyIs compares a raw (possibly escaped) query key with name.
func queryKeyIs(raw, name string) bool {
	if !strings.ContainsAny(raw, "%+") {
		return raw == name
	}
	k, err := url.QueryUnescape(raw)
	return err == nil && k == name
}

// removeQueryPair cuts rawQuery[start:end] and one adjacent '&', leaving the
// rest byte for byte in its order.
func removeQueryPair(rawQuery string, start, end int) string {
	switch {
	case end < len(rawQuery): // a pair follows: drop our '&' after
		return rawQuery[:start] + rawQuery[end+1:]
	case start > 0: // last pair: drop the '&' before
		return rawQuery[:start-1]
	}
	return ""
}

// findBearer returns the token of the Authorization: Bearer header and how
// many Bearer headers there are. Other schemes are not ours and are ignored.
func findBearer(values []string) (string, int) {
	var token string
	n := 0
	for _, v := range values {
		if len(v) < len("Bearer") || !strings.EqualFold(v[:len("Bearer")], "Bearer") {
			continue
		}
		rest := v[len("Bearer"):]
		if rest != "" && rest[0] != ' ' {
			continue // e.g. "Bearerx": another scheme
		}
		n++
		token = strings.TrimLeft(rest, " ")
	}
	return token, n
}

// looksLikeJWT reports whether v has the JWS compact shape: three
// dot-separated base64url parts, the first two non-empty.
func looksLikeJWT(v string) bool {
	dots, partLen := 0, 0
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == '.' {
			if partLen == 0 {
				return false
			}
			dots++
			partLen = 0
			continue
		}
		if !base64URLChar[c] {
			return false
		}
		partLen++
	}
	return dots == 2 // the signature part may be empty, as in alg=none: refused as a JWT, by name
}

// base64URLChar marks the bytes of the base64url alphabet.
var base64URLChar = func() (t [256]bool) {
	for _, c := range []byte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") {
		t[c] = true
	}
	return t
}()

// findCookie returns the value of the named cookie and how many times it appears.
func findCookie(lines []string, name string) (string, int) {
	var value string
	n := 0
	for _, line := range lines {
		for part := range strings.SplitSeq(line, ";") {
			k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
			if ok && k == name {
				n++
				value = strings.Trim(v, `"`)
			}
		}
	}
	return value, n
}

// removeCookie rewrites the Cookie header without the named cookie.
func removeCookie(h http.Header, name string) {
	var kept []string
	for _, line := range h["Cookie"] {
		for part := range strings.SplitSeq(line, ";") {
			p := strings.TrimSpace(part)
			if k, _, _ := strings.Cut(p, "="); k != name && p != "" {
				kept = append(kept, p)
			}
		}
	}
	if len(kept) == 0 {
		h.Del("Cookie")
		return
	}
	h["Cookie"] = []string{strings.Join(kept, "; ")}
}

// removeCredential deletes the credential that was used from the request,
// so it does not travel upstream.
func (h *TokenAuth) removeCredential(r *http.Request, c credential) {
	switch c.source {
	case sourceQuery:
		rest := removeQueryPair(r.URL.RawQuery, c.queryStart, c.queryEnd)
		path, _, hasQuery := strings.Cut(r.RequestURI, "?")
		switch {
		case !hasQuery:
			r.URL.RawQuery = rest
		case rest == "":
			r.URL.RawQuery, r.RequestURI = "", path
		default: // one allocation for both: RawQuery is the tail of RequestURI
			r.RequestURI = path + "?" + rest
			r.URL.RawQuery = r.RequestURI[len(path)+1:]
		}
	case sourceHeader:
		delete(r.Header, h.headerKey)
	case sourceCookie:
		removeCookie(r.Header, h.Cookie)
	case sourceAuthorization:
		removeBearer(r.Header)
	}
}

// removeBearer deletes Authorization: Bearer values, keeping any other scheme.
func removeBearer(h http.Header) {
	vals := h["Authorization"]
	if len(vals) == 1 {
		delete(h, "Authorization")
		return
	}
	kept := vals[:0:0]
	for _, v := range vals {
		if _, n := findBearer([]string{v}); n == 0 {
			kept = append(kept, v)
		}
	}
	if len(kept) == 0 {
		delete(h, "Authorization")
	} else {
		h["Authorization"] = kept
	}
}

// isPreflight reports a CORS preflight request, which carries no credentials.
func isPreflight(r *http.Request) bool {
	return r.Method == http.MethodOptions && r.Header.Get("Origin") != "" &&
		r.Header.Get("Access-Control-Request-Method") != ""
}
