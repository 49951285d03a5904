package tokenauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
)

// openTestPgStore opens a store on dsn with a pool of its own, as another
// Caddy process would, and waits until its LISTEN connection is up.
func openTestPgStore(tb testing.TB, dsn string, ttl time.Duration) *pgStore {
	tb.Helper()
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		tb.Fatal(err)
	}
	s, err := openPgStore(cfg, "test", ttl, zap.NewNop())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.ensureSchema(ctx); err != nil {
		tb.Fatal(err)
	}
	waitFor(tb, 5*time.Second, "LISTEN connection up", s.listening.Load)
	return s
}

// waitFor polls cond every 10 ms and returns how long it took to hold.
func waitFor(tb testing.TB, limit time.Duration, what string, cond func() bool) time.Duration {
	tb.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			tb.Fatalf("%s: not within %s", what, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// untilRefused polls s.Lookup until the token with digest d is refused
// (revoked, expired or gone) and returns how long that took.
func untilRefused(tb testing.TB, s TokenStore, d Digest, limit time.Duration) time.Duration {
	tb.Helper()
	return waitFor(tb, limit, "token refused", func() bool {
		rec, err := s.Lookup(context.Background(), d)
		switch {
		case errors.Is(err, ErrTokenNotFound):
			return true
		case err != nil:
			tb.Fatalf("lookup: %v", err)
		}
		return rec.refusal(time.Now()) != ""
	})
}

// warm looks d up in s until the record is in s's cache (a notification
// arriving during a lookup keeps that lookup from caching what it read).
func warm(tb testing.TB, s *pgStore, d Digest) {
	tb.Helper()
	waitFor(tb, 2*time.Second, "record cached", func() bool {
		mustLookup(tb, s, d)
		s.cacheMu.RLock()
		defer s.cacheMu.RUnlock()
		_, ok := s.cache[d]
		return ok
	})
}

// mustLookup looks a digest up and requires a usable record.
func mustLookup(tb testing.TB, s TokenStore, d Digest) *TokenRecord {
	tb.Helper()
	rec, err := s.Lookup(context.Background(), d)
	if err != nil {
		tb.Fatalf("lookup: %v", err)
	}
	if r := rec.refusal(time.Now()); r != "" {
		tb.Fatalf("lookup: %s", r)
	}
	return rec
}

func mustInsert(tb testing.TB, s TokenStore, id, user string) Digest {
	tb.Helper()
	d := digestOf("token-for-" + id + "-0123456789")
	rec := &TokenRecord{ID: id, User: user, CreatedAt: time.Now().UTC().Truncate(time.Second)}
	if err := s.Insert(context.Background(), rec, d); err != nil {
		tb.Fatalf("insert %s: %v", id, err)
	}
	return d
}

func recordJSON(tb testing.TB, r *TokenRecord) string {
	tb.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

func sameRecord(tb testing.TB, what string, got, want *TokenRecord) {
	tb.Helper()
	if g, w := recordJSON(tb, got), recordJSON(tb, want); g != w {
		tb.Errorf("%s:\n got  %s\n want %s", what, g, w)
	}
}

func ids(recs []*TokenRecord) string {
	var s []string
	for _, r := range recs {
		s = append(s, r.ID)
	}
	return strings.Join(s, ",")
}

// storeContract checks the behaviours every TokenStore shares (those of the
// bbolt store) and leaves five records in s: tok_a … tok_e.
func storeContract(t *testing.T, s TokenStore) {
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	hour := now.Add(time.Hour)
	past := now.Add(-time.Second)
	a := &TokenRecord{ID: "tok_a", User: "alice", Name: "CI deploy key", Scopes: []string{"read", "write"},
		Meta: map[string]string{"team": "ops", "tier": "gold"}, CreatedAt: now.Add(-4 * time.Minute), ExpiresAt: &hour}
	b := &TokenRecord{ID: "tok_b", User: "alice", CreatedAt: now.Add(-3 * time.Minute)}
	c := &TokenRecord{ID: "tok_c", User: "bob", CreatedAt: now.Add(-2 * time.Minute), ExpiresAt: &past}
	d := &TokenRecord{ID: "tok_d", User: "bob", Scopes: []string{"admin"}, CreatedAt: now.Add(-time.Minute)}
	da, db, dc, dd := digestOf("tka_a-token-0123456789"), digestOf("tka_b-token-0123456789"),
		digestOf("tka_c-token-0123456789"), digestOf("tka_d-token-0123456789")
	for _, x := range []struct {
		rec *TokenRecord
		d   Digest
	}{{a, da}, {b, db}, {c, dc}, {d, dd}} {
		if err := s.Insert(ctx, x.rec.clone(), x.d); err != nil {
			t.Fatalf("insert %s: %v", x.rec.ID, err)
		}
	}
	if err := s.Insert(ctx, &TokenRecord{ID: "tok_other", User: "x", CreatedAt: now}, da); !errors.Is(err, ErrTokenExists) {
		t.Errorf("insert of a taken digest: %v, want ErrTokenExists", err)
	}
	if err := s.Insert(ctx, &TokenRecord{ID: "tok_a", User: "x", CreatedAt: now}, digestOf("fresh-digest-0123456")); !errors.Is(err, ErrTokenExists) {
		t.Errorf("insert of a taken ID: %v, want ErrTokenExists", err)
	}

	// Lookup and Get return what was inserted.
	rec, err := s.Lookup(ctx, da)
	if err != nil {
		t.Fatal(err)
	}
	sameRecord(t, "lookup a", rec, a)
	if rec.scopesJoined != "read write" {
		t.Errorf("lookup did not prepare the record: %q", rec.scopesJoined)
	}
	if _, err := s.Lookup(ctx, digestOf("never-inserted-token")); !errors.Is(err, ErrTokenNotFound) {
		t.Errorf("lookup of an unknown digest: %v, want ErrTokenNotFound", err)
	}
	got, err := s.Get(ctx, "tok_d")
	if err != nil {
		t.Fatal(err)
	}
	sameRecord(t, "get d", got, d)
	if _, err := s.Get(ctx, "tok_nope"); !errors.Is(err, ErrTokenNotFound) {
		t.Errorf("get of an unknown ID: %v, want ErrTokenNotFound", err)
	}

	// List: oldest first, by user.
	for user, want := range map[string]string{"": "tok_a,tok_b,tok_c,tok_d", "alice": "tok_a,tok_b", "bob": "tok_c,tok_d", "nobody": ""} {
		recs, err := s.List(ctx, user)
		if err != nil {
			t.Fatal(err)
		}
		if ids(recs) != want {
			t.Errorf("list %q: %s, want %s", user, ids(recs), want)
		}
	}

	// Expiry.
	if r := mustGetLookup(t, s, dc).refusal(now); r != "token expired" {
		t.Errorf("expired token: refusal %q", r)
	}

	// Revoke: a future time is a grace period; an earlier revocation is kept.
	rec, err = s.Revoke(ctx, "tok_b", hour)
	if err != nil || rec.RevokedAt == nil || !rec.RevokedAt.Equal(hour) {
		t.Fatalf("revoke at +1h: %v %v", rec, err)
	}
	if r := mustGetLookup(t, s, db).refusal(now); r != "" {
		t.Errorf("token revoked in an hour refused now: %q", r)
	}
	if r := mustGetLookup(t, s, db).refusal(hour); r != "token revoked" {
		t.Errorf("token revoked at +1h, at +1h: %q", r)
	}
	if rec, _ = s.Revoke(ctx, "tok_b", hour.Add(time.Hour)); rec == nil || !rec.RevokedAt.Equal(hour) {
		t.Errorf("a later revoke moved the revocation: %v", rec)
	}
	if rec, _ = s.Revoke(ctx, "tok_b", now); rec == nil || !rec.RevokedAt.Equal(now) {
		t.Errorf("an earlier revoke did not move the revocation: %v", rec)
	}
	if r := mustGetLookup(t, s, db).refusal(now); r != "token revoked" {
		t.Errorf("revoked token (cached before) not refused by the same store: %q", r)
	}
	if _, err := s.Revoke(ctx, "tok_nope", now); !errors.Is(err, ErrTokenNotFound) {
		t.Errorf("revoke of an unknown ID: %v", err)
	}

	// RevokeUser counts the tokens it revoked.
	if n, err := s.RevokeUser(ctx, "alice", now); err != nil || n != 1 {
		t.Errorf("revoke user alice: %d %v, want 1 (tok_b is already revoked)", n, err)
	}
	if n, _ := s.RevokeUser(ctx, "alice", now); n != 0 {
		t.Errorf("revoke user alice again: %d, want 0", n)
	}
	if r := mustGetLookup(t, s, da).refusal(now); r != "token revoked" {
		t.Errorf("tok_a after revoke user: %q", r)
	}

	// Rotate: the new token is inserted and the old one revoked later, atomically.
	e := &TokenRecord{ID: "tok_e", User: "bob", Scopes: []string{"admin"}, CreatedAt: now}
	de := digestOf("tka_e-token-0123456789")
	if err := s.Rotate(ctx, "tok_nope", now, &TokenRecord{ID: "tok_x", User: "bob", CreatedAt: now}, digestOf("tka_x-token-0123456789")); !errors.Is(err, ErrTokenNotFound) {
		t.Errorf("rotate of an unknown ID: %v", err)
	}
	if _, err := s.Get(ctx, "tok_x"); !errors.Is(err, ErrTokenNotFound) {
		t.Errorf("a failed rotate inserted its new record: %v", err)
	}
	if err := s.Rotate(ctx, "tok_d", hour, e.clone(), de); err != nil {
		t.Fatal(err)
	}
	if err := s.Rotate(ctx, "tok_d", now, &TokenRecord{ID: "tok_y", User: "bob", CreatedAt: now}, de); !errors.Is(err, ErrTokenExists) {
		t.Errorf("rotate to a taken digest: %v", err)
	}
	old, _ := s.Get(ctx, "tok_d")
	if old == nil || old.RevokedAt == nil || !old.RevokedAt.Equal(hour) {
		t.Errorf("rotated token: %v, want revoked at +1h (and untouched by the failed rotate)", old)
	}
	if r := mustGetLookup(t, s, dd).refusal(now); r != "" {
		t.Errorf("rotated token in its grace period refused: %q", r)
	}
	sameRecord(t, "rotated-to token", mustGetLookup(t, s, de), e)

	// MarkUsed shows at once in Get, written later.
	used := now.Add(-10 * time.Second)
	s.MarkUsed("tok_e", used)
	if got, _ := s.Get(ctx, "tok_e"); got == nil || got.LastUsedAt == nil || !got.LastUsedAt.Equal(used) {
		t.Errorf("last_used_at after MarkUsed: %v", got)
	}

	// Export: every record with its digest, oldest first.
	var lines []string
	err = s.Export(ctx, func(r ExportedRecord) error {
		lines = append(lines, r.ID+"="+r.Digest)
		return nil
	})
	want := []string{"tok_a=" + da.String(), "tok_b=" + db.String(), "tok_c=" + dc.String(), "tok_d=" + dd.String(), "tok_e=" + de.String()}
	if err != nil || strings.Join(lines, " ") != strings.Join(want, " ") {
		t.Errorf("export: %v %v\nwant %v", lines, err, want)
	}
}

func mustGetLookup(t *testing.T, s TokenStore, d Digest) *TokenRecord {
	t.Helper()
	rec, err := s.Lookup(context.Background(), d)
	if err != nil {
		t.Fatalf("lookup: %v", err)
	}
	return rec
}

// TestPgStoreContract runs the same contract against bbolt and PostgreSQL.
func TestPgStoreContract(t *testing.T) {
	t.Run("bolt", func(t *testing.T) {
		s, err := openBoltStore(filepath.Join(t.TempDir(), "tokens.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		storeContract(t, s)
	})
	t.Run("postgres", func(t *testing.T) {
		s := openTestPgStore(t, sharedPGServer(t).newDatabase(t), pgDefaultCacheTTL)
		storeContract(t, s)
	})
}

// TestPgExportImportWithBolt moves tokens bbolt → PostgreSQL → bbolt through
// the export/import path of the CLI and admin API: digests and all.
func TestPgExportImportWithBolt(t *testing.T) {
	ctx := context.Background()
	src, err := openBoltStore(filepath.Join(t.TempDir(), "src.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	storeContract(t, src)
	var fromBolt bytes.Buffer
	if err := exportRecords(ctx, src, &fromBolt); err != nil {
		t.Fatal(err)
	}

	pg := openTestPgStore(t, sharedPGServer(t).newDatabase(t), pgDefaultCacheTTL)
	res, err := importRecords(ctx, pg, bytes.NewReader(fromBolt.Bytes()), time.Now())
	if err != nil || res != (ImportResult{Imported: 5}) {
		t.Fatalf("import into postgres: %+v %v", res, err)
	}
	res, err = importRecords(ctx, pg, bytes.NewReader(fromBolt.Bytes()), time.Now())
	if err != nil || res != (ImportResult{Skipped: 5}) {
		t.Fatalf("import into postgres again: %+v %v, want all skipped", res, err)
	}
	var fromPg bytes.Buffer
	if err := exportRecords(ctx, pg, &fromPg); err != nil {
		t.Fatal(err)
	}
	if fromPg.String() != fromBolt.String() {
		t.Errorf("postgres export differs from the bolt export it imported:\n%s\nvs\n%s", fromPg.String(), fromBolt.String())
	}
	if rec := mustGetLookup(t, pg, digestOf("tka_e-token-0123456789")); rec.User != "bob" || rec.refusal(time.Now()) != "" {
		t.Errorf("imported token: %+v", rec)
	}

	dst, err := openBoltStore(filepath.Join(t.TempDir(), "dst.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if res, err := importRecords(ctx, dst, bytes.NewReader(fromPg.Bytes()), time.Now()); err != nil || res.Imported != 5 {
		t.Fatalf("import into bolt: %+v %v", res, err)
	}
	var back bytes.Buffer
	if err := exportRecords(ctx, dst, &back); err != nil {
		t.Fatal(err)
	}
	if back.String() != fromBolt.String() {
		t.Errorf("round trip changed the records:\n%s\nvs\n%s", back.String(), fromBolt.String())
	}

	// A legacy token line (no digest) is hashed on the way in.
	res, err = importRecords(ctx, pg, strings.NewReader(`{"token":"legacy-token-value-0001","user":"dora"}`+"\n"), time.Now())
	if err != nil || res.Imported != 1 {
		t.Fatalf("legacy import: %+v %v", res, err)
	}
	if rec := mustLookup(t, pg, digestOf("legacy-token-value-0001")); rec.User != "dora" {
		t.Errorf("legacy token: %+v", rec)
	}
}

// TestPgTwoInstancesShareOneDatabase: two stores with pools of their own,
// as two Caddy processes have, and a cache TTL of 10 s: only notifications
// can explain a change seen within a second.
func TestPgTwoInstancesShareOneDatabase(t *testing.T) {
	ctx := context.Background()
	dsn := sharedPGServer(t).newDatabase(t)
	a := openTestPgStore(t, dsn, pgMaxCacheTTL)
	b := openTestPgStore(t, dsn, pgMaxCacheTTL)

	d1 := mustInsert(t, a, "tok_one", "alice")
	if rec := mustLookup(t, b, d1); rec.User != "alice" {
		t.Fatalf("created on A, looked up on B: %+v", rec)
	}
	warm(t, a, d1)
	warm(t, b, d1) // cached on both now

	if _, err := b.Revoke(ctx, "tok_one", time.Now()); err != nil {
		t.Fatal(err)
	}
	took := untilRefused(t, a, d1, time.Second)
	t.Logf("revoke on B in force on A after %s", took)

	d2, d3 := mustInsert(t, b, "tok_two", "bob"), mustInsert(t, b, "tok_three", "bob")
	warm(t, a, d2)
	warm(t, a, d3)
	if n, err := b.RevokeUser(ctx, "bob", time.Now()); err != nil || n != 2 {
		t.Fatalf("revoke user: %d %v", n, err)
	}
	untilRefused(t, a, d2, time.Second)
	untilRefused(t, a, d3, time.Second)

	// Rotation without grace through A: refused on B.
	d4 := mustInsert(t, a, "tok_four", "carol")
	warm(t, b, d4)
	if _, _, err := rotateToken(ctx, a, "tok_four", 0, time.Now()); err != nil {
		t.Fatal(err)
	}
	untilRefused(t, b, d4, time.Second+100*time.Millisecond) // revoked at now truncated to the second

	// An application writing plain SQL, as the README shows.
	const tok = "app-issued-token-0123456789"
	pgExec(t, dsn, `INSERT INTO token_auth_tokens (digest, id, user_id, scopes, meta, expires_at)
		VALUES (sha256(convert_to($1, 'UTF8')), 'tok_app', 'dora', '{read,write}', '{"plan": "pro"}', now() + interval '90 days')`, tok)
	rec := mustLookup(t, a, digestOf(tok))
	if rec.User != "dora" || rec.scopesJoined != "read write" || rec.Meta["plan"] != "pro" {
		t.Errorf("row inserted with SQL: %+v", rec)
	}
	warm(t, a, digestOf(tok))
	warm(t, b, digestOf(tok))
	if n := pgExec(t, dsn, `UPDATE token_auth_tokens SET revoked_at = now() WHERE id = 'tok_app'`); n != 1 {
		t.Fatalf("SQL revoke updated %d rows", n)
	}
	t.Logf("SQL revoke in force on A after %s", untilRefused(t, a, digestOf(tok), time.Second))
	untilRefused(t, b, digestOf(tok), time.Second)

	d5 := mustInsert(t, a, "tok_five", "erin")
	warm(t, b, d5)
	pgExec(t, dsn, `DELETE FROM token_auth_tokens WHERE id = 'tok_five'`)
	untilRefused(t, b, d5, time.Second)

	d6 := mustInsert(t, a, "tok_six", "erin")
	warm(t, b, d6)
	pgExec(t, dsn, `TRUNCATE token_auth_tokens`)
	untilRefused(t, b, d6, time.Second)
}

// TestPgListenerKilled: the LISTEN connection is terminated. The cache
// still converges within its TTL, the listener comes back on its own, and
// notifications work again.
func TestPgListenerKilled(t *testing.T) {
	ctx := context.Background()
	dsn := sharedPGServer(t).newDatabase(t)
	a := openTestPgStore(t, dsn, pgMaxCacheTTL)
	b := openTestPgStore(t, dsn, pgMaxCacheTTL)
	d1, d2 := mustInsert(t, b, "tok_one", "alice"), mustInsert(t, b, "tok_two", "alice")
	warm(t, a, d1)
	warm(t, a, d2)

	pid := a.listenerPID.Load()
	var killed bool
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, `SELECT pg_terminate_backend($1)`, int32(pid)).Scan(&killed); err != nil || !killed {
		t.Fatalf("pg_terminate_backend(%d): %v %v", pid, killed, err)
	}
	if _, err := b.Revoke(ctx, "tok_one", time.Now()); err != nil { // its notification may be lost on A
		t.Fatal(err)
	}
	t.Logf("revoke during listener loss in force on A after %s", untilRefused(t, a, d1, pgMaxCacheTTL+time.Second))

	took := waitFor(t, 10*time.Second, "listener reconnected", func() bool {
		return a.listening.Load() && a.listenerPID.Load() != pid
	})
	t.Logf("listener reconnected after %s", took)
	warm(t, a, d2)
	if _, err := b.Revoke(ctx, "tok_two", time.Now()); err != nil {
		t.Fatal(err)
	}
	t.Logf("revoke after reconnect in force on A after %s", untilRefused(t, a, d2, time.Second))
}

// TestPgTTLBoundsStaleness: a change that sends no notification (triggers
// disabled) is still seen once the cache TTL has passed.
func TestPgTTLBoundsStaleness(t *testing.T) {
	dsn := sharedPGServer(t).newDatabase(t)
	a := openTestPgStore(t, dsn, time.Second)
	// Disabled before the insert too, whose notification could otherwise
	// arrive after the lookup below cached the record, and evict it.
	pgExec(t, dsn, `ALTER TABLE token_auth_tokens DISABLE TRIGGER token_auth_tokens_notify`)
	defer pgExec(t, dsn, `ALTER TABLE token_auth_tokens ENABLE TRIGGER token_auth_tokens_notify`)
	d := mustInsert(t, a, "tok_one", "alice")
	warm(t, a, d)
	pgExec(t, dsn, `UPDATE token_auth_tokens SET revoked_at = now() WHERE id = 'tok_one'`)
	start := time.Now()
	mustLookup(t, a, d) // still cached: no notification came
	took := untilRefused(t, a, d, 1500*time.Millisecond)
	if time.Since(start) < 200*time.Millisecond {
		t.Errorf("change seen after %s without a notification: is the cache used at all?", took)
	}
	t.Logf("unnotified revoke seen after %s (TTL 1s)", took)
}

// TestPgDatabaseDownAndBack: a store opened while the database is down
// loads (Caddy starts), lookups fail fast with ErrStoreUnavailable, and the
// same store recovers, creating its schema, when the database is back.
func TestPgDatabaseDownAndBack(t *testing.T) {
	ctx := context.Background()
	srv := ownPGServer(t)
	dsn := srv.newDatabase(t)
	if err := srv.stop(); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	mod := &PostgresStoreModule{DSN: dsn}
	store, key, err := mod.AcquireStore(caddy.Context{})
	if err != nil {
		t.Fatalf("acquire with the database down: %v (Caddy must still start)", err)
	}
	released := false
	defer func() {
		if !released {
			_ = releaseStore(key)
		}
	}()
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("acquire took %s with the database down", d)
	}
	s := store.(*pgStore)
	expectUnavailable := func(what string) {
		t.Helper()
		start := time.Now()
		_, err := s.Lookup(ctx, digestOf("some-token-0123456789"))
		if !errors.Is(err, ErrStoreUnavailable) {
			t.Fatalf("%s: lookup: %v, want ErrStoreUnavailable", what, err)
		}
		if d := time.Since(start); d > 2500*time.Millisecond {
			t.Errorf("%s: lookup took %s", what, d)
		}
		t.Logf("%s: lookup failed in %s: %v", what, time.Since(start), err)
	}
	expectUnavailable("down at start")

	if err := srv.start(); err != nil {
		t.Fatal(err)
	}
	took := waitFor(t, 15*time.Second, "schema created after the database came back", func() bool {
		_, err := s.Lookup(ctx, digestOf("some-token-0123456789"))
		return errors.Is(err, ErrTokenNotFound)
	})
	t.Logf("store usable %s after the database started", took)
	d1 := mustInsert(t, s, "tok_one", "alice")
	d2 := mustInsert(t, s, "tok_two", "alice")
	mustLookup(t, s, d1)
	s.MarkUsed("tok_one", time.Now())

	if err := srv.stop(); err != nil {
		t.Fatal(err)
	}
	expectUnavailable("stopped")
	if err := s.Insert(ctx, &TokenRecord{ID: "tok_x", User: "x", CreatedAt: time.Now()}, digestOf("x-token-0123456789")); !errors.Is(err, ErrStoreUnavailable) {
		t.Errorf("insert with the database down: %v", err)
	}
	if err := s.flushLastUsed(ctx); err == nil {
		t.Errorf("flush with the database down succeeded")
	}

	if err := srv.start(); err != nil {
		t.Fatal(err)
	}
	took = waitFor(t, 15*time.Second, "lookups after the restart", func() bool {
		_, err := s.Lookup(ctx, d2)
		return err == nil
	})
	t.Logf("lookups back %s after the restart", took)
	waitFor(t, 10*time.Second, "listener back", s.listening.Load)
	mustLookup(t, s, d2)
	pgExec(t, dsn, `UPDATE token_auth_tokens SET revoked_at = now() WHERE id = 'tok_two'`)
	untilRefused(t, s, d2, time.Second)

	// The last_used_at kept through the outage is written on release (Close).
	if keys := openStoreKeys(); !containsString(keys, key) {
		t.Errorf("store %q not among the open stores %v", key, keys)
	}
	released = true
	if err := releaseStore(key); err != nil {
		t.Fatal(err)
	}
	var lastUsed *time.Time
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, `SELECT last_used_at FROM token_auth_tokens WHERE id = 'tok_one'`).Scan(&lastUsed); err != nil || lastUsed == nil {
		t.Errorf("last_used_at after close: %v %v", lastUsed, err)
	}
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestPgUnresponsiveDatabase: a server that accepts connections and never
// answers (a hung or firewalled database) costs a request at most the
// lookup timeout, and does not stop Caddy from loading the config.
func TestPgUnresponsiveDatabase(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close() // hold it open, say nothing
		}
	}()
	start := time.Now()
	mod := &PostgresStoreModule{DSN: fmt.Sprintf("postgres://caddy:hunter2@%s/tokens?sslmode=disable", l.Addr())}
	store, key, err := mod.AcquireStore(caddy.Context{})
	if err != nil {
		t.Fatalf("acquire: %v", err)
	}
	defer releaseStore(key)
	t.Logf("acquire took %s", time.Since(start))
	if d := time.Since(start); d > pgStartupTimeout+time.Second {
		t.Errorf("acquire took %s", d)
	}
	if strings.Contains(key, "hunter2") {
		t.Errorf("pool key %q shows the password", key)
	}
	start = time.Now()
	_, err = store.Lookup(context.Background(), digestOf("some-token-0123456789"))
	if !errors.Is(err, ErrStoreUnavailable) {
		t.Errorf("lookup: %v, want ErrStoreUnavailable", err)
	}
	if d := time.Since(start); d > pgLookupTimeout+500*time.Millisecond {
		t.Errorf("lookup took %s", d)
	}
	if strings.Contains(fmt.Sprint(err), "hunter2") {
		t.Errorf("error shows the password: %v", err)
	}
	t.Logf("lookup failed after %s: %v", time.Since(start), err)
}

// TestPgMarkUsedBatched: last_used_at is not written per call, is written
// in one statement by the flusher, and sends no notification (it would
// empty every instance's cache every few seconds).
func TestPgMarkUsedBatched(t *testing.T) {
	ctx := context.Background()
	dsn := sharedPGServer(t).newDatabase(t)
	s := openTestPgStore(t, dsn, pgDefaultCacheTTL)
	mustInsert(t, s, "tok_one", "alice")
	mustInsert(t, s, "tok_two", "alice")
	when := time.Now().Add(-time.Minute).UTC().Truncate(time.Second)
	s.MarkUsed("tok_one", when)
	s.MarkUsed("tok_two", when.Add(time.Second))

	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	count := func() (n int) {
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM token_auth_tokens WHERE last_used_at IS NOT NULL`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(); n != 0 {
		t.Fatalf("%d last_used_at written before a flush", n)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+pgChannel); err != nil {
		t.Fatal(err)
	}
	if err := s.flushLastUsed(ctx); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 2 {
		t.Fatalf("%d last_used_at written by the flush, want 2", n)
	}
	wctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if n, err := conn.WaitForNotification(wctx); err == nil {
		t.Errorf("last_used_at update notified %q", n.Payload)
	}
	var got time.Time
	if err := conn.QueryRow(ctx, `SELECT last_used_at FROM token_auth_tokens WHERE id = 'tok_one'`).Scan(&got); err != nil || !got.Equal(when) {
		t.Errorf("last_used_at: %v %v, want %v", got, err, when)
	}
	// An older time never overwrites a newer one.
	s.MarkUsed("tok_one", when.Add(-time.Hour))
	if err := s.flushLastUsed(ctx); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, `SELECT last_used_at FROM token_auth_tokens WHERE id = 'tok_one'`).Scan(&got); err != nil || !got.Equal(when) {
		t.Errorf("last_used_at after an older mark: %v %v, want %v", got, err, when)
	}
}

// TestPgNoGoroutineLeak: a store acquired and released (a config loaded and
// unloaded) leaves no goroutine behind.
func TestPgNoGoroutineLeak(t *testing.T) {
	dsn := sharedPGServer(t).newDatabase(t)
	before := runtime.NumGoroutine()
	for i := 0; i < 3; i++ {
		mod := &PostgresStoreModule{DSN: dsn}
		store, key, err := mod.AcquireStore(caddy.Context{})
		if err != nil {
			t.Fatal(err)
		}
		s := store.(*pgStore)
		waitFor(t, 5*time.Second, "listener up", s.listening.Load)
		d := mustInsert(t, s, fmt.Sprintf("tok_%d", i), "alice")
		mustLookup(t, s, d)
		s.MarkUsed(fmt.Sprintf("tok_%d", i), time.Now())
		released := make(chan error, 1)
		go func() { released <- releaseStore(key) }()
		select {
		case err := <-released:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("release (Close) did not return: a background goroutine does not stop")
		}
	}
	waitFor(t, 5*time.Second, fmt.Sprintf("goroutines back to %d", before), func() bool {
		return runtime.NumGoroutine() <= before
	})
}

// TestPgPoolKeyHidesPassword: the pool key, shown by the admin API, never
// holds the password, and tells DSNs with different passwords apart.
func TestPgPoolKeyHidesPassword(t *testing.T) {
	for _, dsn := range []string{
		"postgres://caddy:s3cr%40t@db:5432/app?sslmode=disable",
		"postgresql://caddy:s3cr@t@db/app",
		"postgres://caddy@db/app?password=s3cr@t&sslpassword=s3cr@t",
		"host=db user=caddy password=s3cr@t dbname=app",
		"host=db user=caddy password='s3cr@t with space' dbname=app",
		"host=db user=caddy PASSWORD = s3cr@t sslpassword=s3cr@t",
	} {
		cfg, err := pgxpool.ParseConfig(dsn)
		password := "s3cr@t"
		if err == nil {
			password = cfg.ConnConfig.Password
		}
		key := pgPoolKey(dsn, password)
		if strings.Contains(key, "s3cr") || !strings.HasPrefix(key, "postgres:") || !strings.Contains(key, "db") {
			t.Errorf("%s → %s", dsn, key)
		}
		if other := pgPoolKey(dsn, password+"x"); other == key {
			t.Errorf("%s: a different password gives the same key %s", dsn, key)
		}
		if again := pgPoolKey(dsn, password); again != key {
			t.Errorf("%s: keys differ: %s %s", dsn, key, again)
		}
	}
}

// TestPgCaddyfile: store postgres <dsn> [{ cache_ttl <d> }].
func TestPgCaddyfile(t *testing.T) {
	d := caddyfile.NewTestDispenser(`token_auth {
		store postgres "{env.TOKEN_DB}" {
			cache_ttl 3s
		}
		query off
	}`)
	var ta TokenAuth
	if err := ta.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(ta.StoreRaw, &got); err != nil {
		t.Fatal(err)
	}
	if got["backend"] != "postgres" || got["dsn"] != "{env.TOKEN_DB}" || got["cache_ttl"] != float64(3*time.Second) || ta.Query != "off" {
		t.Errorf("parsed %s, query %q", ta.StoreRaw, ta.Query)
	}
	for _, bad := range []string{
		"token_auth {\n store postgres\n}",
		"token_auth {\n store postgres a b\n}",
		"token_auth {\n store postgres a {\n cache_ttl 11s\n }\n}",
		"token_auth {\n store postgres a {\n cache_ttl\n }\n}",
		"token_auth {\n store postgres a {\n pool 3\n }\n}",
		"token_auth {\n store postgres a\n store postgres b\n}",
	} {
		var ta TokenAuth
		if err := ta.UnmarshalCaddyfile(caddyfile.NewTestDispenser(bad)); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
	mod := &PostgresStoreModule{DSN: "postgres://x@127.0.0.1:1/x", CacheTTL: caddy.Duration(11 * time.Second)}
	if _, _, err := mod.AcquireStore(caddy.Context{}); err == nil {
		t.Errorf("cache_ttl of 11s accepted")
	}
}

// TestPgTwoCaddyProcesses: two Caddy servers (subprocesses) share one
// database. A token created through A's admin API works on B; a revoke
// through A is in force on B within a second; with the database down B
// answers 503 without a challenge for opaque tokens while JWTs still pass;
// and it recovers when the database is back.
func TestPgTwoCaddyProcesses(t *testing.T) {
	caddyBinary(t) // skips under -short
	srv := ownPGServer(t)
	dsn := srv.newDatabase(t)
	const secret = "a-jwt-secret-of-at-least-32-bytes!!"
	block := fmt.Sprintf("\ttoken_auth {\n\t\tstore postgres %q\n\t\tjwt {\n\t\t\tsecret %q\n\t\t}\n\t}\n", dsn, secret)
	a := startCaddy(t, t.TempDir(), block)
	b := startCaddy(t, t.TempDir(), block)

	create := func(user string) (string, string) {
		t.Helper()
		status, body := a.adminRequest("POST", "/token_auth/tokens", `{"user":"`+user+`"}`)
		if status != http.StatusCreated {
			t.Fatalf("create: %d %s", status, body)
		}
		var out issuedToken
		if err := json.Unmarshal([]byte(body), &out); err != nil || out.Token == "" {
			t.Fatalf("create: %s %v", body, err)
		}
		return out.ID, out.Token
	}
	id, tok := create("alice")
	if status, body := b.get(tok); status != 200 || body != "user=alice" {
		t.Fatalf("B with a token created on A: %d %q", status, body)
	}
	if status, body := a.getBearer(tok); status != 200 || body != "user=alice" {
		t.Fatalf("A: %d %q", status, body)
	}
	if status, body := a.adminRequest("DELETE", "/token_auth/tokens/"+id, ""); status != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", status, body)
	}
	revoked := time.Now()
	if status, _ := a.get(tok); status != http.StatusUnauthorized {
		t.Errorf("A right after its revoke: %d", status)
	}
	took := waitFor(t, time.Second, "revoked on B", func() bool {
		status, _ := b.get(tok)
		return status == http.StatusUnauthorized
	})
	t.Logf("revoke through A in force on B after %s (%s after the response)", took, time.Since(revoked))

	claims := jwt.MapClaims{"sub": "bob", "exp": time.Now().Add(time.Hour).Unix()}
	jwtTok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	_, tok2 := create("carol")

	if err := srv.stop(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	resp := rawGet(t, b.site+"/?token="+tok2, "")
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("WWW-Authenticate") != "" {
		t.Errorf("B with the database down: %d, WWW-Authenticate %q; want 503 without it", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	t.Logf("503 after %s with the database down", time.Since(start))
	if status, body := b.getBearer(jwtTok); status != 200 || body != "user=bob" {
		t.Errorf("JWT with the database down: %d %q", status, body)
	}
	if status, _ := a.adminRequest("POST", "/token_auth/tokens", `{"user":"x"}`); status != http.StatusServiceUnavailable {
		t.Errorf("admin create with the database down: %d, want 503", status)
	}

	if err := srv.start(); err != nil {
		t.Fatal(err)
	}
	took = waitFor(t, 15*time.Second, "B serving again", func() bool {
		status, _ := b.get(tok2)
		return status == 200
	})
	t.Logf("B serving opaque tokens %s after the database restarted", took)

	// A graceful stop flushes last_used_at.
	for _, p := range []*caddyProc{a, b} {
		if status, body := p.adminRequest("POST", "/stop", ""); status != 200 {
			t.Fatalf("stop: %d %s", status, body)
		}
		if err := p.wait(15 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	var used *time.Time
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, `SELECT t.last_used_at FROM token_auth_tokens t WHERE user_id = 'carol'`).Scan(&used); err != nil || used == nil {
		t.Errorf("last_used_at after a graceful stop: %v %v", used, err)
	}
}

// rawGet is a GET whose whole response (headers too) the caller inspects.
func rawGet(t *testing.T, url, bearer string) *http.Response {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// BenchmarkLookup compares a warm-cache lookup in bbolt and PostgreSQL, and
// a PostgreSQL cache miss (one query on a local server).
func BenchmarkLookup(b *testing.B) {
	ctx := context.Background()
	b.Run("bolt", func(b *testing.B) {
		s, err := openBoltStore(filepath.Join(b.TempDir(), "tokens.db"))
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		d := mustInsert(b, s, "tok_bench", "alice")
		mustLookup(b, s, d)
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			if _, err := s.Lookup(ctx, d); err != nil {
				b.Fatal(err)
			}
		}
	})
	dsn := sharedPGServer(b).newDatabase(b)
	s := openTestPgStore(b, dsn, pgMaxCacheTTL)
	d := mustInsert(b, s, "tok_bench", "alice")
	b.Run("postgres-cached", func(b *testing.B) {
		mustLookup(b, s, d)
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			if _, err := s.Lookup(ctx, d); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("postgres-cached-parallel", func(b *testing.B) {
		mustLookup(b, s, d)
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.Lookup(ctx, d); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("postgres-miss", func(b *testing.B) {
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			s.forget(d[:])
			if _, err := s.Lookup(ctx, d); err != nil {
				b.Fatal(err)
			}
		}
	})
}
