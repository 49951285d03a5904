package tokenauth

import (
	"context"
	"errors"
	"strings"
	"time"
)

// TokenStore keeps token records, each found by the SHA-256 digest of its token
// and by its public ID. The token itself is never given to a store.
// Implementations must be safe for concurrent use. The bbolt store is the
// embedded default; a shared backend implements the same interface.
type TokenStore interface {
	// Lookup returns the record whose token has this digest, or ErrTokenNotFound.
	// It is on the request path: it must be fast, and the record it returns is
	// shared and must not be modified.
	Lookup(ctx context.Context, digest Digest) (*TokenRecord, error)
	// MarkUsed notes that a token was used at t. It must not write per call:
	// stores batch these and write them every few seconds, and on Close.
	MarkUsed(id string, t time.Time)

	// Insert adds a record under digest; it fails with ErrTokenExists if the digest or ID is taken.
	Insert(ctx context.Context, rec *TokenRecord, digest Digest) error
	// Get returns the record with this public ID, or ErrTokenNotFound.
	Get(ctx context.Context, id string) (*TokenRecord, error)
	// List returns every record, or only those of user if it is not empty, oldest first.
	List(ctx context.Context, user string) ([]*TokenRecord, error)
	// Revoke sets the record's revocation time to at (unless it is already revoked
	// earlier) and returns the updated record, or ErrTokenNotFound.
	Revoke(ctx context.Context, id string, at time.Time) (*TokenRecord, error)
	// RevokeUser revokes every token of user that is not yet revoked and returns how many.
	RevokeUser(ctx context.Context, user string, at time.Time) (int, error)
	// Rotate inserts next under nextDigest and revokes the record oldID at oldRevokeAt, atomically.
	Rotate(ctx context.Context, oldID string, oldRevokeAt time.Time, next *TokenRecord, nextDigest Digest) error
	// Import adds a batch of records in one transaction. Records whose digest or ID
	// is already present are skipped and counted, not overwritten.
	Import(ctx context.Context, batch []ExportedRecord) (ImportResult, error)
	// Export calls fn for every record with its digest, oldest first.
	Export(ctx context.Context, fn func(ExportedRecord) error) error
}

// Errors a TokenStore returns.
var (
	ErrTokenNotFound = errors.New("no such token")
	ErrTokenExists   = errors.New("token already exists")
	// ErrStoreUnavailable wraps failures to reach a store; requests then get 503.
	ErrStoreUnavailable = errors.New("token store unavailable")
)

// TokenRecord is what a store keeps about a token. It never holds the token.
type TokenRecord struct {
	// ID is the token's public identifier, e.g. tok_3fK9aZ0bQ1xY.
	ID string `json:"id"`
	// User is the ID of the user the token authenticates as.
	User string `json:"user"`
	// Name is a label for people, e.g. "CI deploy key".
	Name string `json:"name,omitempty"`
	// Scopes are the permissions granted to the token.
	Scopes []string `json:"scopes,omitempty"`
	// Meta holds free-form metadata, exposed as {http.auth.user.<key>}.
	Meta map[string]string `json:"meta,omitempty"`
	// CreatedAt is when the token was created.
	CreatedAt time.Time `json:"created_at"`
	// ExpiresAt is when the token stops working; null means never.
	ExpiresAt *time.Time `json:"expires_at"`
	// LastUsedAt is when the token last authenticated a request, to within a few seconds.
	LastUsedAt *time.Time `json:"last_used_at"`
	// RevokedAt is when the token was, or will be (after a rotation grace period), revoked.
	RevokedAt *time.Time `json:"revoked_at"`

	// derived on the request path's behalf, once per decoded record
	scopesJoined string
	lastMarked   int64 // unix nanoseconds of the last MarkUsed call for this cached record; atomic
}

// ExportedRecord is a record with its digest: one line of an export, and what
// import reads back. A line may carry a legacy Token instead of a Digest.
type ExportedRecord struct {
	TokenRecord
	// Digest is the hex SHA-256 of the token.
	Digest string `json:"digest,omitempty"`
	// Token is a plaintext legacy token to import; it is hashed and never stored.
	Token string `json:"token,omitempty"`
}

// ImportResult counts what an import did.
type ImportResult struct {
	// Imported is the number of records added.
	Imported int `json:"imported"`
	// Skipped is the number of records already present (same digest or ID).
	Skipped int `json:"skipped"`
}

// refusal returns why the token may not be used at now, or "" if it may.
func (r *TokenRecord) refusal(now time.Time) string {
	if r.RevokedAt != nil && !now.Before(*r.RevokedAt) {
		return "token revoked"
	}
	if r.ExpiresAt != nil && !now.Before(*r.ExpiresAt) {
		return "token expired"
	}
	return ""
}

// prepare computes the values the request path needs from a record, so that a
// cached record costs no allocation per request. Call it before sharing r.
func (r *TokenRecord) prepare() *TokenRecord {
	r.scopesJoined = strings.Join(r.Scopes, " ")
	return r
}
