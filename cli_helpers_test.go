package tokenauth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Helpers for the end-to-end tests: a Caddy binary built from this
// checkout, run as a subprocess on free loopback ports with its own admin
// address and data folders, and its CLI.

var (
	caddyBinOnce sync.Once
	caddyBinPath string
	caddyBinErr  error
)

// caddyBinary builds ./cmd/caddy once per test run and returns its path.
func caddyBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: builds and runs the caddy binary (skipped with -short)")
	}
	caddyBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "token-auth-caddy-")
		if err != nil {
			caddyBinErr = err
			return
		}
		caddyBinPath = filepath.Join(dir, "caddy")
		out, err := exec.Command("go", "build", "-o", caddyBinPath, "./cmd/caddy").CombinedOutput()
		if err != nil {
			caddyBinErr = fmt.Errorf("go build ./cmd/caddy: %v\n%s", err, out)
		}
	})
	if caddyBinErr != nil {
		t.Fatal(caddyBinErr)
	}
	return caddyBinPath
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// cliEnv is the environment for caddy subprocesses: data and config
// folders in dir, so that nothing touches the user's own.
func cliEnv(dir string) []string {
	return append(os.Environ(),
		"HOME="+dir,
		"XDG_DATA_HOME="+filepath.Join(dir, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
	)
}

// caddyProc is a running `caddy run`.
type caddyProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	admin  string // host:port of the admin API
	site   string // http://host:port of the protected site
	dir    string
	config string
	logs   *syncBuffer
	done   chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// protectedSite is the Caddyfile of the end-to-end tests: %[1]d admin
// port, %[2]d HTTP port, %[3]d HTTPS port, %[4]d site port, %[5]s site
// block body.
const protectedSite = `{
	admin localhost:%[1]d
	skip_install_trust
	http_port %[2]d
	https_port %[3]d
	persist_config off
}

:%[4]d {
	bind 127.0.0.1
%[5]s
	respond "user={http.auth.user.id}"
}
`

// tokenAuthBlock is the token_auth directive with a db.
func tokenAuthBlock(db string) string {
	return fmt.Sprintf("\ttoken_auth {\n\t\tdb %s\n\t}\n", db)
}

// startCaddy writes a Caddyfile for a site protected by body (e.g.
// tokenAuthBlock) and runs it.
func startCaddy(t *testing.T, dir, body string) *caddyProc {
	t.Helper()
	cfg := fmt.Sprintf(protectedSite, freePort(t), freePort(t), freePort(t), freePort(t), body)
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return runCaddy(t, dir, path)
}

// runCaddy runs `caddy run --config path` (again, after a stop) and waits
// until its admin API answers.
func runCaddy(t *testing.T, dir, config string) *caddyProc {
	t.Helper()
	bin := caddyBinary(t)
	raw, err := os.ReadFile(config)
	if err != nil {
		t.Fatal(err)
	}
	var adminPort, sitePort int
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "admin":
			adminPort, _ = strconv.Atoi(strings.TrimPrefix(f[1], "localhost:"))
		case len(f) == 2 && f[1] == "{" && strings.HasPrefix(f[0], ":") && sitePort == 0:
			sitePort, _ = strconv.Atoi(f[0][1:])
		}
	}
	p := &caddyProc{
		t:      t,
		admin:  fmt.Sprintf("localhost:%d", adminPort),
		site:   fmt.Sprintf("http://127.0.0.1:%d", sitePort),
		dir:    dir,
		config: config,
		logs:   new(syncBuffer),
		done:   make(chan error, 1),
	}
	p.cmd = exec.Command(bin, "run", "--config", config, "--adapter", "caddyfile")
	p.cmd.Env = cliEnv(dir)
	p.cmd.Stdout = p.logs
	p.cmd.Stderr = p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("caddy output:\n%s", p.logs.String())
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + p.admin + "/config/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("caddy exited at start: %v\n%s", err, p.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("caddy's admin API at %s did not answer within 15 s\n%s", p.admin, p.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill sends SIGKILL, if it is still running, and waits for the exit.
func (p *caddyProc) kill() {
	if p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	p.wait(10 * time.Second)
}

// wait waits for the process to exit.
func (p *caddyProc) wait(d time.Duration) error {
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(d):
		return errors.New("caddy did not exit in time")
	}
}

// get requests the protected site with a token in the query (token != "")
// and returns the status and body.
func (p *caddyProc) get(token string) (int, string) {
	p.t.Helper()
	u := p.site + "/"
	if token != "" {
		u += "?token=" + token
	}
	return httpDo(p.t, "GET", u, nil, "")
}

// getBearer requests the protected site with Authorization: Bearer.
func (p *caddyProc) getBearer(token string) (int, string) {
	p.t.Helper()
	return httpDo(p.t, "GET", p.site+"/", http.Header{"Authorization": {"Bearer " + token}}, "")
}

// adminRequest calls the admin API directly.
func (p *caddyProc) adminRequest(method, path, body string) (int, string) {
	p.t.Helper()
	return httpDo(p.t, method, "http://"+p.admin+path, nil, body)
}

func httpDo(t *testing.T, method, url string, h http.Header, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// cliResult is what one run of the CLI did.
type cliResult struct {
	stdout, stderr string
	code           int
	took           time.Duration
}

// cli runs `caddy <args...>` with stdin (may be "") and returns its result.
func cli(t *testing.T, dir, stdin string, args ...string) cliResult {
	t.Helper()
	cmd := exec.Command(caddyBinary(t), args...)
	cmd.Env = cliEnv(dir)
	cmd.Dir = dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	start := time.Now()
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("caddy %s: hung for 60 s", strings.Join(args, " "))
	}
	return cliResult{stdout: out.String(), stderr: errb.String(), code: cmd.ProcessState.ExitCode(), took: time.Since(start)}
}

// ok runs the CLI and fails the test unless it exits 0.
func cliOK(t *testing.T, dir, stdin string, args ...string) string {
	t.Helper()
	r := cli(t, dir, stdin, args...)
	if r.code != 0 {
		t.Fatalf("caddy %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// cliFails runs the CLI, expects a non-zero exit and a one-line error on
// stderr containing want, and returns that line.
func cliFails(t *testing.T, dir, want string, args ...string) string {
	t.Helper()
	r := cli(t, dir, "", args...)
	msg := strings.TrimSpace(r.stderr)
	if r.code == 0 {
		t.Fatalf("caddy %s: exit 0, want an error containing %q\nstdout: %s", strings.Join(args, " "), want, r.stdout)
	}
	if !strings.Contains(msg, want) || strings.Count(msg, "\n") > 0 {
		t.Fatalf("caddy %s: stderr %q; want one line containing %q", strings.Join(args, " "), msg, want)
	}
	return msg
}
