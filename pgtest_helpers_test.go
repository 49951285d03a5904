package tokenauth

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// A PostgreSQL harness for the shared-store tests: real servers, started
// from the installed binaries (initdb, postgres) in temp folders on free
// loopback ports. One server is shared by the package's tests (each test
// gets its own database); tests that stop the database get a server of
// their own. Without PostgreSQL the tests skip, unless
// TOKEN_AUTH_REQUIRE_POSTGRES=1 (CI), where that is a failure.
//
// PostgreSQL refuses to run as root: as root, the server runs as the
// postgres OS user and owns its temp folder.

// pgRequireEnv makes a missing PostgreSQL a test failure instead of a skip.
const pgRequireEnv = "TOKEN_AUTH_REQUIRE_POSTGRES"

// TestMain stops the PostgreSQL servers the tests started.
func TestMain(m *testing.M) {
	code := m.Run()
	stopAllPGServers()
	os.Exit(code)
}

var (
	pgServersMu sync.Mutex
	pgServers   []*pgServer // every server started, stopped by TestMain

	sharedPGOnce sync.Once
	sharedPG     *pgServer
	sharedPGErr  error
)

// pgServer is one PostgreSQL server run by the tests.
type pgServer struct {
	bin  string // folder with initdb and postgres
	dir  string // temp folder: data/, the socket, server.log
	port int
	cred *syscall.Credential // nil unless running as root

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan error
}

// pgBinDir finds the folder with initdb and postgres: $TOKEN_AUTH_PG_BIN,
// the newest /usr/lib/postgresql/<version>/bin (Debian, Ubuntu), or $PATH.
func pgBinDir() (string, error) {
	if d := os.Getenv("TOKEN_AUTH_PG_BIN"); d != "" {
		return d, nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	sort.Slice(matches, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(matches[i]))))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(matches[j]))))
		return vi > vj
	})
	if len(matches) > 0 {
		return filepath.Dir(matches[0]), nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("PostgreSQL server binaries (initdb, postgres) not found")
}

// requirePG returns the binaries' folder, or skips the test (fails it
// under TOKEN_AUTH_REQUIRE_POSTGRES=1) when PostgreSQL is not installed.
func requirePG(tb testing.TB) string {
	tb.Helper()
	bin, err := pgBinDir()
	if err != nil {
		msg := fmt.Sprintf("%v: install it with `apt-get install -y postgresql` (or set TOKEN_AUTH_PG_BIN)", err)
		if os.Getenv(pgRequireEnv) == "1" {
			tb.Fatalf("%s; %s=1 requires it", msg, pgRequireEnv)
		}
		tb.Skip(msg)
	}
	return bin
}

// sharedPGServer returns the server shared by the package's tests.
func sharedPGServer(tb testing.TB) *pgServer {
	tb.Helper()
	bin := requirePG(tb)
	sharedPGOnce.Do(func() { sharedPG, sharedPGErr = startPGServer(bin) })
	if sharedPGErr != nil {
		tb.Fatal(sharedPGErr)
	}
	return sharedPG
}

// ownPGServer starts a server for one test (one that stops and restarts it).
func ownPGServer(tb testing.TB) *pgServer {
	tb.Helper()
	srv, err := startPGServer(requirePG(tb))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(srv.destroy)
	return srv
}

// startPGServer runs initdb in a new temp folder and starts the server.
func startPGServer(bin string) (*pgServer, error) {
	dir, err := os.MkdirTemp("", "token-auth-pg-")
	if err != nil {
		return nil, err
	}
	srv := &pgServer{bin: bin, dir: dir}
	pgServersMu.Lock()
	pgServers = append(pgServers, srv)
	pgServersMu.Unlock()
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root, PostgreSQL needs the postgres OS user: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		srv.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, err
		}
	}
	initdb := srv.command("initdb", "-D", filepath.Join(dir, "data"), "-U", "postgres", "-A", "trust",
		"-E", "UTF8", "--locale=C", "--no-sync")
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	if err := srv.start(); err != nil {
		return nil, err
	}
	return srv, nil
}

// command prepares one of the server binaries, run as the postgres user when we are root.
func (srv *pgServer) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(srv.bin, name), args...)
	cmd.Dir = srv.dir
	cmd.Env = []string{"PATH=" + srv.bin + ":/usr/bin:/bin", "LANG=C", "LC_ALL=C", "HOME=" + srv.dir}
	// Pdeathsig: the server dies with the test binary even if TestMain cannot stop it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: srv.cred, Pdeathsig: syscall.SIGQUIT}
	return cmd
}

// start runs the server (again, after stop, on the same port) and waits until it accepts connections.
func (srv *pgServer) start() error {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.cmd != nil {
		return errors.New("postgres already running")
	}
	if srv.port == 0 {
		port, err := freeLoopbackPort()
		if err != nil {
			return err
		}
		srv.port = port
	}
	logf, err := os.OpenFile(filepath.Join(srv.dir, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := srv.command("postgres", "-D", filepath.Join(srv.dir, "data"), "-p", strconv.Itoa(srv.port),
		"-k", srv.dir, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
		"-c", "full_page_writes=off", "-c", "max_connections=200")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting postgres: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	srv.cmd, srv.done = cmd, done
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, srv.dsn("postgres"))
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		select {
		case werr := <-done:
			srv.cmd = nil
			return fmt.Errorf("postgres exited at start: %v\n%s", werr, srv.logTail())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres did not accept connections within 30 s: %v\n%s", err, srv.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop shuts the server down as `pg_ctl stop -m fast` does (SIGINT to the
// postmaster: sessions are ended, the server exits) and waits for the exit.
func (srv *pgServer) stop() error {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.cmd == nil {
		return nil
	}
	_ = srv.cmd.Process.Signal(syscall.SIGINT)
	var err error
	select {
	case <-srv.done:
	case <-time.After(30 * time.Second):
		_ = srv.cmd.Process.Kill()
		<-srv.done
		err = errors.New("postgres did not stop within 30 s; killed")
	}
	srv.cmd = nil
	return err
}

// destroy stops the server and removes its folder.
func (srv *pgServer) destroy() {
	_ = srv.stop()
	_ = os.RemoveAll(srv.dir)
}

func stopAllPGServers() {
	pgServersMu.Lock()
	defer pgServersMu.Unlock()
	for _, srv := range pgServers {
		srv.destroy()
	}
	pgServers = nil
}

// dsn is the connection string for database db (trust authentication).
func (srv *pgServer) dsn(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", srv.port, db)
}

// newDatabase creates an empty database for one test and drops it afterwards.
func (srv *pgServer) newDatabase(tb testing.TB) string {
	tb.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "t_" + hex.EncodeToString(b[:])
	srv.exec(tb, "postgres", "CREATE DATABASE "+name)
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if conn, err := pgx.Connect(ctx, srv.dsn("postgres")); err == nil {
			_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			conn.Close(ctx)
		}
	})
	return srv.dsn(name)
}

// exec runs SQL in database db on a connection of its own (as an
// application using plain SQL would) and returns the rows affected.
func (srv *pgServer) exec(tb testing.TB, db, sql string, args ...any) int64 {
	tb.Helper()
	return pgExec(tb, srv.dsn(db), sql, args...)
}

// pgExec runs SQL on a new connection to dsn and returns the rows affected.
func pgExec(tb testing.TB, dsn, sql string, args ...any) int64 {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		tb.Fatalf("connecting to run %q: %v", sql, err)
	}
	defer conn.Close(ctx)
	tag, err := conn.Exec(ctx, sql, args...)
	if err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
	return tag.RowsAffected()
}

// logTail returns the end of the server log, for failure messages.
func (srv *pgServer) logTail() string {
	b, _ := os.ReadFile(filepath.Join(srv.dir, "server.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return strings.TrimSpace(string(b))
}

// freeLoopbackPort returns a loopback TCP port that was free a moment ago.
func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
