package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

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
	ckpt   *sql.DB // the background checkpointer's connection (checkpoint.go)
	// keeper is a read connection held for the backend's life: it watches
	// PRAGMA data_version, and while it is open SQLite never deletes the WAL
	// on a close of ours, so the WAL's identity stays the one recorded.
	keeper *sql.Conn

	mu      sync.Mutex
	dbID    fileID // the file this process opened
	walID   fileID // its write-ahead log, once it exists
	walSeen bool
	broken  error // set once a file is found replaced or removed; never cleared
}

// sqliteWatchInterval is how often Watch reads PRAGMA data_version: a
// counter in shared memory, not a table read.
const sqliteWatchInterval = 50 * time.Millisecond

var _ Backend = (*sqliteBackend)(nil)

// sqlitePragmas are set on every connection. The driver runs busy_timeout
// first whatever the order, but they are listed in the order they matter:
// wait on locks before anything can hit one.
const sqlitePragmas = "_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(ON)"

// sqliteOpenBusyFor bounds how long OpenSQLite retries a file another
// process is creating: switching a new file to WAL takes a lock that SQLite
// does not wait for in busy_timeout.
const sqliteOpenBusyFor = 10 * time.Second

// OpenSQLite opens (creating if needed) the SQLite file at path ("" means
// DefaultPath) with readers connections in the read pool, creates its parent
// folder and checks that WAL mode took.
func OpenSQLite(ctx context.Context, path string, readers int) (Backend, error) {
	deadline := time.Now().Add(sqliteOpenBusyFor)
	for wait := 5 * time.Millisecond; ; wait = min(2*wait, 200*time.Millisecond) {
		b, err := openSQLite(ctx, path, readers)
		if err == nil || !strings.Contains(err.Error(), "SQLITE_BUSY") || time.Now().After(deadline) {
			return b, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(wait):
		}
	}
}

func openSQLite(ctx context.Context, path string, readers int) (Backend, error) {
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
	// wal_autocheckpoint(0): no commit runs a checkpoint inline; the store's
	// background checkpointer does (checkpoint.go). temp_store(MEMORY): the
	// savepoints of a group commit journal their pages in memory; past
	// 64 KiB SQLite would spill that journal to a temporary file, a write
	// system call per page.
	writer, err := sql.Open("sqlite", abs+"?"+sqlitePragmas+"&_pragma=wal_autocheckpoint(0)&_pragma=temp_store(MEMORY)&_txlock=immediate")
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
	// One more connection than asked for: the keeper holds one.
	reader.SetMaxOpenConns(readers + 1)
	reader.SetMaxIdleConns(readers + 1)
	b.reader = reader
	if b.keeper, err = reader.Conn(ctx); err != nil {
		return fail(fmt.Errorf("open %s read pool: %w", abs, err))
	}
	if err := b.keeper.PingContext(ctx); err != nil {
		return fail(fmt.Errorf("open %s read pool: %w", abs, err))
	}
	id, ok, err := statID(abs)
	if err != nil || !ok {
		return fail(fmt.Errorf("open %s: the file cannot be examined: %v", abs, err))
	}
	// SQLite keeps the WAL and its lock file beside the name it was opened
	// by: two names for one file would let two processes write through two
	// logs, each blind to the other (and a lease check could not tell them
	// apart). A symlink is fine: SQLite resolves it.
	if n := linkCount(abs); n > 1 {
		return fail(fmt.Errorf("open %s: the database file has %d hard links; SQLite keeps its write-ahead log beside the name it is opened by, so processes using different names would write past each other. Remove the other links and open it by one name (a symlink is fine)", abs, n))
	}
	if b.ckpt, err = openCheckpointConn(abs); err != nil {
		return fail(fmt.Errorf("open %s checkpoint connection: %w", abs, err))
	}
	b.dbID = id
	if b.walID, b.walSeen, err = statID(abs + "-wal"); err != nil {
		return fail(fmt.Errorf("open %s: the write-ahead log cannot be examined: %w", abs, err))
	}
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

// Health checks that the path still names the file this process opened, and
// that its write-ahead log is still the one in use. A file removed or
// replaced under a running process (a restore, a cleanup script, an
// attacker) splits what this process writes from what every other process
// reads: its writes would be lost. Once found, the answer never changes: the
// process must be restarted on the file as it now is.
func (b *sqliteBackend) Health(context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.broken != nil {
		return b.broken
	}
	id, ok, err := statID(b.path)
	switch {
	case err != nil:
		return fmt.Errorf("%w: database file %s cannot be examined: %v", ErrUnhealthy, b.path, err)
	case !ok:
		b.broken = fmt.Errorf("%w: database file %s was removed while tollgate had it open; refusing to write, since nothing written now would reach the file other processes read. Restore it and restart every tollgate on it", ErrUnhealthy, b.path)
	case id != b.dbID:
		b.broken = fmt.Errorf("%w: database file %s was replaced while tollgate had it open (inode %d is now %d); refusing to write to a file other processes no longer read. Restart every tollgate on it", ErrUnhealthy, b.path, b.dbID.ino, id.ino)
	}
	if b.broken != nil {
		return b.broken
	}
	wal := b.path + "-wal"
	id, ok, err = statID(wal)
	switch {
	case err != nil:
		return fmt.Errorf("%w: write-ahead log %s cannot be examined: %v", ErrUnhealthy, wal, err)
	case !b.walSeen:
		b.walID, b.walSeen = id, ok
	case !ok:
		b.broken = fmt.Errorf("%w: the write-ahead log %s was removed while tollgate had the database open: the latest writes are lost to every other process and new ones would be too. Refusing to write; restart every tollgate on this database (a restart asks Cloudflare before executing anything again)", ErrUnhealthy, wal)
	case id != b.walID:
		b.broken = fmt.Errorf("%w: the write-ahead log %s was replaced while tollgate had the database open (inode %d is now %d). Refusing to write; restart every tollgate on this database (a restart asks Cloudflare before executing anything again)", ErrUnhealthy, wal, b.walID.ino, id.ino)
	}
	return b.broken
}

// Watch reads PRAGMA data_version on the keeper connection: it changes
// whenever another connection (another process, or this process's writer)
// commits.
func (b *sqliteBackend) Watch(ctx context.Context, changed func()) error {
	t := time.NewTicker(sqliteWatchInterval)
	defer t.Stop()
	last := int64(-1)
	for {
		var v int64
		if err := b.keeper.QueryRowContext(ctx, "PRAGMA data_version").Scan(&v); err == nil {
			// The first read only sets the baseline; a change made before it
			// could be missed, so it wakes everyone once.
			if v != last {
				changed()
			}
			last = v
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Now is this host's clock: every process on a SQLite file shares it.
func (b *sqliteBackend) Now(context.Context) (time.Time, error) { return time.Now(), nil }

// LeaseDir is the folder beside the database where each process keeps the
// file it holds locked while it lives.
func (b *sqliteBackend) LeaseDir() string {
	return filepath.Join(filepath.Dir(b.path), ".tollgate-leases")
}

func (b *sqliteBackend) Close() error {
	var errs []error
	if b.keeper != nil {
		errs = append(errs, b.keeper.Close())
	}
	if b.reader != nil {
		errs = append(errs, b.reader.Close())
	}
	if b.writer != nil {
		errs = append(errs, b.writer.Close())
	}
	if b.ckpt != nil {
		errs = append(errs, b.ckpt.Close())
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
