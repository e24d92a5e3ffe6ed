package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// DefaultPath is the SQLite file Open uses when given no database.
const DefaultPath = "./var/tollgate.db"

// sqliteBackend is one SQLite file (modernc.org/sqlite, WAL): a single write
// connection whose every transaction is BEGIN IMMEDIATE, and a read-only pool.
// Writers in other processes wait in busy_timeout, so a write transaction is
// serialised across every process on the file.
type sqliteBackend struct {
	path   string
	writer *sql.DB
	reader *sql.DB
}

var _ Backend = (*sqliteBackend)(nil)

// sqlitePragmas are set on every connection. The driver runs busy_timeout
// first whatever the order, but they are listed in the order they matter:
// wait on locks before anything can hit one.
const sqlitePragmas = "_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(ON)"

// OpenSQLite opens (creating if needed) the SQLite file at path ("" means
// DefaultPath) with readers connections in the read pool, creates its parent
// folder and checks that WAL mode took.
func OpenSQLite(ctx context.Context, path string, readers int) (Backend, error) {
	if path == "" {
		path = DefaultPath
	}
	abs, err := checkSQLitePath(path)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o750); err != nil {
		return nil, fmt.Errorf("open database: create folder for %s: %w", abs, err)
	}
	writer, err := sql.Open("sqlite", abs+"?"+sqlitePragmas+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", abs, err)
	}
	// One connection: writes within this process queue in database/sql instead
	// of fighting over SQLite's lock; other processes wait in busy_timeout.
	writer.SetMaxOpenConns(1)
	writer.SetMaxIdleConns(1)
	writer.SetConnMaxLifetime(0)
	writer.SetConnMaxIdleTime(0)
	b := &sqliteBackend{path: abs, writer: writer}
	fail := func(err error) (Backend, error) {
		_ = b.Close()
		return nil, err
	}
	var mode string
	if err := writer.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fail(fmt.Errorf("open %s: %w", abs, err))
	}
	if !strings.EqualFold(mode, "wal") {
		return fail(fmt.Errorf("open %s: journal_mode is %q, not wal; the file system must support WAL (shared memory and locks)", abs, mode))
	}
	// query_only makes an accidental write through the read pool fail loudly
	// instead of bypassing BEGIN IMMEDIATE.
	reader, err := sql.Open("sqlite", abs+"?"+sqlitePragmas+"&_pragma=query_only(1)")
	if err != nil {
		return fail(fmt.Errorf("open %s read pool: %w", abs, err))
	}
	reader.SetMaxOpenConns(readers)
	reader.SetMaxIdleConns(readers)
	b.reader = reader
	return b, nil
}

func checkSQLitePath(path string) (string, error) {
	switch {
	case path == ":memory:" || strings.HasPrefix(path, "file:"):
		return "", fmt.Errorf("database path %q is not a plain file path; tollgate needs a real file (WAL, several processes), e.g. %s", path, DefaultPath)
	case strings.ContainsAny(path, "?\x00"):
		// The driver splits a DSN at the first '?': such a path would lose its tail.
		return "", fmt.Errorf("database path %q contains '?' or NUL; use a plain file path such as %s", path, DefaultPath)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("database path %q: %w", path, err)
	}
	return abs, nil
}

func (b *sqliteBackend) Dialect() Dialect       { return SQLite }
func (b *sqliteBackend) Writer() *sql.DB        { return b.writer }
func (b *sqliteBackend) Reader() *sql.DB        { return b.reader }
func (b *sqliteBackend) String() string         { return b.path }
func (b *sqliteBackend) Rebind(q string) string { return q }

// BeginWrite is BEGIN IMMEDIATE (the writer's _txlock) on the one writer
// connection.
func (b *sqliteBackend) BeginWrite(ctx context.Context) (*sql.Tx, error) {
	return b.writer.BeginTx(ctx, nil)
}

// BeginRead begins a read transaction on the read pool: one WAL snapshot.
func (b *sqliteBackend) BeginRead(ctx context.Context) (*sql.Tx, error) {
	return b.reader.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
}

// Health is always nil for now.
func (b *sqliteBackend) Health(context.Context) error { return nil }

func (b *sqliteBackend) Close() error {
	var errs []error
	if b.reader != nil {
		errs = append(errs, b.reader.Close())
	}
	if b.writer != nil {
		errs = append(errs, b.writer.Close())
	}
	return errors.Join(errs...)
}

// Path is the absolute path of the SQLite file, or "" on another engine.
func (s *Store) Path() string {
	if b, ok := s.b.(*sqliteBackend); ok {
		return b.path
	}
	return ""
}
