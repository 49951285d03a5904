package tokenauth

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddytest"
)

// The admin API's handler, driven directly: its routing, its answers and
// its errors, over real bbolt stores in the shared pool. The same routes
// through a running Caddy are covered in command_test.go and by
// TestAdminAPIThroughCaddy.

// adminStore opens a pooled store in a temporary folder, as a token_auth
// handler's Provision does, and returns its path.
func adminStore(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tokens.db")
	_, key, err := acquireBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = releaseStore(key) })
	return key
}

// adminDo sends one request to the admin handler and returns the status,
// the body, and the error the admin server would render.
func adminDo(t *testing.T, method, target string, body string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, target, rd)
	rec := httptest.NewRecorder()
	err := (&adminAPI{}).handleAPI(rec, req)
	if err != nil {
		apiErr, ok := err.(caddy.APIError)
		if !ok {
			t.Fatalf("%s %s: error is %T, not caddy.APIError: %v", method, target, err, err)
		}
		return apiErr.HTTPStatus, []byte(apiErr.Error())
	}
	return rec.Code, rec.Body.Bytes()
}

func withDB(target, db string) string {
	sep := "?"
	if strings.Contains(target, "?") {
		sep = "&"
	}
	return target + sep + "db=" + url.QueryEscape(db)
}

func TestAdminLifecycle(t *testing.T) {
	db := adminStore(t)
	store := openStores()[db]

	// create
	code, body := adminDo(t, "POST", withDB("/token_auth/tokens", db),
		`{"user":"alice","name":"CI","scopes":["read","write"],"meta":{"team":"a"},"expires_in":"30d"}`)
	if code != http.StatusCreated {
		t.Fatalf("create: %d %s", code, body)
	}
	var issued issuedToken
	if err := json.Unmarshal(body, &issued); err != nil {
		t.Fatal(err)
	}
	if checkTokenShape(issued.Token) != "" || !strings.HasPrefix(issued.Token, tokenPrefix) {
		t.Fatalf("create returned token %q", issued.Token)
	}
	if issued.User != "alice" || issued.Name != "CI" || len(issued.Scopes) != 2 || issued.Meta["team"] != "a" {
		t.Fatalf("create returned record %+v", issued.TokenRecord)
	}
	if issued.ExpiresAt == nil || issued.ExpiresAt.Sub(issued.CreatedAt) != 30*24*time.Hour {
		t.Fatalf("expires_at %v, created_at %v; want 30 days apart", issued.ExpiresAt, issued.CreatedAt)
	}
	rec, err := store.Lookup(context.Background(), digestOf(issued.Token))
	if err != nil || rec.ID != issued.ID {
		t.Fatalf("created token not in the store: %v %v", rec, err)
	}

	// a second user's token, a legacy value
	code, body = adminDo(t, "POST", withDB("/token_auth/tokens", db), `{"user":"bob","token":"legacy-token-0123456789","expires_in":"never"}`)
	if code != http.StatusCreated {
		t.Fatalf("create legacy: %d %s", code, body)
	}
	var bob issuedToken
	_ = json.Unmarshal(body, &bob)
	if bob.Token != "legacy-token-0123456789" || bob.ExpiresAt != nil {
		t.Fatalf("legacy create: %+v", bob)
	}
	// the same legacy value again is a conflict
	if code, body := adminDo(t, "POST", withDB("/token_auth/tokens", db), `{"user":"bob","token":"legacy-token-0123456789"}`); code != http.StatusConflict {
		t.Fatalf("duplicate legacy token: %d %s, want 409", code, body)
	}

	// list, all and by user; never a secret
	code, body = adminDo(t, "GET", withDB("/token_auth/tokens", db), "")
	if code != http.StatusOK {
		t.Fatalf("list: %d %s", code, body)
	}
	if bytes.Contains(body, []byte(issued.Token)) || bytes.Contains(body, []byte(bob.Token)) || bytes.Contains(body, []byte(`"token"`)) {
		t.Fatalf("list shows a secret: %s", body)
	}
	var all []TokenRecord
	if err := json.Unmarshal(body, &all); err != nil || len(all) != 2 {
		t.Fatalf("list: %v %s", err, body)
	}
	code, body = adminDo(t, "GET", withDB("/token_auth/tokens?user=bob", db), "")
	var bobs []TokenRecord
	if err := json.Unmarshal(body, &bobs); code != 200 || err != nil || len(bobs) != 1 || bobs[0].ID != bob.ID {
		t.Fatalf("list ?user=bob: %d %s", code, body)
	}
	code, body = adminDo(t, "GET", withDB("/token_auth/tokens?user=nobody", db), "")
	if code != 200 || strings.TrimSpace(string(body)) != "[]" {
		t.Fatalf("list of nobody: %d %q, want []", code, body)
	}

	// show
	code, body = adminDo(t, "GET", withDB("/token_auth/tokens/"+issued.ID, db), "")
	var shown TokenRecord
	if err := json.Unmarshal(body, &shown); code != 200 || err != nil || shown.ID != issued.ID || shown.Meta["team"] != "a" {
		t.Fatalf("show: %d %s", code, body)
	}
	if bytes.Contains(body, []byte(issued.Token)) {
		t.Fatal("show reveals the token")
	}

	// rotate with grace
	code, body = adminDo(t, "POST", withDB("/token_auth/tokens/"+issued.ID+"/rotate", db), `{"grace":"1h"}`)
	if code != http.StatusCreated {
		t.Fatalf("rotate: %d %s", code, body)
	}
	var rotated issuedToken
	_ = json.Unmarshal(body, &rotated)
	if rotated.ID == issued.ID || rotated.Token == issued.Token || rotated.User != "alice" || rotated.Meta["team"] != "a" || len(rotated.Scopes) != 2 {
		t.Fatalf("rotated: %+v", rotated)
	}
	old, _ := store.Get(context.Background(), issued.ID)
	if old.RevokedAt == nil || old.refusal(time.Now()) != "" || old.refusal(time.Now().Add(61*time.Minute)) != "token revoked" {
		t.Fatalf("old token after rotate with 1h grace: revoked_at %v", old.RevokedAt)
	}

	// revoke one: 204, and the store refuses it at once
	code, body = adminDo(t, "DELETE", withDB("/token_auth/tokens/"+rotated.ID, db), "")
	if code != http.StatusNoContent || len(body) != 0 {
		t.Fatalf("revoke: %d %s", code, body)
	}
	rec, err = store.Lookup(context.Background(), digestOf(rotated.Token))
	if err != nil || rec.refusal(time.Now()) != "token revoked" {
		t.Fatalf("after revoke, lookup: %+v %v", rec, err)
	}
	// rotating a revoked token is a conflict
	if code, body := adminDo(t, "POST", withDB("/token_auth/tokens/"+rotated.ID+"/rotate", db), ""); code != http.StatusConflict {
		t.Fatalf("rotate revoked: %d %s, want 409", code, body)
	}

	// revoke all of a user's
	code, body = adminDo(t, "DELETE", withDB("/token_auth/tokens?user=alice", db), "")
	if code != 200 || strings.TrimSpace(string(body)) != `{"revoked":1}` { // the rotated-away one; the other is revoked
		t.Fatalf("revoke user: %d %s", code, body)
	}

	// export: every record with its digest, never a token
	code, body = adminDo(t, "GET", withDB("/token_auth/export", db), "")
	if code != 200 {
		t.Fatalf("export: %d %s", code, body)
	}
	lines := strings.Split(strings.TrimSpace(string(body)), "\n")
	if len(lines) != 3 {
		t.Fatalf("export has %d lines, want 3:\n%s", len(lines), body)
	}
	for _, secret := range []string{issued.Token, rotated.Token, bob.Token} {
		if bytes.Contains(body, []byte(secret)) {
			t.Fatalf("export contains a token")
		}
	}
	for _, l := range lines {
		var e ExportedRecord
		if err := json.Unmarshal([]byte(l), &e); err != nil || len(e.Digest) != 64 {
			t.Fatalf("export line %q: %v", l, err)
		}
	}

	// import into a second store: what export wrote, plus a legacy line
	db2 := adminStore(t)
	imp := string(body) + `{"user":"carol","token":"carol-legacy-token-000001"}` + "\n"
	code, body = adminDo(t, "POST", withDB("/token_auth/import", db2), imp)
	if code != 200 || strings.TrimSpace(string(body)) != `{"imported":4,"skipped":0}` {
		t.Fatalf("import: %d %s", code, body)
	}
	code, body = adminDo(t, "POST", withDB("/token_auth/import", db2), imp)
	if code != 200 || strings.TrimSpace(string(body)) != `{"imported":0,"skipped":4}` {
		t.Fatalf("import again: %d %s", code, body)
	}
	s2 := openStores()[db2]
	if r, err := s2.Lookup(context.Background(), digestOf("carol-legacy-token-000001")); err != nil || r.User != "carol" {
		t.Fatalf("imported legacy token: %v %v", r, err)
	}
	if r, err := s2.Lookup(context.Background(), digestOf(bob.Token)); err != nil || r.ID != bob.ID || r.refusal(time.Now()) != "" {
		t.Fatalf("imported export of bob: %+v %v", r, err)
	}
	if r, _ := s2.Lookup(context.Background(), digestOf(rotated.Token)); r == nil || r.refusal(time.Now()) != "token revoked" {
		t.Fatal("revocation lost in export/import")
	}
}

func TestAdminErrors(t *testing.T) {
	db := adminStore(t)
	code, body := adminDo(t, "POST", withDB("/token_auth/tokens", db), `{"user":"alice"}`)
	if code != 201 {
		t.Fatalf("create: %d %s", code, body)
	}
	var issued issuedToken
	_ = json.Unmarshal(body, &issued)

	tests := []struct {
		method, target, body string
		status               int
		msg                  string // in the error
	}{
		{"POST", "/token_auth/tokens", `{"user":`, 400, "bad JSON"},
		{"POST", "/token_auth/tokens", ``, 400, "empty"},
		{"POST", "/token_auth/tokens", `{"user":"a","scope":["x"]}`, 400, `unknown field "scope"`},
		{"POST", "/token_auth/tokens", `{"user":"a"} {"user":"b"}`, 400, "more than one"},
		{"POST", "/token_auth/tokens", `{"name":"no user"}`, 400, "user is required"},
		{"POST", "/token_auth/tokens", `{"user":"a","expires_in":"soon"}`, 400, "expiry"},
		{"POST", "/token_auth/tokens", `{"user":"a","expires_in":"-1h"}`, 400, "expiry"},
		{"POST", "/token_auth/tokens", `{"user":"a","expires_in":"1h","expires_at":"2030-01-01T00:00:00Z"}`, 400, "not both"},
		{"POST", "/token_auth/tokens", `{"user":"a","token":"short"}`, 400, "printable"},
		{"POST", "/token_auth/tokens", `{"user":"a","meta":{"id":"x"}}`, 400, "reserved"},
		{"POST", "/token_auth/tokens", `{"user":"a\nb"}`, 400, "control"},
		{"POST", "/token_auth/tokens", `{"user":"` + strings.Repeat("x", maxAdminBody) + `"}`, 413, "larger than"},
		{"GET", "/token_auth/tokens/tok_nope", ``, 404, "no such token: tok_nope"},
		{"DELETE", "/token_auth/tokens/tok_nope", ``, 404, "no such token: tok_nope"},
		{"DELETE", "/token_auth/tokens", ``, 400, "?user="},
		{"POST", "/token_auth/tokens/tok_nope/rotate", `{"grace":"1h"}`, 404, "no such token"},
		{"POST", "/token_auth/tokens/" + issued.ID + "/rotate", `{"grace":"tomorrow"}`, 400, "grace"},
		{"POST", "/token_auth/tokens/" + issued.ID + "/rotate", `{"grace":"-1h"}`, 400, "grace"},
		{"POST", "/token_auth/tokens/" + issued.ID + "/rotate", `{"grace":"1h","extra":1}`, 400, "unknown field"},
		{"POST", "/token_auth/import", `{"user":"a"}`, 400, `line 1`},
		{"POST", "/token_auth/import", `{"user":"a","token":"legacy-token-0123456789"}` + "\nnot json\n", 400, "line 2"},
		// routing: exact paths only, methods checked
		{"PUT", "/token_auth/tokens", ``, 405, "not allowed"},
		{"POST", "/token_auth/tokens/" + issued.ID, ``, 405, "not allowed"},
		{"GET", "/token_auth/tokens/" + issued.ID + "/rotate", ``, 405, "not allowed"},
		{"GET", "/token_auth/import", ``, 405, "not allowed"},
		{"POST", "/token_auth/export", ``, 405, "not allowed"},
		{"GET", "/token_auth/", ``, 404, "not found"},
		{"GET", "/token_auth/tokens/", ``, 404, "not found"},
		{"GET", "/token_auth/tokensx", ``, 404, "not found"},
		{"GET", "/token_auth/xtokens", ``, 404, "not found"},
		{"GET", "/token_auth/export/x", ``, 404, "not found"},
		{"GET", "/token_auth/tokens/" + issued.ID + "/rotate/x", ``, 404, "not found"},
		{"POST", "/token_auth/tokens/" + issued.ID + "/rotatex", ``, 404, "not found"},
		{"GET", "/token_auth/something/tokens", ``, 404, "not found"},
		// ?db= naming no open store
		{"GET", "/token_auth/tokens?db=" + url.QueryEscape(filepath.Join(t.TempDir(), "other.db")), ``, 404, "no token_auth store is open at"},
	}
	for _, tt := range tests {
		target := tt.target
		if !strings.Contains(target, "db=") {
			target = withDB(target, db)
		}
		code, body := adminDo(t, tt.method, target, tt.body)
		if code != tt.status || !strings.Contains(string(body), tt.msg) {
			t.Errorf("%s %s %.60q: got %d %q; want %d containing %q", tt.method, tt.target, tt.body, code, body, tt.status, tt.msg)
		}
	}
	// the failed rotate with an unknown field did not rotate
	if rec, _ := openStores()[db].Get(context.Background(), issued.ID); rec.RevokedAt != nil {
		t.Fatal("a refused rotate changed the token")
	}
}

// TestAdminStoreChoice covers ?db= and the answers when zero, one or
// several stores are open.
func TestAdminStoreChoice(t *testing.T) {
	if n := len(openStores()); n != 0 {
		t.Skipf("%d store(s) already open in this process (an in-process Caddy of another test); the store choice needs none", n)
	}
	code, body := adminDo(t, "GET", "/token_auth/tokens", "")
	if code != 404 || !strings.Contains(string(body), "no token_auth store is open in this config") {
		t.Fatalf("no store: %d %s", code, body)
	}

	db1 := adminStore(t)
	code, body = adminDo(t, "POST", "/token_auth/tokens", `{"user":"one"}`)
	if code != 201 {
		t.Fatalf("with one store open, no ?db= needed: %d %s", code, body)
	}

	db2 := adminStore(t)
	code, body = adminDo(t, "GET", "/token_auth/tokens", "")
	if code != 400 || !strings.Contains(string(body), db1) || !strings.Contains(string(body), db2) || !strings.Contains(string(body), "?db=") {
		t.Fatalf("two stores, no ?db=: %d %s; want 400 listing both paths", code, body)
	}

	// ?db= is made absolute against the working directory before matching
	wd, _ := os.Getwd()
	rel, err := filepath.Rel(wd, db2)
	if err != nil {
		t.Fatal(err)
	}
	code, body = adminDo(t, "GET", "/token_auth/tokens?db="+url.QueryEscape(rel), "")
	if code != 200 || strings.TrimSpace(string(body)) != "[]" {
		t.Fatalf("?db=<relative path of the second store>: %d %s", code, body)
	}
	code, body = adminDo(t, "GET", withDB("/token_auth/tokens", db1), "")
	if code != 200 || !strings.Contains(string(body), `"user":"one"`) {
		t.Fatalf("?db=<first store>: %d %s", code, body)
	}
}

// TestRevokeUnderConcurrentLookups: a revoke is in force for every lookup
// that starts after it returns, even while other requests with the same
// token are being looked up (and cached) concurrently.
func TestRevokeUnderConcurrentLookups(t *testing.T) {
	db := adminStore(t)
	store := openStores()[db]
	ctx := context.Background()
	for round := 0; round < 50; round++ {
		rec, token, err := createToken(ctx, store, CreateRequest{User: "u"}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		digest := digestOf(token)
		var stop atomic.Bool
		var wg sync.WaitGroup
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !stop.Load() {
					_, _ = store.Lookup(ctx, digest)
				}
			}()
		}
		time.Sleep(200 * time.Microsecond)
		if _, err := store.Revoke(ctx, rec.ID, revocationTime()); err != nil {
			t.Fatal(err)
		}
		got, err := store.Lookup(ctx, digest)
		stop.Store(true)
		wg.Wait()
		if err != nil {
			t.Fatal(err)
		}
		if got.refusal(time.Now()) != "token revoked" {
			t.Fatalf("round %d: a lookup after the revoke returned the token as valid", round)
		}
		// and it stays refused once the racing lookups are done
		if got, _ := store.Lookup(ctx, digest); got.refusal(time.Now()) != "token revoked" {
			t.Fatalf("round %d: a stale record was cached", round)
		}
	}
}

// TestAdminAPIThroughCaddy loads a config into an in-process Caddy
// (caddytest) and drives the admin API module as Caddy serves it,
// checking the protected site after each change.
func TestAdminAPIThroughCaddy(t *testing.T) {
	db := filepath.Join(t.TempDir(), "tokens.db")
	tester := caddytest.NewTester(t)
	tester.InitServer(fmt.Sprintf(`
	{
		admin localhost:2999
		skip_install_trust
		http_port 9080
		https_port 9443
		persist_config off
	}
	:9080 {
		token_auth {
			db %s
		}
		respond "user={http.auth.user.id}"
	}`, db), "caddyfile")
	admin := "http://localhost:2999"
	// Always name the store: other tests in this process may hold stores open too.
	q := "?db=" + url.QueryEscape(db)
	get := func(url string, status int) string { // the body of a GET answered with status
		t.Helper()
		req, _ := http.NewRequest("GET", url, nil)
		resp := tester.AssertResponseCode(req, status)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}

	req, _ := http.NewRequest("POST", admin+"/token_auth/tokens"+q, strings.NewReader(`{"user":"alice","scopes":["read"]}`))
	resp := tester.AssertResponseCode(req, 201)
	var issued issuedToken
	if err := json.NewDecoder(resp.Body).Decode(&issued); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	tester.AssertGetResponse("http://localhost:9080/?token="+issued.Token, 200, "user=alice")

	req, _ = http.NewRequest("GET", "http://localhost:9080/", nil)
	req.Header.Set("Authorization", "Bearer "+issued.Token)
	tester.AssertResponse(req, 200, "user=alice")

	// the record, by ID and in the list; never the token
	body := get(admin+"/token_auth/tokens/"+issued.ID+q, 200)
	if !strings.Contains(body, issued.ID) || strings.Contains(body, issued.Token) {
		t.Fatalf("GET /token_auth/tokens/{id}: %s", body)
	}
	body = get(admin+"/token_auth/tokens"+q+"&user=alice", 200)
	if !strings.Contains(body, issued.ID) || strings.Contains(body, issued.Token) {
		t.Fatalf("GET /token_auth/tokens?user=alice: %s", body)
	}

	// rotate without grace: the new token works, the old one no longer
	req, _ = http.NewRequest("POST", admin+"/token_auth/tokens/"+issued.ID+"/rotate"+q, strings.NewReader(`{"grace":"0s"}`))
	resp = tester.AssertResponseCode(req, 201)
	var next issuedToken
	if err := json.NewDecoder(resp.Body).Decode(&next); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	tester.AssertGetResponse("http://localhost:9080/?token="+next.Token, 200, "user=alice")
	tester.AssertGetResponse("http://localhost:9080/?token="+issued.Token, 401, "")

	// revoke: in force for the next request
	tester.AssertDeleteResponse(admin+"/token_auth/tokens/"+next.ID+q, 204, "")
	tester.AssertGetResponse("http://localhost:9080/?token="+next.Token, 401, "")
	req, _ = http.NewRequest("DELETE", admin+"/token_auth/tokens/"+next.ID+"x"+q, nil)
	tester.AssertResponseCode(req, 404)

	// import a legacy token, export it back as a digest
	req, _ = http.NewRequest("POST", admin+"/token_auth/import"+q, strings.NewReader(`{"user":"bob","token":"bob-legacy-token-0000001"}`+"\n"))
	tester.AssertResponse(req, 200, `{"imported":1,"skipped":0}`+"\n")
	tester.AssertGetResponse("http://localhost:9080/?token=bob-legacy-token-0000001", 200, "user=bob")
	body = get(admin+"/token_auth/export"+q, 200)
	if strings.Count(body, "\n") != 3 || strings.Contains(body, "bob-legacy-token-0000001") || !strings.Contains(body, digestOf("bob-legacy-token-0000001").String()) {
		t.Fatalf("export:\n%s", body)
	}
	tester.AssertDeleteResponse(admin+"/token_auth/tokens"+q+"&user=bob", 200, `{"revoked":1}`+"\n")
	tester.AssertGetResponse("http://localhost:9080/?token=bob-legacy-token-0000001", 401, "")
}
