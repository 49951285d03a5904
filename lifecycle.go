package tokenauth

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
)

// The token lifecycle shared by the admin API and the CLI's --db mode:
// validation of what people send, defaults, creation, rotation, import, export.

const (
	// defaultTokenLifetime applies when a create names no expiry.
	defaultTokenLifetime = 90 * 24 * time.Hour
	// importBatchSize is the number of records written per transaction on import.
	importBatchSize = 10_000
	// maxImportLine bounds one JSONL line of an import.
	maxImportLine = 1 << 20
	maxFieldLen   = 256
	maxScopes     = 64
	maxMeta       = 64
)

// CreateRequest is the body of POST /token_auth/tokens, and what the CLI's create sends.
type CreateRequest struct {
	// User is the user ID the token authenticates as. Required.
	User string `json:"user"`
	// Name is a label for people.
	Name string `json:"name,omitempty"`
	// Scopes are the permissions granted to the token.
	Scopes []string `json:"scopes,omitempty"`
	// Meta is free-form metadata, exposed as {http.auth.user.<key>}.
	Meta map[string]string `json:"meta,omitempty"`
	// ExpiresAt is an absolute expiry time (RFC 3339).
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	// ExpiresIn is a lifetime such as "720h" or "30d", or "never". Default: 90 days.
	ExpiresIn string `json:"expires_in,omitempty"`
	// Token is a caller-chosen (legacy) token value; by default a new one is generated.
	Token string `json:"token,omitempty"`
}

// createToken validates req, makes a token and stores its record. It returns
// the record and the token, which is shown this once and never stored.
func createToken(ctx context.Context, store TokenStore, req CreateRequest, now time.Time) (*TokenRecord, string, error) {
	now = now.UTC().Truncate(time.Second)
	if err := validateIdentity(req.User, req.Name, req.Scopes, req.Meta); err != nil {
		return nil, "", err
	}
	expires, err := resolveExpiry(req.ExpiresAt, req.ExpiresIn, now)
	if err != nil {
		return nil, "", err
	}
	token := req.Token
	if token == "" {
		if token, err = newToken(); err != nil {
			return nil, "", err
		}
	} else if err := validLegacyToken(token); err != nil {
		return nil, "", err
	}
	id, err := newPublicID()
	if err != nil {
		return nil, "", err
	}
	rec := &TokenRecord{
		ID: id, User: req.User, Name: req.Name, Scopes: req.Scopes, Meta: req.Meta,
		CreatedAt: now, ExpiresAt: expires,
	}
	if err := store.Insert(ctx, rec, digestOf(token)); err != nil {
		return nil, "", err
	}
	return rec, token, nil
}

// rotateToken issues a new token with the user, name, scopes and metadata of
// the token id, and the same lifetime it was created with; the old token stays
// valid for grace and is then revoked.
func rotateToken(ctx context.Context, store TokenStore, id string, grace time.Duration, now time.Time) (*TokenRecord, string, error) {
	if grace < 0 {
		return nil, "", errors.New("grace must not be negative")
	}
	now = now.UTC().Truncate(time.Second)
	old, err := store.Get(ctx, id)
	if err != nil {
		return nil, "", err
	}
	if reason := old.refusal(now); reason != "" {
		return nil, "", fmt.Errorf("cannot rotate: %s", reason)
	}
	token, err := newToken()
	if err != nil {
		return nil, "", err
	}
	newID, err := newPublicID()
	if err != nil {
		return nil, "", err
	}
	next := &TokenRecord{
		ID: newID, User: old.User, Name: old.Name, Scopes: old.Scopes, Meta: old.Meta, CreatedAt: now,
	}
	if old.ExpiresAt != nil {
		t := now.Add(old.ExpiresAt.Sub(old.CreatedAt))
		next.ExpiresAt = &t
	}
	if err := store.Rotate(ctx, id, now.Add(grace), next, digestOf(token)); err != nil {
		return nil, "", err
	}
	return next, token, nil
}

// resolveExpiry turns an absolute time or a lifetime ("never", a Caddy
// duration such as 720h or 30d, or an RFC 3339 time) into an expiry.
func resolveExpiry(at *time.Time, in string, now time.Time) (*time.Time, error) {
	switch {
	case at != nil && in != "":
		return nil, errors.New("give expires_at or expires_in, not both")
	case at != nil:
		t := at.UTC()
		return &t, nil
	}
	return parseExpiry(in, now)
}

// parseExpiry reads "" (the 90-day default), "never", a duration, or an RFC 3339 time.
func parseExpiry(s string, now time.Time) (*time.Time, error) {
	switch s {
	case "":
		t := now.Add(defaultTokenLifetime)
		return &t, nil
	case "never":
		return nil, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		t = t.UTC()
		return &t, nil
	}
	d, err := caddy.ParseDuration(s)
	if err != nil || d <= 0 {
		return nil, fmt.Errorf("expiry %q: want a positive duration (e.g. 720h, 30d), an RFC 3339 time, or never", s)
	}
	t := now.Add(d)
	return &t, nil
}

// validateIdentity checks what a token will carry into placeholders and headers.
func validateIdentity(user, name string, scopes []string, meta map[string]string) error {
	if user == "" {
		return errors.New("user is required")
	}
	if err := checkField("user", user); err != nil {
		return err
	}
	if err := checkField("name", name); err != nil {
		return err
	}
	if len(scopes) > maxScopes {
		return fmt.Errorf("at most %d scopes", maxScopes)
	}
	for _, s := range scopes {
		if s == "" || strings.ContainsAny(s, " \t") {
			return fmt.Errorf("scope %q: must be non-empty and without spaces", s)
		}
		if err := checkField("scope", s); err != nil {
			return err
		}
	}
	if len(meta) > maxMeta {
		return fmt.Errorf("at most %d metadata entries", maxMeta)
	}
	for k, v := range meta {
		if k == "" || k == "id" || strings.IndexFunc(k, func(r rune) bool {
			return !(r == '_' || r == '-' || r == '.' || ('a' <= r && r <= 'z') || ('A' <= r && r <= 'Z') || ('0' <= r && r <= '9'))
		}) >= 0 {
			return fmt.Errorf("metadata key %q: use letters, digits, '_', '-' or '.' ('id' is reserved)", k)
		}
		if err := checkField("metadata value", v); err != nil {
			return err
		}
	}
	return nil
}

// checkField refuses values that are too long or could split a header line.
func checkField(what, v string) error {
	if len(v) > maxFieldLen {
		return fmt.Errorf("%s: longer than %d bytes", what, maxFieldLen)
	}
	if !utf8.ValidString(v) || strings.ContainsFunc(v, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return fmt.Errorf("%s: must be valid UTF-8 without control characters", what)
	}
	return nil
}

// importRecords reads JSONL records (each with a legacy "token" or an exported
// "digest") and adds them in transactions of importBatchSize.
func importRecords(ctx context.Context, store TokenStore, r io.Reader, now time.Time) (ImportResult, error) {
	var total ImportResult
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), maxImportLine)
	batch := make([]ExportedRecord, 0, importBatchSize)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		res, err := store.Import(ctx, batch)
		total.Imported += res.Imported
		total.Skipped += res.Skipped
		batch = batch[:0]
		return err
	}
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		rec, err := decodeImportLine(text, now)
		if err != nil {
			return total, fmt.Errorf("line %d: %w", line, err)
		}
		batch = append(batch, rec)
		if len(batch) == importBatchSize {
			if err := flush(); err != nil {
				return total, err
			}
		}
	}
	if err := sc.Err(); err != nil {
		return total, fmt.Errorf("line %d: %w", line+1, err)
	}
	return total, flush()
}

// decodeImportLine parses and validates one import record, hashing a legacy token.
func decodeImportLine(text string, now time.Time) (ExportedRecord, error) {
	var rec ExportedRecord
	dec := json.NewDecoder(strings.NewReader(text))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rec); err != nil {
		return rec, fmt.Errorf("bad JSON: %v", err)
	}
	switch {
	case rec.Token != "" && rec.Digest != "":
		return rec, errors.New(`give "token" or "digest", not both`)
	case rec.Token != "":
		if err := validLegacyToken(rec.Token); err != nil {
			return rec, err
		}
		rec.Digest = digestOf(rec.Token).String()
		rec.Token = ""
	case rec.Digest != "":
		if _, err := parseDigest(rec.Digest); err != nil {
			return rec, err
		}
	default:
		return rec, errors.New(`each record needs "token" or "digest"`)
	}
	if err := validateIdentity(rec.User, rec.Name, rec.Scopes, rec.Meta); err != nil {
		return rec, err
	}
	if rec.ID == "" {
		id, err := newPublicID()
		if err != nil {
			return rec, err
		}
		rec.ID = id
	} else if err := checkField("id", rec.ID); err != nil {
		return rec, err
	}
	if rec.CreatedAt.IsZero() {
		rec.CreatedAt = now.UTC().Truncate(time.Second)
	}
	return rec, nil
}

// exportRecords writes every record with its digest as JSONL. Never a token.
func exportRecords(ctx context.Context, store TokenStore, w io.Writer) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	err := store.Export(ctx, func(e ExportedRecord) error {
		e.Token = ""
		return enc.Encode(e)
	})
	if err != nil {
		return err
	}
	return bw.Flush()
}
