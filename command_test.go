package tokenauth

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// End-to-end tests of `caddy token-auth` and of the admin API, against a
// real Caddy binary built from this checkout and run as a subprocess.

var tokenLine = regexp.MustCompile(`^tka_[0-9A-Za-z]{49}\n$`)

// createToken runs `caddy token-auth create` and returns the token it printed.
func cliCreate(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out := cliOK(t, dir, "", append([]string{"token-auth", "create"}, args...)...)
	if !tokenLine.MatchString(out) {
		t.Fatalf("create printed %q; want the token alone on a line", out)
	}
	return strings.TrimSpace(out)
}

func cliRecord(t *testing.T, dir string, args ...string) issuedToken {
	t.Helper()
	out := cliOK(t, dir, "", args...)
	var rec issuedToken
	if err := json.Unmarshal([]byte(out), &rec); err != nil {
		t.Fatalf("caddy %s: output is not a JSON record: %v\n%s", strings.Join(args, " "), err, out)
	}
	return rec
}

func wantStatus(t *testing.T, what string, got int, body string, want int) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: HTTP %d %q, want %d", what, got, body, want)
	}
}

// TestCLIThroughAdminAPI drives every verb through a running Caddy's admin
// API and checks what the protected site then does.
func TestCLIThroughAdminAPI(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "tokens.db")
	c := startCaddy(t, dir, tokenAuthBlock(db))
	addr := "--address=" + c.admin
	var secrets []string

	// no credential
	code, body := c.get("")
	wantStatus(t, "no token", code, body, 401)

	// create: the token alone on stdout; it works in the query and as Bearer
	alice := cliCreate(t, dir, addr, "--user", "alice", "--name", "laptop")
	secrets = append(secrets, alice)
	code, body = c.get(alice)
	wantStatus(t, "alice's new token in the query", code, body, 200)
	if body != "user=alice" {
		t.Fatalf("body %q, want user=alice", body)
	}
	code, body = c.getBearer(alice)
	wantStatus(t, "alice's new token as Bearer", code, body, 200)

	// create --json, with scopes, metadata, an expiry
	bob := cliRecord(t, dir, "token-auth", "create", addr, "--user", "bob", "--scope", "read", "--scope", "write",
		"--meta", "team=blue", "--meta", "plan=pro", "--expires", "720h", "--json")
	secrets = append(secrets, bob.Token)
	if !tokenLine.MatchString(bob.Token+"\n") || bob.User != "bob" || strings.Join(bob.Scopes, " ") != "read write" ||
		bob.Meta["team"] != "blue" || bob.Meta["plan"] != "pro" || bob.ExpiresAt == nil ||
		bob.ExpiresAt.Sub(bob.CreatedAt) != 720*time.Hour || !strings.HasPrefix(bob.ID, "tok_") {
		t.Fatalf("create --json: %+v", bob)
	}
	// default expiry: 90 days
	var list []TokenRecord
	if err := json.Unmarshal([]byte(cliOK(t, dir, "", "token-auth", "list", addr, "--user", "alice", "--json")), &list); err != nil || len(list) != 1 {
		t.Fatalf("list --user alice --json: %v %v", list, err)
	}
	aliceID := list[0].ID
	if list[0].ExpiresAt == nil || list[0].ExpiresAt.Sub(list[0].CreatedAt) != 90*24*time.Hour || list[0].Name != "laptop" {
		t.Fatalf("alice's record: %+v", list[0])
	}

	// last_used_at appears after use (pending uses show at once through the API)
	rec := cliRecord(t, dir, "token-auth", "show", aliceID, addr, "--json")
	if rec.LastUsedAt == nil || time.Since(*rec.LastUsedAt) > time.Minute {
		t.Fatalf("alice's last_used_at after use: %v", rec.LastUsedAt)
	}
	if rec.Token != "" {
		t.Fatal("show --json shows the token")
	}
	// ...and reaches the file within the batching interval (read the raw bytes: the file is locked)
	deadline := time.Now().Add(8 * time.Second)
	for !bytes.Contains(readFile(t, db), []byte(`"last_used_at":"20`)) {
		if time.Now().After(deadline) {
			t.Fatal("last_used_at not written to the file within 8 s of a use")
		}
		time.Sleep(250 * time.Millisecond)
	}

	// list and show tables
	table := cliOK(t, dir, "", "token-auth", "list", addr)
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 3 || !regexp.MustCompile(`^ID +USER +NAME +SCOPES +EXPIRES +LAST USED +STATUS$`).MatchString(lines[0]) {
		t.Fatalf("list table:\n%s", table)
	}
	if !strings.Contains(table, aliceID) || !strings.Contains(table, bob.ID) || !strings.Contains(table, "read,write") ||
		!strings.Contains(table, "active") || strings.Contains(table, alice) {
		t.Fatalf("list table:\n%s", table)
	}
	show := cliOK(t, dir, "", "token-auth", "show", bob.ID, addr)
	if !strings.Contains(show, bob.ID) || !strings.Contains(show, "bob") || strings.Count(show, "\n") != 2 {
		t.Fatalf("show table:\n%s", show)
	}

	// revoke: the next request is refused
	if out := cliOK(t, dir, "", "token-auth", "revoke", aliceID, addr); !strings.Contains(out, aliceID) {
		t.Fatalf("revoke printed %q", out)
	}
	code, body = c.get(alice)
	wantStatus(t, "alice's token right after revoke", code, body, 401)
	if st := cliRecord(t, dir, "token-auth", "show", aliceID, addr, "--json"); st.RevokedAt == nil {
		t.Fatal("revoked token has no revoked_at")
	}
	if !strings.Contains(cliOK(t, dir, "", "token-auth", "show", aliceID, addr), "revoked") {
		t.Fatal("show table does not say revoked")
	}

	// rotate with a grace period: the old token works during it, not after
	code, _ = c.get(bob.Token)
	wantStatus(t, "bob before rotate", code, "", 200)
	start := time.Now()
	next := cliRecord(t, dir, "token-auth", "rotate", bob.ID, "--grace", "3s", addr, "--json")
	secrets = append(secrets, next.Token)
	if next.ID == bob.ID || next.User != "bob" || strings.Join(next.Scopes, " ") != "read write" || next.Meta["team"] != "blue" {
		t.Fatalf("rotated record: %+v", next)
	}
	code, body = c.get(next.Token)
	wantStatus(t, "the rotated token", code, body, 200)
	code, body = c.get(bob.Token)
	if time.Since(start) < 2*time.Second {
		wantStatus(t, "the old token during the grace period", code, body, 200)
	}
	time.Sleep(time.Until(start.Add(4500 * time.Millisecond)))
	code, body = c.get(bob.Token)
	wantStatus(t, "the old token after the grace period", code, body, 401)
	code, body = c.get(next.Token)
	wantStatus(t, "the rotated token after the grace period", code, body, 200)

	// rotate without grace: the old one stops at once; rotate prints the token alone
	third := strings.TrimSpace(cliOK(t, dir, "", "token-auth", "rotate", next.ID, addr))
	secrets = append(secrets, third)
	if !tokenLine.MatchString(third + "\n") {
		t.Fatalf("rotate printed %q", third)
	}
	code, body = c.get(next.Token)
	wantStatus(t, "rotated-away token (no grace)", code, body, 401)
	code, body = c.get(third)
	wantStatus(t, "third token", code, body, 200)

	// expiry
	short := cliCreate(t, dir, addr, "--user", "carol", "--expires", "2s")
	secrets = append(secrets, short)
	code, body = c.get(short)
	wantStatus(t, "short-lived token", code, body, 200)
	time.Sleep(2500 * time.Millisecond)
	code, body = c.get(short)
	wantStatus(t, "short-lived token after its expiry", code, body, 401)
	code, body = c.get(third)
	wantStatus(t, "third token", code, body, 200)

	// revoke --user
	cliCreate(t, dir, addr, "--user", "bob") // a second token of bob's
	if out := cliOK(t, dir, "", "token-auth", "revoke", "--user", "bob", addr); !strings.Contains(out, "revoked 2 token(s) of user bob") {
		t.Fatalf("revoke --user printed %q", out) // third + the new one
	}
	code, body = c.get(third)
	wantStatus(t, "bob's token after revoke --user", code, body, 401)

	// import legacy tokens through the API, from stdin and from --file
	legacy := `{"user":"dave","token":"dave-legacy-token-000000001","scopes":["read"]}` + "\n" +
		`{"user":"erin","token":"erin-legacy-token-000000002","expires_at":"2099-01-01T00:00:00Z"}` + "\n"
	secrets = append(secrets, "dave-legacy-token-000000001", "erin-legacy-token-000000002")
	if out := cliOK(t, dir, legacy, "token-auth", "import", addr); !strings.Contains(out, "imported 2, skipped 0") {
		t.Fatalf("import printed %q", out)
	}
	f := filepath.Join(dir, "legacy.jsonl")
	writeFile(t, f, legacy)
	if out := cliOK(t, dir, "", "token-auth", "import", "--file", f, addr); !strings.Contains(out, "imported 0, skipped 2") {
		t.Fatalf("import again printed %q", out)
	}
	code, body = c.get("dave-legacy-token-000000001")
	wantStatus(t, "imported legacy token", code, body, 200)
	if body != "user=dave" {
		t.Fatalf("imported legacy token authenticates as %q", body)
	}
	code, body = c.getBearer("erin-legacy-token-000000002")
	wantStatus(t, "imported legacy token as Bearer", code, body, 200)

	// export: every record with its digest, never a token; to stdout and to --file
	exp := cliOK(t, dir, "", "token-auth", "export", addr)
	if n := strings.Count(exp, "\n"); n != 8 {
		t.Fatalf("export has %d lines, want 8:\n%s", n, exp)
	}
	for _, s := range secrets {
		if strings.Contains(exp, s) {
			t.Fatalf("export contains the token %s", s)
		}
	}
	expFile := filepath.Join(dir, "export.jsonl")
	cliOK(t, dir, "", "token-auth", "export", "--file", expFile, addr)
	if got := string(readFile(t, expFile)); got != exp {
		t.Fatalf("export --file differs from stdout")
	}
	if fi, _ := os.Stat(expFile); fi.Mode().Perm() != 0o600 {
		t.Fatalf("export file mode %v, want 0600", fi.Mode().Perm())
	}

	// errors: non-zero exit and a one-line reason
	cliFails(t, dir, "--user is required", "token-auth", "create", addr)
	cliFails(t, dir, "expiry", "token-auth", "create", addr, "--user", "x", "--expires", "soon")
	cliFails(t, dir, "key=value", "token-auth", "create", addr, "--user", "x", "--meta", "novalue")
	cliFails(t, dir, "HTTP 409", "token-auth", "create", addr, "--user", "x", "--token", "dave-legacy-token-000000001")
	cliFails(t, dir, "HTTP 404: no such token: tok_nope", "token-auth", "show", "tok_nope", addr)
	cliFails(t, dir, "no such token: tok_nope", "token-auth", "revoke", "tok_nope", addr)
	cliFails(t, dir, "exactly one token ID", "token-auth", "show", addr)
	cliFails(t, dir, "give the IDs", "token-auth", "revoke", addr)
	cliFails(t, dir, "not both", "token-auth", "revoke", aliceID, "--user", "alice", addr)
	cliFails(t, dir, "grace", "token-auth", "rotate", third, "--grace", "a while", addr)
	cliFails(t, dir, "HTTP 409: cannot rotate", "token-auth", "rotate", aliceID, addr)
	cliFails(t, dir, "HTTP 400: import stopped", "token-auth", "import", "--file", writeFile(t, filepath.Join(dir, "bad.jsonl"), "{bad\n"), addr)
	cliFails(t, dir, "no token_auth store is open at", "token-auth", "list", addr, "--db", filepath.Join(dir, "other.db"))
	cliFails(t, dir, "cannot reach Caddy's admin API", "token-auth", "list", fmt.Sprintf("--address=localhost:%d", freePort(t)))

	// the admin API directly: exact routes, methods
	code, body = c.adminRequest("PUT", "/token_auth/tokens", "")
	wantStatus(t, "PUT /token_auth/tokens", code, body, 405)
	code, body = c.adminRequest("GET", "/token_auth/tokensx", "")
	wantStatus(t, "GET /token_auth/tokensx", code, body, 404)
	code, body = c.adminRequest("POST", "/token_auth/tokens", `{"user":"x","bogus":1}`)
	wantStatus(t, "unknown field", code, body, 400)
	code, body = c.adminRequest("DELETE", "/token_auth/tokens/"+bob.ID, "")
	wantStatus(t, "DELETE a token", code, body, 204)
	code, body = c.adminRequest("DELETE", "/token_auth/tokens?user=dave", "")
	wantStatus(t, "DELETE ?user=dave", code, body, 200)
	if strings.TrimSpace(body) != `{"revoked":1}` {
		t.Fatalf("DELETE ?user=dave: %s", body)
	}
	code, _ = c.get("dave-legacy-token-000000001")
	wantStatus(t, "dave after DELETE ?user=dave", code, "", 401)

	// --db on the file the running Caddy holds: fails fast, points to the admin API
	r := cli(t, dir, "", "token-auth", "list", "--db", db)
	if r.code == 0 || r.took > 5*time.Second || !strings.Contains(r.stderr, "admin API") || strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
		t.Fatalf("--db on the held file: exit %d after %v, stderr %q", r.code, r.took, r.stderr)
	}
	t.Logf("--db on the held file failed after %v: %s", r.took.Round(time.Millisecond), strings.TrimSpace(r.stderr))

	// graceful stop flushes pending last_used_at: use a fresh token, stop at once
	fresh := cliRecord(t, dir, "token-auth", "create", addr, "--user", "frank", "--json")
	secrets = append(secrets, fresh.Token)
	code, _ = c.get(fresh.Token)
	wantStatus(t, "frank", code, "", 200)
	cliOK(t, dir, "", "stop", addr)
	if err := c.wait(10 * time.Second); err != nil {
		t.Fatalf("caddy stop: %v", err)
	}
	after := cliRecord(t, dir, "token-auth", "show", fresh.ID, "--db", db, "--json")
	if after.LastUsedAt == nil {
		t.Fatal("last_used_at of a token used just before a graceful stop was not flushed")
	}

	// the file holds digests only
	raw := readFile(t, db)
	for _, s := range secrets {
		if bytes.Contains(raw, []byte(s)) {
			t.Fatalf("the bbolt file contains the token %s", s)
		}
	}
}

// TestCLISigkillKeepsAcknowledgedCreates: every create the admin API
// acknowledged survives a SIGKILL right after.
func TestCLISigkillKeepsAcknowledgedCreates(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "tokens.db")
	c := startCaddy(t, dir, tokenAuthBlock(db))
	const n = 200
	tokens := make([]string, 0, n)
	for i := 0; i < n; i++ {
		code, body := c.adminRequest("POST", "/token_auth/tokens", fmt.Sprintf(`{"user":"u%d"}`, i))
		if code != 201 {
			t.Fatalf("create %d: %d %s", i, code, body)
		}
		var it issuedToken
		if err := json.Unmarshal([]byte(body), &it); err != nil {
			t.Fatal(err)
		}
		tokens = append(tokens, it.Token)
	}
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = c.wait(10 * time.Second)

	c2 := runCaddy(t, dir, c.config)
	for i, tok := range tokens {
		code, body := c2.get(tok)
		if code != 200 || body != fmt.Sprintf("user=u%d", i) {
			t.Fatalf("token %d of %d after SIGKILL and restart: %d %q", i+1, n, code, body)
		}
	}
}

// TestCLIFileMode runs every verb with --db on a file, with no Caddy running.
func TestCLIFileMode(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "sub", "tokens.db")

	cliFails(t, dir, "no token database at", "token-auth", "list", "--db", db)
	if _, err := os.Stat(db); err == nil {
		t.Fatal("list created the file")
	}
	tok := cliCreate(t, dir, "--db", db, "--user", "alice", "--scope", "admin", "--expires", "never")
	rec := cliRecord(t, dir, "token-auth", "create", "--db", db, "--user", "bob", "--expires", "2030-01-02T03:04:05Z", "--json")
	if rec.ExpiresAt == nil || !rec.ExpiresAt.Equal(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Fatalf("--expires RFC 3339: %v", rec.ExpiresAt)
	}
	var list []TokenRecord
	if err := json.Unmarshal([]byte(cliOK(t, dir, "", "token-auth", "list", "--db", db, "--json")), &list); err != nil || len(list) != 2 {
		t.Fatalf("list: %v %v", list, err)
	}
	if list[0].User != "alice" { // created in the same second: the order is by ID then
		list[0], list[1] = list[1], list[0]
	}
	if list[0].User != "alice" || list[0].ExpiresAt != nil || strings.Join(list[0].Scopes, " ") != "admin" {
		t.Fatalf("alice: %+v", list[0])
	}
	if !strings.Contains(cliOK(t, dir, "", "token-auth", "list", "--db", db), "never") {
		t.Fatal("list table does not say never")
	}
	rot := cliRecord(t, dir, "token-auth", "rotate", list[0].ID, "--db", db, "--grace", "1h", "--json")
	old := cliRecord(t, dir, "token-auth", "show", list[0].ID, "--db", db, "--json")
	if old.RevokedAt == nil || old.RevokedAt.Sub(rot.CreatedAt) != time.Hour {
		t.Fatalf("old token after rotate --grace 1h: revoked_at %v, new created_at %v", old.RevokedAt, rot.CreatedAt)
	}
	if !strings.Contains(cliOK(t, dir, "", "token-auth", "show", list[0].ID, "--db", db), "revoked from ") {
		t.Fatal("show table does not tell the grace period")
	}
	cliOK(t, dir, "", "token-auth", "revoke", rec.ID, "--db", db)
	cliFails(t, dir, "no such token: tok_nope", "token-auth", "revoke", "tok_nope", "--db", db)
	cliFails(t, dir, "no such token: tok_nope", "token-auth", "show", "tok_nope", "--db", db)

	// export, import into a new file: the same records, the tokens still valid
	exp := cliOK(t, dir, "", "token-auth", "export", "--db", db)
	if strings.Count(exp, "\n") != 3 || strings.Contains(exp, tok) || strings.Contains(exp, rot.Token) {
		t.Fatalf("export:\n%s", exp)
	}
	db2 := filepath.Join(dir, "copy.db")
	if out := cliOK(t, dir, exp, "token-auth", "import", "--db", db2); !strings.Contains(out, "imported 3, skipped 0") {
		t.Fatalf("import printed %q", out)
	}
	if exp2 := cliOK(t, dir, "", "token-auth", "export", "--db", db2); exp2 != exp {
		t.Fatalf("export of the copy differs:\n%s\nvs\n%s", exp2, exp)
	}
	s, err := openBoltStore(db2)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, tk := range []string{tok, rot.Token} {
		r, err := s.Lookup(context.Background(), digestOf(tk))
		if err != nil || r.refusal(time.Now()) != "" {
			t.Fatalf("token after export and import: %+v %v", r, err)
		}
	}
	if r, _ := s.Lookup(context.Background(), digestOf(tok)); r.User != "alice" {
		t.Fatal("wrong user after import")
	}
}

// TestCLIStoreChoice: the admin API with no store open, and with two.
func TestCLIStoreChoice(t *testing.T) {
	dir := t.TempDir()
	c := startCaddy(t, dir, "")
	cliFails(t, dir, "no token_auth store is open in this config", "token-auth", "list", "--address", c.admin)
	c.kill()

	dir2 := t.TempDir()
	db1, db2 := filepath.Join(dir2, "one.db"), filepath.Join(dir2, "two.db")
	body := "\thandle /two {\n\t" + tokenAuthBlock(db2) + "\t}\n\thandle {\n\t" + tokenAuthBlock(db1) + "\t}\n"
	c = startCaddy(t, dir2, body)
	msg := cliFails(t, dir2, "more than one token_auth store is open", "token-auth", "list", "--address", c.admin)
	if !strings.Contains(msg, db1) || !strings.Contains(msg, db2) {
		t.Fatalf("the error does not list the open stores: %s", msg)
	}
	// --address with --db chooses the store; a relative --db is made absolute by the CLI
	tok := cliCreate(t, dir2, "--address", c.admin, "--db", "two.db", "--user", "two")
	code, body2 := httpDo(t, "GET", c.site+"/two?token="+tok, nil, "")
	wantStatus(t, "token of the second store on its path", code, body2, 200)
	if out := cliOK(t, dir2, "", "token-auth", "list", "--address", c.admin, "--db", db1); strings.Contains(out, "two") {
		t.Fatalf("the first store lists the second's token:\n%s", out)
	}
}

// TestCLIImportThroughput imports 100,000 legacy tokens with
// `caddy token-auth import --db` and reports tokens per minute.
func TestCLIImportThroughput(t *testing.T) {
	const n = 100_000
	dir := t.TempDir()
	caddyBinary(t)
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, `{"user":"user%d","name":"legacy","token":"legacy-%012d-abcdefghijklmnop","scopes":["read"]}`+"\n", i, i)
	}
	in := writeFile(t, filepath.Join(dir, "legacy.jsonl"), b.String())
	db := filepath.Join(dir, "tokens.db")

	r := cli(t, dir, "", "token-auth", "import", "--db", db, "--file", in)
	if r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("imported %d, skipped 0", n)) {
		t.Fatalf("import: exit %d, %s %s", r.code, r.stdout, r.stderr)
	}
	perMin := float64(n) / r.took.Minutes()
	t.Logf("imported %d legacy tokens in %v: %.0f tokens/minute (caddy token-auth import --db, whole process)", n, r.took.Round(time.Millisecond), perMin)
	if perMin < 100_000 {
		t.Errorf("import throughput %.0f tokens/minute, target at least 100,000", perMin)
	}

	s, err := openBoltStore(db)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, i := range []int{0, 1, n / 2, n - 1} {
		rec, err := s.Lookup(context.Background(), digestOf(fmt.Sprintf("legacy-%012d-abcdefghijklmnop", i)))
		if err != nil || rec.User != fmt.Sprintf("user%d", i) {
			t.Fatalf("imported token %d: %+v %v", i, rec, err)
		}
	}
	if bytes.Contains(readFile(t, db), []byte("legacy-000000000000-abcdefghijklmnop")) {
		t.Fatal("the bbolt file contains an imported token's plaintext")
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
