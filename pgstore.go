package tokenauth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(PostgresStoreModule{})
}

// PostgresStoreModule is the shared token store: one PostgreSQL database that
// many Caddy instances use at once. Each instance caches lookups in memory
// for at most cache_ttl and evicts a cached token within a second of any
// change to its row (LISTEN/NOTIFY), including changes made with plain SQL.
// The plugin creates and migrates its tables itself. If the database cannot
// be reached, opaque tokens are answered with 503 until it is back; Caddy
// still starts and serves everything else.
type PostgresStoreModule struct {
	// DSN is the connection string: a URL such as
	// postgres://caddy:secret@db.internal:5432/app?sslmode=verify-full, or
	// key=value pairs ("host=db user=caddy dbname=app"). Placeholders such as
	// {env.TOKEN_AUTH_DSN} are resolved at load. Required. Pool settings such
	// as pool_max_conns may be given in it (default: max(4, CPUs)
	// connections per Caddy process). The password is never logged.
	DSN string `json:"dsn,omitempty"`
	// CacheTTL is how long a looked-up token may be served from memory
	// without asking the database again. Notifications evict changed tokens
	// sooner; the TTL bounds staleness when a notification is lost. Default:
	// 5s; at most 10s.
	CacheTTL caddy.Duration `json:"cache_ttl,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (PostgresStoreModule) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.token_auth.stores.postgres",
		New: func() caddy.Module { return new(PostgresStoreModule) },
	}
}

// AcquireStore implements StoreBackend. The connection pool is shared by
// every config of this process that names the same DSN; the newest config's
// cache_ttl applies to it.
func (m *PostgresStoreModule) AcquireStore(caddy.Context) (TokenStore, string, error) {
	ttl := time.Duration(m.CacheTTL)
	switch {
	case ttl == 0:
		ttl = pgDefaultCacheTTL
	case ttl < 0 || ttl > pgMaxCacheTTL:
		return nil, "", fmt.Errorf("postgres store: cache_ttl must be between 0 and %s", pgMaxCacheTTL)
	}
	dsn := caddy.NewReplacer().ReplaceKnown(m.DSN, "")
	if strings.TrimSpace(dsn) == "" {
		return nil, "", errors.New("postgres store: dsn is required")
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, "", fmt.Errorf("postgres store: %w", err) // pgconn redacts the password
	}
	key := pgPoolKey(dsn, cfg.ConnConfig.Password)
	val, _, err := storePool.LoadOrNew(key, func() (caddy.Destructor, error) {
		s, err := openPgStore(cfg, key, ttl, caddy.Log().Named("http.handlers.token_auth.stores.postgres"))
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), pgStartupTimeout)
		defer cancel()
		if err := s.ensureSchema(ctx); err != nil {
			if pgFatalAtStart(err) {
				_ = s.Close()
				return nil, fmt.Errorf("postgres store %s: %w", key, err)
			}
			s.logger.Warn("token database unreachable; opaque tokens get 503 until it is back",
				zap.String("store", key), zap.Error(err))
		}
		return s, nil
	})
	if err != nil {
		return nil, "", err
	}
	s := val.(*pgStore)
	s.ttl.Store(int64(ttl))
	return s, key, nil
}

const (
	// pgDefaultCacheTTL and pgMaxCacheTTL bound how long a record is served from memory.
	pgDefaultCacheTTL = 5 * time.Second
	pgMaxCacheTTL     = 10 * time.Second
	// pgUnlistenedTTL replaces the TTL while no LISTEN connection is up, so a
	// change still reaches this instance within a second.
	pgUnlistenedTTL = 500 * time.Millisecond
	// pgLookupTimeout bounds a cache miss, so that requests get 503 quickly
	// when the database is unreachable.
	pgLookupTimeout = 2 * time.Second
	// pgOpTimeout bounds management operations (create, revoke, ...).
	pgOpTimeout = 10 * time.Second
	// pgStartupTimeout bounds the schema check while Caddy loads a config.
	pgStartupTimeout = 2 * time.Second
	// pgConnectTimeout applies when the DSN gives no connect_timeout.
	pgConnectTimeout = 5 * time.Second
	// pgListenPing is how long the LISTEN connection may be silent before it is pinged.
	pgListenPing = 15 * time.Second
	// pgBackoffMin and pgBackoffMax bound the wait between LISTEN reconnects.
	pgBackoffMin = 100 * time.Millisecond
	pgBackoffMax = 5 * time.Second
	// pgChannel is the NOTIFY channel; the payload is a changed digest in hex, or "*".
	pgChannel = "token_auth_changes"
	// pgSchemaLock is the advisory lock key that serialises migrations (ASCII "tokenaut").
	pgSchemaLock = 0x746f6b656e617574
)

// pgMigrations are applied in order, each in the transaction that records
// its number in token_auth_schema_version. Never edit one; append.
var pgMigrations = []string{
	1: `
CREATE TABLE IF NOT EXISTS token_auth_tokens (
	digest       bytea PRIMARY KEY CHECK (length(digest) = 32),
	id           text NOT NULL UNIQUE,
	user_id      text NOT NULL,
	name         text NOT NULL DEFAULT '',
	scopes       text[] NOT NULL DEFAULT '{}',
	meta         jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(meta) = 'object'),
	created_at   timestamptz NOT NULL DEFAULT now(),
	expires_at   timestamptz,
	last_used_at timestamptz,
	revoked_at   timestamptz
);
CREATE INDEX IF NOT EXISTS token_auth_tokens_user_id ON token_auth_tokens (user_id);

CREATE OR REPLACE FUNCTION token_auth_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP = 'TRUNCATE' THEN
		PERFORM pg_notify('token_auth_changes', '*');
		RETURN NULL;
	END IF;
	IF TG_OP IN ('UPDATE', 'DELETE') THEN
		PERFORM pg_notify('token_auth_changes', encode(OLD.digest, 'hex'));
	END IF;
	IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.digest <> OLD.digest) THEN
		PERFORM pg_notify('token_auth_changes', encode(NEW.digest, 'hex'));
	END IF;
	RETURN NULL;
END
$$;

-- last_used_at alone changes nothing a lookup decides on: no notification.
DROP TRIGGER IF EXISTS token_auth_tokens_notify ON token_auth_tokens;
CREATE TRIGGER token_auth_tokens_notify
	AFTER INSERT OR DELETE OR UPDATE OF digest, id, user_id, name, scopes, meta, created_at, expires_at, revoked_at
	ON token_auth_tokens FOR EACH ROW EXECUTE FUNCTION token_auth_notify();
DROP TRIGGER IF EXISTS token_auth_tokens_notify_truncate ON token_auth_tokens;
CREATE TRIGGER token_auth_tokens_notify_truncate
	AFTER TRUNCATE ON token_auth_tokens FOR EACH STATEMENT EXECUTE FUNCTION token_auth_notify();
`,
}

// pgSchemaVersion is the schema this build writes and understands.
var pgSchemaVersion = len(pgMigrations) - 1

// errPgSchemaNewer means another, newer build migrated the database.
var errPgSchemaNewer = errors.New("token_auth schema in the database is newer than this build understands")

const pgColumns = `id, user_id, name, scopes, meta, created_at, expires_at, last_used_at, revoked_at`

// pgStore is the PostgreSQL TokenStore: a pgx pool (one per DSN per
// process, shared across reloads through storePool), a TTL-bounded cache of
// records for the request path that a LISTEN connection keeps fresh, and a
// batcher for last_used_at.
type pgStore struct {
	key       string // storePool key; never holds the password
	pool      *pgxpool.Pool
	listenCfg *pgx.ConnConfig
	logger    *zap.Logger
	ttl       atomic.Int64 // time.Duration

	cacheMu  sync.RWMutex
	cache    map[Digest]pgCacheEntry
	cacheGen uint64 // bumped on every eviction, so a Lookup that read before it does not cache what it read

	listening   atomic.Bool   // a LISTEN connection is up
	listenerPID atomic.Uint32 // its backend PID, for tests and logs

	schemaMu      sync.Mutex
	schemaReady   atomic.Bool
	schemaAttempt *pgSchemaAttempt // in flight, or nil
	closed        bool             // under schemaMu: no new goroutines

	used lastUsedBatch // pending last_used_at

	ctx       context.Context // canceled by Close; parent of all background work
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

type pgCacheEntry struct {
	rec     *TokenRecord
	expires time.Time
}

// pgSchemaAttempt is one migration run that concurrent callers wait on.
type pgSchemaAttempt struct {
	done chan struct{}
	err  error
}

// pgCacheMax bounds the number of cached records.
const pgCacheMax = 100_000

// openPgStore creates the pool (without connecting: a database that is down
// does not stop Caddy) and starts the listener and the last_used_at flusher.
func openPgStore(cfg *pgxpool.Config, key string, ttl time.Duration, logger *zap.Logger) (*pgStore, error) {
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = pgConnectTimeout
	}
	if cfg.ConnConfig.RuntimeParams["application_name"] == "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = "caddy-token-auth"
	}
	listenCfg := cfg.ConnConfig.Copy()
	listenCfg.RuntimeParams["application_name"] += " listener"
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres store %s: %w", key, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &pgStore{
		key:       key,
		pool:      pool,
		listenCfg: listenCfg,
		logger:    logger,
		cache:     make(map[Digest]pgCacheEntry),
		ctx:       ctx,
		cancel:    cancel,
	}
	s.ttl.Store(int64(ttl))
	s.wg.Add(2)
	go s.listenLoop()
	go s.flushLoop()
	return s, nil
}

// Lookup implements TokenStore. Hits come from memory; a miss asks the
// database, within pgLookupTimeout. Any failure to get an answer wraps
// ErrStoreUnavailable.
func (s *pgStore) Lookup(ctx context.Context, digest Digest) (*TokenRecord, error) {
	now := time.Now()
	s.cacheMu.RLock()
	e, ok := s.cache[digest]
	gen := s.cacheGen
	s.cacheMu.RUnlock()
	if ok && now.Before(e.expires) {
		return e.rec, nil
	}
	return s.lookupMiss(ctx, digest, now, gen)
}

// lookupMiss reads a record from the database and caches it. (Apart from
// Lookup so that the hit path does not allocate.)
func (s *pgStore) lookupMiss(ctx context.Context, digest Digest, now time.Time, gen uint64) (*TokenRecord, error) {
	ttl := time.Duration(s.ttl.Load())
	if !s.listening.Load() {
		ttl = min(ttl, pgUnlistenedTTL)
	}
	ctx, cancel := context.WithTimeout(ctx, pgLookupTimeout)
	defer cancel()
	var rec *TokenRecord
	err := s.read(ctx, func(ctx context.Context) (err error) {
		rec, err = scanRecord(s.pool.QueryRow(ctx, `SELECT `+pgColumns+` FROM token_auth_tokens WHERE digest = $1`, digest[:]))
		return err
	})
	if errors.Is(err, ErrTokenNotFound) {
		return nil, err
	}
	if err != nil {
		return nil, unavailable(err)
	}
	rec.prepare()
	s.cacheMu.Lock()
	if s.cacheGen == gen { // else an eviction happened meanwhile: what we read may be stale
		if len(s.cache) >= pgCacheMax {
			s.sweepLocked(now)
			if len(s.cache) >= pgCacheMax {
				clear(s.cache)
			}
		}
		s.cache[digest] = pgCacheEntry{rec: rec, expires: now.Add(ttl)}
	}
	s.cacheMu.Unlock()
	return rec, nil
}

// read runs a read-only query once the schema is ready, and once more if the
// first attempt failed on a connection that broke (e.g. after a database
// restart): reads are safe to repeat.
func (s *pgStore) read(ctx context.Context, q func(context.Context) error) error {
	if err := s.ensureSchema(ctx); err != nil {
		return err
	}
	err := q(ctx)
	if err != nil && !errors.Is(err, ErrTokenNotFound) && ctx.Err() == nil && pgRetryable(err) {
		err = q(ctx)
	}
	return err
}

// MarkUsed implements TokenStore.
func (s *pgStore) MarkUsed(id string, t time.Time) {
	s.used.mark(id, t)
}

// Insert implements TokenStore.
func (s *pgStore) Insert(ctx context.Context, rec *TokenRecord, digest Digest) error {
	ctx, cancel := context.WithTimeout(ctx, pgOpTimeout)
	defer cancel()
	if err := s.ensureSchema(ctx); err != nil {
		return unavailable(err)
	}
	_, err := s.pool.Exec(ctx, pgInsert, pgInsertArgs(rec, digest)...)
	return s.writeErr(err)
}

const pgInsert = `INSERT INTO token_auth_tokens (digest, ` + pgColumns + `)
	VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10)`

func pgInsertArgs(rec *TokenRecord, digest Digest) []any {
	scopes := rec.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	meta := "{}"
	if len(rec.Meta) > 0 {
		b, _ := json.Marshal(rec.Meta) // a map[string]string always encodes
		meta = string(b)
	}
	return []any{digest[:], rec.ID, rec.User, rec.Name, scopes, meta,
		rec.CreatedAt, rec.ExpiresAt, rec.LastUsedAt, rec.RevokedAt}
}

// Get implements TokenStore.
func (s *pgStore) Get(ctx context.Context, id string) (*TokenRecord, error) {
	ctx, cancel := context.WithTimeout(ctx, pgOpTimeout)
	defer cancel()
	var rec *TokenRecord
	err := s.read(ctx, func(ctx context.Context) (err error) {
		rec, err = scanRecord(s.pool.QueryRow(ctx, `SELECT `+pgColumns+` FROM token_auth_tokens WHERE id = $1`, id))
		return err
	})
	if err != nil {
		return nil, s.readErr(err)
	}
	s.used.overlay(rec)
	return rec, nil
}

// List implements TokenStore.
func (s *pgStore) List(ctx context.Context, user string) ([]*TokenRecord, error) {
	ctx, cancel := context.WithTimeout(ctx, pgOpTimeout)
	defer cancel()
	var out []*TokenRecord
	err := s.read(ctx, func(ctx context.Context) error {
		out = out[:0]
		rows, err := s.pool.Query(ctx, `SELECT `+pgColumns+` FROM token_auth_tokens
			WHERE $1 = '' OR user_id = $1 ORDER BY created_at, id COLLATE "C"`, user)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			rec, err := scanRecord(rows)
			if err != nil {
				return err
			}
			s.used.overlay(rec)
			out = append(out, rec)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, s.readErr(err)
	}
	return out, nil
}

// Revoke implements TokenStore.
func (s *pgStore) Revoke(ctx context.Context, id string, at time.Time) (*TokenRecord, error) {
	ctx, cancel := context.WithTimeout(ctx, pgOpTimeout)
	defer cancel()
	if err := s.ensureSchema(ctx); err != nil {
		return nil, unavailable(err)
	}
	var rec *TokenRecord
	var digest []byte
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		rec, err = scanRecord(tx.QueryRow(ctx, `SELECT `+pgColumns+`, digest FROM token_auth_tokens
			WHERE id = $1 FOR UPDATE`, id), &digest)
		if err != nil {
			return err
		}
		if rec.RevokedAt != nil && !rec.RevokedAt.After(at) {
			digest = nil
			return nil
		}
		if _, err := tx.Exec(ctx, `UPDATE token_auth_tokens SET revoked_at = $2 WHERE id = $1`, id, at); err != nil {
			return err
		}
		t := pgTime(at)
		rec.RevokedAt = &t
		return nil
	})
	if err != nil {
		return nil, s.writeErr(err)
	}
	s.forget(digest)
	return rec, nil
}

// RevokeUser implements TokenStore.
func (s *pgStore) RevokeUser(ctx context.Context, user string, at time.Time) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, pgOpTimeout)
	defer cancel()
	if err := s.ensureSchema(ctx); err != nil {
		return 0, unavailable(err)
	}
	rows, err := s.pool.Query(ctx, `UPDATE token_auth_tokens SET revoked_at = $2
		WHERE user_id = $1 AND (revoked_at IS NULL OR revoked_at > $2) RETURNING digest`, user, at)
	if err != nil {
		return 0, s.writeErr(err)
	}
	digests, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		return 0, s.writeErr(err)
	}
	s.forget(digests...)
	return len(digests), nil
}

// Rotate implements TokenStore.
func (s *pgStore) Rotate(ctx context.Context, oldID string, oldRevokeAt time.Time, next *TokenRecord, nextDigest Digest) error {
	ctx, cancel := context.WithTimeout(ctx, pgOpTimeout)
	defer cancel()
	if err := s.ensureSchema(ctx); err != nil {
		return unavailable(err)
	}
	var changed []byte
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var digest []byte
		var revoked *time.Time
		err := tx.QueryRow(ctx, `SELECT digest, revoked_at FROM token_auth_tokens WHERE id = $1 FOR UPDATE`, oldID).
			Scan(&digest, &revoked)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, pgInsert, pgInsertArgs(next, nextDigest)...); err != nil {
			return err
		}
		if revoked == nil || revoked.After(oldRevokeAt) {
			changed = digest
			_, err = tx.Exec(ctx, `UPDATE token_auth_tokens SET revoked_at = $2 WHERE id = $1`, oldID, oldRevokeAt)
		}
		return err
	})
	if err != nil {
		return s.writeErr(err)
	}
	s.forget(changed)
	return nil
}

// Import implements TokenStore. The batch is written in one transaction;
// records whose digest or ID is already present are skipped.
func (s *pgStore) Import(ctx context.Context, batch []ExportedRecord) (ImportResult, error) {
	if len(batch) == 0 {
		return ImportResult{}, nil
	}
	if err := s.ensureSchema(ctx); err != nil {
		return ImportResult{}, unavailable(err)
	}
	var res ImportResult
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		res = ImportResult{}
		b := new(pgx.Batch)
		for i := range batch {
			digest, err := parseDigest(batch[i].Digest)
			if err != nil {
				return fmt.Errorf("record %s: %w", batch[i].ID, err)
			}
			b.Queue(pgInsert+` ON CONFLICT DO NOTHING`, pgInsertArgs(&batch[i].TokenRecord, digest)...)
		}
		br := tx.SendBatch(ctx, b)
		for range batch {
			tag, err := br.Exec()
			if err != nil {
				br.Close()
				return err
			}
			if tag.RowsAffected() == 1 {
				res.Imported++
			} else {
				res.Skipped++
			}
		}
		return br.Close()
	})
	if err != nil {
		return ImportResult{}, s.writeErr(err)
	}
	return res, nil
}

// Export implements TokenStore. Rows are streamed to fn as they arrive.
func (s *pgStore) Export(ctx context.Context, fn func(ExportedRecord) error) error {
	if err := s.ensureSchema(ctx); err != nil {
		return unavailable(err)
	}
	rows, err := s.pool.Query(ctx, `SELECT `+pgColumns+`, digest FROM token_auth_tokens ORDER BY created_at, id COLLATE "C"`)
	if err != nil {
		return s.readErr(err)
	}
	defer rows.Close()
	for rows.Next() {
		var digest []byte
		rec, err := scanRecord(rows, &digest)
		if err != nil {
			return s.readErr(err)
		}
		if err := fn(ExportedRecord{TokenRecord: *rec, Digest: hex.EncodeToString(digest)}); err != nil {
			return err
		}
	}
	return s.readErr(rows.Err())
}

// scanRecord reads the pgColumns of one row, then any extra columns.
func scanRecord(row pgx.Row, extra ...any) (*TokenRecord, error) {
	rec := new(TokenRecord)
	var meta []byte
	dest := append([]any{&rec.ID, &rec.User, &rec.Name, &rec.Scopes, &meta,
		&rec.CreatedAt, &rec.ExpiresAt, &rec.LastUsedAt, &rec.RevokedAt}, extra...)
	if err := row.Scan(dest...); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, ErrTokenNotFound
		}
		return nil, err
	}
	if len(rec.Scopes) == 0 {
		rec.Scopes = nil
	}
	var err error
	if rec.Meta, err = decodeMeta(meta); err != nil {
		return nil, fmt.Errorf("record %s: meta: %w", rec.ID, err)
	}
	rec.CreatedAt = rec.CreatedAt.UTC()
	for _, t := range []*time.Time{rec.ExpiresAt, rec.LastUsedAt, rec.RevokedAt} {
		if t != nil {
			*t = t.UTC()
		}
	}
	return rec, nil
}

// decodeMeta reads the meta object. Values written by other programs need
// not be strings: those are kept as their JSON text.
func decodeMeta(b []byte) (map[string]string, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, err
	}
	if len(raw) == 0 {
		return nil, nil
	}
	meta := make(map[string]string, len(raw))
	for k, v := range raw {
		var s string
		if json.Unmarshal(v, &s) != nil {
			s = string(v)
		}
		meta[k] = s
	}
	return meta, nil
}

// pgTime is t as PostgreSQL keeps it: in microseconds, in UTC.
func pgTime(t time.Time) time.Time { return t.Truncate(time.Microsecond).UTC() }

// readErr maps a query failure: not found as is, everything else unavailable.
func (s *pgStore) readErr(err error) error {
	if err == nil || errors.Is(err, ErrTokenNotFound) || errors.Is(err, ErrStoreUnavailable) {
		return err
	}
	return unavailable(err)
}

// writeErr maps a write failure: a taken digest or ID is ErrTokenExists, a
// missing row ErrTokenNotFound, a refusal by the database (a constraint) an
// error of its own, anything else (no connection, timeout) unavailable.
// The write committed if and only if the error is nil.
func (s *pgStore) writeErr(err error) error {
	var pgErr *pgconn.PgError
	switch {
	case err == nil, errors.Is(err, ErrTokenNotFound), errors.Is(err, ErrStoreUnavailable):
		return err
	case errors.Is(err, pgx.ErrNoRows):
		return ErrTokenNotFound
	case errors.As(err, &pgErr) && pgErr.Code == "23505": // unique_violation
		return ErrTokenExists
	case errors.As(err, &pgErr) && !pgUnavailableCode(pgErr.Code):
		return fmt.Errorf("token database: %w", err)
	}
	return unavailable(err)
}

// unavailable wraps err as ErrStoreUnavailable (503 on the request path).
func unavailable(err error) error {
	if errors.Is(err, ErrStoreUnavailable) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrStoreUnavailable, err)
}

// pgUnavailableCode reports whether a server error means the database cannot
// serve now (connection exception, shutdown, too many connections, ...).
func pgUnavailableCode(code string) bool {
	return strings.HasPrefix(code, "08") || strings.HasPrefix(code, "53") ||
		strings.HasPrefix(code, "57P") || code == "57014" // query_canceled (statement_timeout)
}

// pgRetryable reports whether a read may be repeated at once on another connection.
func pgRetryable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return strings.HasPrefix(pgErr.Code, "08") || pgErr.Code == "57P01" // admin_shutdown: a restart
	}
	return !pgconn.Timeout(err)
}

// pgFatalAtStart reports whether a failure at config load is a mistake to
// report (wrong password, no such database, newer schema, no permission)
// rather than a database that is merely down.
func pgFatalAtStart(err error) bool {
	if errors.Is(err, errPgSchemaNewer) {
		return true
	}
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && !pgUnavailableCode(pgErr.Code)
}

// ensureSchema creates or migrates the tables once per store. Concurrent
// callers share one attempt, each waiting no longer than its own ctx; a
// failed attempt is retried by the next caller.
func (s *pgStore) ensureSchema(ctx context.Context) error {
	if s.schemaReady.Load() {
		return nil
	}
	s.schemaMu.Lock()
	if s.closed {
		s.schemaMu.Unlock()
		return errors.New("token store closed")
	}
	a := s.schemaAttempt
	if a == nil {
		a = &pgSchemaAttempt{done: make(chan struct{})}
		s.schemaAttempt = a
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			mctx, cancel := context.WithTimeout(s.ctx, pgOpTimeout)
			a.err = s.migrate(mctx)
			cancel()
			s.schemaMu.Lock()
			if a.err == nil {
				s.schemaReady.Store(true)
			}
			s.schemaAttempt = nil
			s.schemaMu.Unlock()
			close(a.done)
		}()
	}
	s.schemaMu.Unlock()
	select {
	case <-a.done:
		return a.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// migrate applies the migrations this database lacks, under an advisory lock
// so that instances starting together do not race.
func (s *pgStore) migrate(ctx context.Context) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(pgSchemaLock)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS token_auth_schema_version (
			version    integer PRIMARY KEY,
			applied_at timestamptz NOT NULL DEFAULT now()
		)`)
		if err != nil {
			return err
		}
		var have int
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM token_auth_schema_version`).Scan(&have); err != nil {
			return err
		}
		if have > pgSchemaVersion {
			return fmt.Errorf("%w (database: %d, this build: %d)", errPgSchemaNewer, have, pgSchemaVersion)
		}
		for v := have + 1; v <= pgSchemaVersion; v++ {
			if _, err := tx.Exec(ctx, pgMigrations[v]); err != nil {
				return fmt.Errorf("migrating token_auth schema to version %d: %w", v, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO token_auth_schema_version (version) VALUES ($1)`, v); err != nil {
				return err
			}
		}
		return nil
	})
}

// listenLoop keeps a LISTEN connection up until Close, reconnecting with
// exponential backoff.
func (s *pgStore) listenLoop() {
	defer s.wg.Done()
	backoff := pgBackoffMin
	down := false
	for {
		start := time.Now()
		err := s.listenOnce(func() {
			if down {
				s.logger.Info("token database notifications restored", zap.String("store", s.key))
				down = false
			}
		})
		if s.ctx.Err() != nil {
			return
		}
		if time.Since(start) > time.Minute {
			backoff = pgBackoffMin
		}
		if !down {
			s.logger.Warn("token database notifications lost; reconnecting (cached tokens now expire within 0.5 s)",
				zap.String("store", s.key), zap.Error(err))
			down = true
		}
		select {
		case <-time.After(backoff):
		case <-s.ctx.Done():
			return
		}
		backoff = min(2*backoff, pgBackoffMax)
	}
}

// listenOnce connects, LISTENs, clears the cache (it may have missed
// notifications while no connection was up) and evicts notified digests
// until the connection fails or the store closes.
func (s *pgStore) listenOnce(connected func()) error {
	cctx, cancel := context.WithTimeout(s.ctx, s.listenCfg.ConnectTimeout)
	conn, err := pgx.ConnectConfig(cctx, s.listenCfg)
	cancel()
	if err != nil {
		return err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = conn.Close(ctx)
		cancel()
	}()
	if _, err := conn.Exec(s.ctx, `LISTEN `+pgChannel); err != nil {
		return err
	}
	s.listenerPID.Store(conn.PgConn().PID())
	s.clearCache()
	s.listening.Store(true)
	defer s.listening.Store(false)
	connected()
	if !s.schemaReady.Load() { // the database is back: create the tables now, not on the next request
		sctx, cancel := context.WithTimeout(s.ctx, pgOpTimeout)
		_ = s.ensureSchema(sctx)
		cancel()
	}
	for {
		wctx, cancel := context.WithTimeout(s.ctx, pgListenPing)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			s.evict(n.Payload)
			continue
		case s.ctx.Err() != nil:
			return nil
		case !pgconn.Timeout(err):
			return err
		}
		pctx, cancel := context.WithTimeout(s.ctx, pgLookupTimeout)
		err = conn.Ping(pctx)
		cancel()
		if err != nil {
			return fmt.Errorf("LISTEN connection silent and not answering: %w", err)
		}
	}
}

// evict handles one notification: a hex digest, or anything else to clear all.
func (s *pgStore) evict(payload string) {
	if d, err := parseDigest(payload); err == nil {
		s.forget(d[:])
		return
	}
	s.clearCache()
}

// forget drops records from the cache after a change to them committed.
func (s *pgStore) forget(digests ...[]byte) {
	s.cacheMu.Lock()
	for _, b := range digests {
		if len(b) == len(Digest{}) {
			delete(s.cache, Digest(b))
		}
	}
	s.cacheGen++
	s.cacheMu.Unlock()
}

// clearCache drops every cached record.
func (s *pgStore) clearCache() {
	s.cacheMu.Lock()
	clear(s.cache)
	s.cacheGen++
	s.cacheMu.Unlock()
}

// sweepLocked drops expired entries; the caller holds cacheMu.
func (s *pgStore) sweepLocked(now time.Time) {
	for d, e := range s.cache {
		if !now.Before(e.expires) {
			delete(s.cache, d)
		}
	}
}

// flushLoop writes pending last_used_at times and sweeps expired cache
// entries every lastUsedFlushInterval until Close.
func (s *pgStore) flushLoop() {
	defer s.wg.Done()
	ticker := time.NewTicker(lastUsedFlushInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ticker.C:
			s.cacheMu.Lock()
			s.sweepLocked(time.Now())
			s.cacheMu.Unlock()
			ctx, cancel := context.WithTimeout(s.ctx, pgOpTimeout)
			if err := s.flushLastUsed(ctx); err != nil {
				s.logger.Debug("writing last_used_at failed; will retry", zap.Error(err))
			}
			cancel()
		case <-s.ctx.Done():
			return
		}
	}
}

// flushLastUsed writes every pending last_used_at in one statement. On
// failure the times are kept for the next flush.
func (s *pgStore) flushLastUsed(ctx context.Context) error {
	pending := s.used.take()
	if len(pending) == 0 {
		return nil
	}
	ids := make([]string, 0, len(pending))
	times := make([]time.Time, 0, len(pending))
	for id, t := range pending {
		ids = append(ids, id)
		times = append(times, t.UTC().Truncate(time.Second))
	}
	// Times are only noted for tokens that a lookup found, so the schema is ready.
	_, err := s.pool.Exec(ctx, `UPDATE token_auth_tokens AS t SET last_used_at = u.at
			FROM unnest($1::text[], $2::timestamptz[]) AS u(id, at)
			WHERE t.id = u.id AND (t.last_used_at IS NULL OR t.last_used_at < u.at)`, ids, times)
	if err != nil {
		s.used.putBack(pending) // try again at the next flush
	}
	return err
}

// Close stops the listener and the flusher, writes pending last_used_at
// times, and closes the pool.
func (s *pgStore) Close() error {
	s.closeOnce.Do(func() {
		s.schemaMu.Lock()
		s.closed = true
		s.cancel()
		s.schemaMu.Unlock()
		s.wg.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), pgOpTimeout)
		defer cancel()
		s.closeErr = s.flushLastUsed(ctx)
		s.pool.Close()
	})
	return s.closeErr
}

// Destruct implements caddy.Destructor, so the pool closes the store when
// its last user (config) is cleaned up.
func (s *pgStore) Destruct() error { return s.Close() }

// pgPoolKey names a DSN in storePool and in the admin API without its
// password: the password is replaced by "redacted-" and an HMAC of it under
// a key that lives only in this process, so that a changed password opens a
// new pool while nothing on display can be used to guess it.
func pgPoolKey(dsn, password string) string {
	mark := "redacted"
	if password != "" {
		mac := hmac.New(sha256.New, pgKeySecret)
		mac.Write([]byte(password))
		mark += "-" + hex.EncodeToString(mac.Sum(nil)[:4])
	}
	return "postgres:" + redactDSN(dsn, mark)
}

var pgKeySecret = func() []byte {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return b
}()

var (
	pgKVPassword     = regexp.MustCompile(`(?i)\b((?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s]*)`)
	pgURLUserinfoPwd = regexp.MustCompile(`^([a-z]+://[^:@/]*):[^@/]*@`)
)

// redactDSN replaces every password in a URL or key=value DSN with mark.
func redactDSN(dsn, mark string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		if u, err := url.Parse(dsn); err == nil {
			if u.User != nil {
				if _, ok := u.User.Password(); ok {
					u.User = url.UserPassword(u.User.Username(), mark)
				}
			}
			q := u.Query()
			for k := range q {
				if strings.EqualFold(k, "password") || strings.EqualFold(k, "sslpassword") {
					q.Set(k, mark)
				}
			}
			u.RawQuery = q.Encode()
			return u.String()
		}
		// Unparsable URL: hide whatever could be a password.
		dsn = pgURLUserinfoPwd.ReplaceAllString(dsn, "${1}:"+mark+"@")
		if i := strings.IndexByte(dsn, '?'); i >= 0 {
			dsn = dsn[:i] + "?" + mark
		}
		return dsn
	}
	return pgKVPassword.ReplaceAllString(dsn, "${1}"+mark)
}

// Interface guards
var (
	_ StoreBackend     = (*PostgresStoreModule)(nil)
	_ TokenStore       = (*pgStore)(nil)
	_ caddy.Destructor = (*pgStore)(nil)
)
