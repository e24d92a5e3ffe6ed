package store

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
)

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

func openAt(t testing.TB, path string, opts ...Option) *Store {
	t.Helper()
	s, err := Open(context.Background(), path, append([]Option{WithLogger(quietLog)}, opts...)...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func countRows(t testing.TB, s *Store, query string, args ...any) int {
	t.Helper()
	var n int
	if err := s.QueryRowContext(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatalf("count %q: %v", query, err)
	}
	return n
}

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
			err := db.Backend().Writer().QueryRowContext(ctx, "PRAGMA "+p).Scan(&v)
			return v, err
		}},
		{"reader", func(p string) (string, error) {
			var v string
			err := db.Backend().Reader().QueryRowContext(ctx, "PRAGMA "+p).Scan(&v)
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
	if _, err := db.Backend().Reader().ExecContext(ctx, `INSERT INTO schema_migrations (component, version, applied_at) VALUES ('x', 1, 0)`); err == nil {
		t.Fatal("write through the reader succeeded")
	}
	// Every BeginTx on the writer takes the write lock at once (BEGIN IMMEDIATE):
	// a second connection cannot start writing while it is held.
	other := openAt(t, path)
	tx, err := db.Backend().Writer().BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The writer pool has one connection, so this pragma applies to the DELETE.
	if _, err := other.Backend().Writer().ExecContext(ctx, `PRAGMA busy_timeout = 20`); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Backend().Writer().ExecContext(ctx, `DELETE FROM schema_migrations`); err == nil {
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

func TestMigrationsOtherComponent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "m.db")
	v1 := fstest.MapFS{
		"sqlite/0001_requests.sql": {Data: []byte(`CREATE TABLE approval_requests (id TEXT PRIMARY KEY, operation_id TEXT NOT NULL);`)},
		"sqlite/README.md":         {Data: []byte("ignored")},
	}
	db := openAt(t, path, WithMigrations(Migrations{Component: "approvals", FS: v1}))
	if n := countRows(t, db, `SELECT COUNT(*) FROM schema_migrations WHERE component = 'approvals' AND version = 1 AND applied_at > 0`); n != 1 {
		t.Fatalf("approvals migration recorded %d times", n)
	}
	_ = db.Close()

	// Reopening applies only the new version; reopening twice is a no-op.
	v2 := fstest.MapFS{
		"sqlite/0001_requests.sql": v1["sqlite/0001_requests.sql"],
		"sqlite/0002_votes.sql":    {Data: []byte(`CREATE TABLE approval_votes (request_id TEXT NOT NULL REFERENCES approval_requests (id));`)},
	}
	for i := 0; i < 2; i++ {
		db2 := openAt(t, path, WithMigrations(Migrations{Component: "approvals", FS: v2}))
		if n := countRows(t, db2, `SELECT COUNT(*) FROM schema_migrations WHERE component = 'approvals'`); n != 2 {
			t.Fatalf("approvals versions = %d, want 2", n)
		}
		_ = db2.Close()
	}

	// An older binary (knowing only v1) refuses a file at v2.
	if _, err := Open(ctx, path, WithLogger(quietLog), WithMigrations(Migrations{Component: "approvals", FS: v1})); err == nil || !strings.Contains(err.Error(), "knows only up to 1") {
		t.Fatalf("Open with older migrations = %v, want a refusal", err)
	}
}

func TestMigrationsFailAtomically(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "m.db")
	bad := fstest.MapFS{
		"sqlite/0001_ok.sql":     {Data: []byte(`CREATE TABLE x_ok (id INTEGER);`)},
		"sqlite/0002_broken.sql": {Data: []byte(`CREATE TABLE x_broken (id INTEGER;`)},
	}
	if _, err := Open(ctx, path, WithLogger(quietLog), WithMigrations(Migrations{Component: "x", FS: bad})); err == nil || !strings.Contains(err.Error(), "0002_broken.sql") {
		t.Fatalf("Open = %v, want error naming the broken migration", err)
	}
	db := openAt(t, path)
	// Nothing of the failed run exists: not x_ok, not its record.
	if n := countRows(t, db, `SELECT COUNT(*) FROM sqlite_master WHERE name = 'x_ok'`); n != 0 {
		t.Fatal("x_ok exists after a failed migration run")
	}
	for _, tc := range []fstest.MapFS{
		{"sqlite/1_short.sql": {Data: []byte("SELECT 1;")}},
		{"sqlite/abcd_x.sql": {Data: []byte("SELECT 1;")}},
		{"sqlite/0001_a.sql": {Data: []byte("SELECT 1;")}, "sqlite/01_b.sql": {Data: []byte("SELECT 1;")}},
		{"sqlite/0001_a.sql": {Data: []byte("SELECT 1;")}, "sqlite/0001_b.sql": {Data: []byte("SELECT 1;")}},
	} {
		if _, err := Open(ctx, path, WithLogger(quietLog), WithMigrations(Migrations{Component: "y", FS: tc})); err == nil {
			t.Errorf("Open with migrations %v succeeded", tc)
		}
	}
}
