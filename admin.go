package tokenauth

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// adminAPI is the admin module admin.api.token_auth: it manages the tokens of
// the stores that running token_auth handlers hold open (SPEC §3):
//
//	POST   /token_auth/tokens              create; 201 with the record and "token"
//	GET    /token_auth/tokens[?user=]      list records (never a secret)
//	GET    /token_auth/tokens/{id}         one record; 404 if none
//	DELETE /token_auth/tokens/{id}         revoke; 204; 404 if none
//	DELETE /token_auth/tokens?user=<id>    revoke all of a user's tokens; 200 {"revoked":N}
//	POST   /token_auth/tokens/{id}/rotate  body {"grace":"24h"}; 201 with the new record and "token"
//	POST   /token_auth/import              JSONL body; 200 {"imported":N,"skipped":M}
//	GET    /token_auth/export              JSONL of every record with its digest
//
// Every route takes ?db=<path> to choose the store when more than one is open.
//
// Admin modules are provisioned before the apps, so the store is looked up
// in the shared pool on every request, never kept.
type adminAPI struct{}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.token_auth",
		New: func() caddy.Module { return new(adminAPI) },
	}
}

const (
	// adminEndpointBase is the prefix of every token_auth admin route.
	adminEndpointBase = "/token_auth/"
	// maxAdminBody bounds the JSON body of create and rotate.
	maxAdminBody = 1 << 20
	// maxImportBody bounds a JSONL import sent to the admin API.
	maxImportBody = 1 << 30
)

// Routes returns the admin routes of token_auth.
func (a *adminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{
		Pattern: adminEndpointBase,
		Handler: caddy.AdminHandlerFunc(a.handleAPI),
	}}
}

// issuedToken is a record with its token, shown once: the answer to create and rotate.
type issuedToken struct {
	TokenRecord
	// Token is the new token's value. It is not stored and cannot be shown again.
	Token string `json:"token"`
}

// rotateRequest is the body of POST /token_auth/tokens/{id}/rotate.
type rotateRequest struct {
	// Grace is how long the old token stays valid, e.g. "24h"; default 0 (revoked at once).
	Grace string `json:"grace,omitempty"`
}

// revokeUserResult is the answer to DELETE /token_auth/tokens?user=<id>.
type revokeUserResult struct {
	// Revoked is how many tokens were revoked.
	Revoked int `json:"revoked"`
}

// handleAPI routes a request by its exact path segments below /token_auth/.
func (a *adminAPI) handleAPI(w http.ResponseWriter, r *http.Request) error {
	parts, err := pathSegments(strings.TrimPrefix(r.URL.EscapedPath(), adminEndpointBase))
	if err != nil {
		return apiError(http.StatusBadRequest, err)
	}
	switch {
	case len(parts) == 1 && parts[0] == "tokens":
		switch r.Method {
		case http.MethodGet:
			return a.handleList(w, r)
		case http.MethodPost:
			return a.handleCreate(w, r)
		case http.MethodDelete:
			return a.handleRevokeUser(w, r)
		}
		return methodNotAllowed(w, r, http.MethodGet, http.MethodPost, http.MethodDelete)
	case len(parts) == 2 && parts[0] == "tokens" && parts[1] != "":
		switch r.Method {
		case http.MethodGet:
			return a.handleShow(w, r, parts[1])
		case http.MethodDelete:
			return a.handleRevoke(w, r, parts[1])
		}
		return methodNotAllowed(w, r, http.MethodGet, http.MethodDelete)
	case len(parts) == 3 && parts[0] == "tokens" && parts[1] != "" && parts[2] == "rotate":
		if r.Method != http.MethodPost {
			return methodNotAllowed(w, r, http.MethodPost)
		}
		return a.handleRotate(w, r, parts[1])
	case len(parts) == 1 && parts[0] == "import":
		if r.Method != http.MethodPost {
			return methodNotAllowed(w, r, http.MethodPost)
		}
		return a.handleImport(w, r)
	case len(parts) == 1 && parts[0] == "export":
		if r.Method != http.MethodGet {
			return methodNotAllowed(w, r, http.MethodGet)
		}
		return a.handleExport(w, r)
	}
	return apiError(http.StatusNotFound, fmt.Errorf("resource not found: %s", r.URL.Path))
}

// pathSegments splits an escaped path into unescaped segments, so that a
// token ID may hold any character.
func pathSegments(escaped string) ([]string, error) {
	parts := strings.Split(escaped, "/")
	for i, p := range parts {
		u, err := url.PathUnescape(p)
		if err != nil {
			return nil, fmt.Errorf("bad path segment %q: %v", p, err)
		}
		parts[i] = u
	}
	return parts, nil
}

func (a *adminAPI) handleCreate(w http.ResponseWriter, r *http.Request) error {
	store, err := storeForRequest(r)
	if err != nil {
		return err
	}
	var req CreateRequest
	if err := decodeBody(w, r, &req, false); err != nil {
		return err
	}
	now := time.Now()
	// Validate first, so that what the caller got wrong is a 400 and what
	// the store fails at is a 5xx.
	if err := validateCreate(req, now); err != nil {
		return apiError(http.StatusBadRequest, err)
	}
	rec, token, err := createToken(r.Context(), store, req, now)
	if err != nil {
		return storeError(err)
	}
	return writeJSON(w, http.StatusCreated, issuedToken{TokenRecord: *rec, Token: token})
}

// validateCreate checks a create request without touching a store.
func validateCreate(req CreateRequest, now time.Time) error {
	if err := validateIdentity(req.User, req.Name, req.Scopes, req.Meta); err != nil {
		return err
	}
	if _, err := resolveExpiry(req.ExpiresAt, req.ExpiresIn, now); err != nil {
		return err
	}
	if req.Token != "" {
		return validLegacyToken(req.Token)
	}
	return nil
}

func (a *adminAPI) handleList(w http.ResponseWriter, r *http.Request) error {
	store, err := storeForRequest(r)
	if err != nil {
		return err
	}
	recs, err := store.List(r.Context(), r.URL.Query().Get("user"))
	if err != nil {
		return storeError(err)
	}
	if recs == nil {
		recs = []*TokenRecord{}
	}
	return writeJSON(w, http.StatusOK, recs)
}

func (a *adminAPI) handleShow(w http.ResponseWriter, r *http.Request, id string) error {
	store, err := storeForRequest(r)
	if err != nil {
		return err
	}
	rec, err := store.Get(r.Context(), id)
	if err != nil {
		return storeError(tokenError(err, id))
	}
	return writeJSON(w, http.StatusOK, rec)
}

func (a *adminAPI) handleRevoke(w http.ResponseWriter, r *http.Request, id string) error {
	store, err := storeForRequest(r)
	if err != nil {
		return err
	}
	if _, err := store.Revoke(r.Context(), id, revocationTime()); err != nil {
		return storeError(tokenError(err, id))
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *adminAPI) handleRevokeUser(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	if !q.Has("user") || q.Get("user") == "" {
		return apiError(http.StatusBadRequest,
			errors.New("to revoke all of a user's tokens give ?user=<id>; to revoke one token, DELETE /token_auth/tokens/<id>"))
	}
	store, err := storeForRequest(r)
	if err != nil {
		return err
	}
	n, err := store.RevokeUser(r.Context(), q.Get("user"), revocationTime())
	if err != nil {
		return storeError(err)
	}
	return writeJSON(w, http.StatusOK, revokeUserResult{Revoked: n})
}

func (a *adminAPI) handleRotate(w http.ResponseWriter, r *http.Request, id string) error {
	store, err := storeForRequest(r)
	if err != nil {
		return err
	}
	var req rotateRequest
	if err := decodeBody(w, r, &req, true); err != nil {
		return err
	}
	grace, err := parseGrace(req.Grace)
	if err != nil {
		return apiError(http.StatusBadRequest, err)
	}
	now := time.Now()
	old, err := store.Get(r.Context(), id)
	if err != nil {
		return storeError(tokenError(err, id))
	}
	if reason := old.refusal(now); reason != "" {
		return apiError(http.StatusConflict, fmt.Errorf("cannot rotate %s: %s", id, reason))
	}
	rec, token, err := rotateToken(r.Context(), store, id, grace, now)
	if err != nil {
		return storeError(tokenError(err, id))
	}
	return writeJSON(w, http.StatusCreated, issuedToken{TokenRecord: *rec, Token: token})
}

// parseGrace reads a rotation grace period: "" (none) or a non-negative Caddy duration.
func parseGrace(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := caddy.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("grace %q: want a non-negative duration such as 24h or 7d", s)
	}
	return d, nil
}

func (a *adminAPI) handleImport(w http.ResponseWriter, r *http.Request) error {
	store, err := storeForRequest(r)
	if err != nil {
		return err
	}
	body := http.MaxBytesReader(w, r.Body, maxImportBody)
	res, err := importRecords(r.Context(), store, body, time.Now())
	if err != nil {
		status := http.StatusBadRequest
		if errors.Is(err, ErrStoreUnavailable) {
			status = http.StatusServiceUnavailable
		}
		return apiError(status, fmt.Errorf("import stopped after %d imported and %d skipped: %w", res.Imported, res.Skipped, err))
	}
	return writeJSON(w, http.StatusOK, res)
}

func (a *adminAPI) handleExport(w http.ResponseWriter, r *http.Request) error {
	store, err := storeForRequest(r)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	// Once the first line is out the status is sent; a later failure can
	// only cut the stream short (and is logged by the admin server).
	return exportRecords(r.Context(), store, w)
}

// storeForRequest finds the open store the request is about: the one named
// by ?db=<path>, or the only one open.
func storeForRequest(r *http.Request) (TokenStore, error) {
	stores := openStores()
	if db := r.URL.Query().Get("db"); db != "" {
		if s, ok := stores[db]; ok { // a key as listed, e.g. a postgres: store
			return s, nil
		}
		abs, err := filepath.Abs(db)
		if err != nil {
			return nil, apiError(http.StatusBadRequest, fmt.Errorf("db %q: %v", db, err))
		}
		if s, ok := stores[abs]; ok {
			return s, nil
		}
		return nil, apiError(http.StatusNotFound, fmt.Errorf("no token_auth store is open at %s; open: %s", abs, describeKeys(openStoreKeys())))
	}
	switch len(stores) {
	case 0:
		return nil, apiError(http.StatusNotFound, errors.New("no token_auth store is open in this config"))
	case 1:
		for _, s := range stores {
			return s, nil
		}
	}
	return nil, apiError(http.StatusBadRequest,
		fmt.Errorf("more than one token_auth store is open; choose one with ?db=<path>: %s", describeKeys(openStoreKeys())))
}

func describeKeys(keys []string) string {
	if len(keys) == 0 {
		return "none"
	}
	return strings.Join(keys, ", ")
}

// revocationTime is the time a revoke takes effect: now, to the second, so
// that every request that starts after the response sees the token revoked.
func revocationTime() time.Time {
	return time.Now().UTC().Truncate(time.Second)
}

// decodeBody reads a JSON body of at most maxAdminBody bytes into v,
// refusing unknown fields. An empty body is accepted if emptyOK.
func decodeBody(w http.ResponseWriter, r *http.Request, v any, emptyOK bool) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAdminBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return apiError(http.StatusRequestEntityTooLarge, fmt.Errorf("request body larger than %d bytes", maxAdminBody))
		}
		return apiError(http.StatusBadRequest, fmt.Errorf("reading request body: %v", err))
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		if emptyOK {
			return nil
		}
		return apiError(http.StatusBadRequest, errors.New("request body is empty; want a JSON object"))
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return apiError(http.StatusBadRequest, fmt.Errorf("bad JSON body: %v", err))
	}
	if dec.More() {
		return apiError(http.StatusBadRequest, errors.New("bad JSON body: more than one value"))
	}
	return nil
}

// writeJSON sends v as the JSON response with status.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return apiError(http.StatusInternalServerError, err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
	return nil
}

// tokenError names the token a not-found error is about.
func tokenError(err error, id string) error {
	if errors.Is(err, ErrTokenNotFound) {
		return fmt.Errorf("%w: %s", ErrTokenNotFound, id)
	}
	return err
}

// storeError maps a store's error to an API error.
func storeError(err error) error {
	switch {
	case errors.Is(err, ErrTokenNotFound):
		return apiError(http.StatusNotFound, err)
	case errors.Is(err, ErrTokenExists):
		return apiError(http.StatusConflict, err)
	case errors.Is(err, ErrStoreUnavailable):
		return apiError(http.StatusServiceUnavailable, err)
	}
	return apiError(http.StatusInternalServerError, err)
}

func apiError(status int, err error) error {
	return caddy.APIError{HTTPStatus: status, Err: err}
}

func methodNotAllowed(w http.ResponseWriter, r *http.Request, allowed ...string) error {
	w.Header().Set("Allow", strings.Join(allowed, ", "))
	return apiError(http.StatusMethodNotAllowed, fmt.Errorf("method %s not allowed on %s", r.Method, r.URL.Path))
}

// Interface guards
var (
	_ caddy.Module      = (*adminAPI)(nil)
	_ caddy.AdminRouter = (*adminAPI)(nil)
)
