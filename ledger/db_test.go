package ledger

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

func TestOpenCreatesFolderWALAndPragmas(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "a", "b", "tollgate.db")
	db := openAt(t, path)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database file not created: %v", err)
	}
	if db.Path() != path {
		t.Fatalf("Path() = %q, want %q", db.Path(), path)
	}
	if err := db.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	for _, pool := range []struct {
		name string
		q    func(string) (string, error)
	}{
		{"writer", func(p string) (string, error) {
			var v string
			err := db.Writer().QueryRowContext(ctx, "PRAGMA "+p).Scan(&v)
			return v, err
		}},
		{"reader", func(p string) (string, error) {
			var v string
			err := db.Reader().QueryRowContext(ctx, "PRAGMA "+p).Scan(&v)
			return v, err
		}},
	} {
		for pragma, want := range map[string]string{"journal_mode": "wal", "busy_timeout": "10000", "synchronous": "1", "foreign_keys": "1"} {
			got, err := pool.q(pragma)
			if err != nil || got != want {
				t.Errorf("%s PRAGMA %s = %q, %v; want %q", pool.name, pragma, got, err, want)
			}
		}
	}
	// The read pool must refuse writes: they belong on the BEGIN IMMEDIATE writer.
	if _, err := db.Reader().ExecContext(ctx, `INSERT INTO freezes (scope, reason, frozen_by, at, auto) VALUES ('global', 'x', 'y', 0, 0)`); err == nil {
		t.Fatal("write through the reader succeeded")
	}
	// Every BeginTx on the writer takes the write lock at once (BEGIN IMMEDIATE):
	// a second connection cannot start writing while it is held.
	other := openAt(t, path)
	tx, err := db.Writer().BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The writer pool has one connection, so this pragma applies to the DELETE.
	if _, err := other.Writer().ExecContext(ctx, `PRAGMA busy_timeout = 20`); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Writer().ExecContext(ctx, `DELETE FROM freezes`); err == nil {
		t.Error("second writer wrote while BEGIN IMMEDIATE was held")
	}
	_ = tx.Rollback()
}

func TestOpenDefaultPathAndBadPaths(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, p := range []string{":memory:", "file:x.db?mode=memory", "a?b.db"} {
		if _, err := Open(ctx, p, WithLogger(quietLog)); err == nil || !strings.Contains(err.Error(), "plain file path") && !strings.Contains(err.Error(), "use a plain") {
			t.Errorf("Open(%q) = %v, want a plain-path error", p, err)
		}
	}
}

func TestOpenDefaultPath(t *testing.T) {
	// Not parallel: changes the working directory.
	dir := t.TempDir()
	wd, _ := os.Getwd()
	if err := os.Chdir(dir); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = os.Chdir(wd) }()
	db, err := Open(context.Background(), "", WithLogger(quietLog))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := os.Stat(filepath.Join(dir, "var", "tollgate.db")); err != nil {
		t.Fatalf("default path not used: %v", err)
	}
}

func TestOpenRejectsBadOptions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "x.db")
	tests := []struct {
		name string
		opt  Option
		want string
	}{
		{"negative blocks", WithAutoFreeze(-1, time.Minute), "auto-freeze blocks"},
		{"no window", WithAutoFreeze(3, 0), "auto-freeze window"},
		{"derived window", WithDerivedKeyWindow(0), "derived key window"},
		{"readers", WithReadConns(0), "read pool"},
		{"component name", WithMigrations("Bad-Name", fstest.MapFS{}), "component"},
		{"ledger component", WithMigrations("ledger", fstest.MapFS{}), "given twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := Open(ctx, path, tt.opt); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Open = %v, want error containing %q", err, tt.want)
			}
		})
	}
}

func TestMigrationsOtherComponent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "m.db")
	v1 := fstest.MapFS{
		"0001_requests.sql": {Data: []byte(`CREATE TABLE approval_requests (id TEXT PRIMARY KEY, operation_id TEXT NOT NULL REFERENCES operations (id));`)},
		"README.md":         {Data: []byte("ignored")},
	}
	db := openAt(t, path, WithMigrations("approvals", v1))
	if n := countRows(t, db, `SELECT COUNT(*) FROM schema_migrations WHERE component = 'approvals' AND version = 1 AND applied_at > 0`); n != 1 {
		t.Fatalf("approvals migration recorded %d times", n)
	}
	if n := countRows(t, db, `SELECT COUNT(*) FROM schema_migrations WHERE component = 'ledger' AND version = 1`); n != 1 {
		t.Fatal("ledger migration not recorded")
	}
	_ = db.Close()

	// Reopening applies only the new version; reopening twice is a no-op.
	v2 := fstest.MapFS{
		"0001_requests.sql": v1["0001_requests.sql"],
		"0002_votes.sql":    {Data: []byte(`CREATE TABLE approval_votes (request_id TEXT NOT NULL REFERENCES approval_requests (id));`)},
	}
	for i := 0; i < 2; i++ {
		db2 := openAt(t, path, WithMigrations("approvals", v2))
		if n := countRows(t, db2, `SELECT COUNT(*) FROM schema_migrations WHERE component = 'approvals'`); n != 2 {
			t.Fatalf("approvals versions = %d, want 2", n)
		}
		_ = db2.Close()
	}

	// An older binary (knowing only v1) refuses a file at v2.
	if _, err := Open(ctx, path, WithLogger(quietLog), WithMigrations("approvals", v1)); err == nil || !strings.Contains(err.Error(), "knows only up to 1") {
		t.Fatalf("Open with older migrations = %v, want a refusal", err)
	}
}

func TestMigrationsFailAtomically(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "m.db")
	bad := fstest.MapFS{
		"0001_ok.sql":     {Data: []byte(`CREATE TABLE x_ok (id INTEGER);`)},
		"0002_broken.sql": {Data: []byte(`CREATE TABLE x_broken (id INTEGER;`)},
	}
	if _, err := Open(ctx, path, WithLogger(quietLog), WithMigrations("x", bad)); err == nil || !strings.Contains(err.Error(), "0002_broken.sql") {
		t.Fatalf("Open = %v, want error naming the broken migration", err)
	}
	db := openAt(t, path)
	// Nothing of the failed run exists: not the ledger's tables' record, not x_ok.
	if n := countRows(t, db, `SELECT COUNT(*) FROM sqlite_master WHERE name = 'x_ok'`); n != 0 {
		t.Fatal("x_ok exists after a failed migration run")
	}
	for _, tc := range []fstest.MapFS{
		{"1_short.sql": {Data: []byte("SELECT 1;")}},
		{"abcd_x.sql": {Data: []byte("SELECT 1;")}},
		{"0001_a.sql": {Data: []byte("SELECT 1;")}, "01_b.sql": {Data: []byte("SELECT 1;")}},
		{"0001_a.sql": {Data: []byte("SELECT 1;")}, "0001_b.sql": {Data: []byte("SELECT 1;")}},
	} {
		if _, err := Open(ctx, path, WithLogger(quietLog), WithMigrations("y", tc)); err == nil {
			t.Errorf("Open with migrations %v succeeded", tc)
		}
	}
}

func TestLockServerAllowsOneServerPerDatabase(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "t.db")
	a, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	unlock, err := a.LockServer()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.LockServer(); !errors.Is(err, ErrServerRunning) || !strings.Contains(err.Error(), "pid") {
		t.Fatalf("a second server on the same file: %v, want ErrServerRunning naming the holder", err)
	}
	unlock()
	unlock2, err := b.LockServer()
	if err != nil {
		t.Fatalf("after the first server stopped: %v", err)
	}
	unlock2()
}
