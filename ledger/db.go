// Package ledger is tollgate's durable store: one SQLite file (modernc.org/sqlite,
// WAL) holding operations and their idempotency keys, budgets, holds, velocity
// limits, freezes, agent credentials and the hash-chained audit trail.
//
// Every state-changing method runs in one BEGIN IMMEDIATE transaction on the single
// writer connection and appends its audit events in that same transaction, so the
// rows and the chain can never disagree. Nothing mutable is cached in memory: the
// server and CLI commands (another process) may use the same file at the same time.
package ledger

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// DefaultPath is where Open puts the database when path is empty.
const DefaultPath = "./var/tollgate.db"

// ledgerComponent is the component name of the ledger's own migrations in
// schema_migrations.
const ledgerComponent = "ledger"

//go:embed migrations/*.sql
var ledgerMigrations embed.FS

// DB is the ledger's handle on the SQLite file: one writer connection (every write
// transaction is BEGIN IMMEDIATE) and a separate read-only pool.
type DB struct {
	path          string
	writer        *sql.DB
	stmts         *stmtCache
	reader        *sql.DB
	now           func() time.Time
	freezeBlocks  int
	freezeWithin  time.Duration
	derivedWindow time.Duration
	log           *slog.Logger
}

// Option configures Open.
type Option func(*options)

type migrationSet struct {
	component string
	fsys      fs.FS
}

type options struct {
	migrations    []migrationSet
	now           func() time.Time
	freezeBlocks  int
	freezeWithin  time.Duration
	derivedWindow time.Duration
	logger        *slog.Logger
	readers       int
}

// WithMigrations adds another package's numbered migrations (files named like
// 0001_create_requests.sql at the root of fsys), applied in the same transaction as
// the ledger's own and recorded under component in schema_migrations.
func WithMigrations(component string, fsys fs.FS) Option {
	return func(o *options) { o.migrations = append(o.migrations, migrationSet{component: component, fsys: fsys}) }
}

// WithClock replaces the clock (default time.Now().UTC()) so tests can cross day and
// month boundaries and expire tokens without sleeping.
func WithClock(now func() time.Time) Option {
	return func(o *options) { o.now = now }
}

// WithAutoFreeze freezes an agent's spending once it has been blocked blocks times
// within the given duration (default 5 within 10 minutes). blocks == 0 disables it.
func WithAutoFreeze(blocks int, within time.Duration) Option {
	return func(o *options) { o.freezeBlocks, o.freezeWithin = blocks, within }
}

// WithDerivedKeyWindow sets how long a call without an idempotency key is treated as
// a retry of an identical earlier call (default 10 minutes).
func WithDerivedKeyWindow(d time.Duration) Option {
	return func(o *options) { o.derivedWindow = d }
}

// WithLogger sets the logger for migrations, auto-freezes and recovery (default
// slog.Default()). The ledger never logs secrets or operation arguments.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// WithReadConns sets the size of the read pool (default 4).
func WithReadConns(n int) Option {
	return func(o *options) { o.readers = n }
}

func (o *options) validate() error {
	var problems []string
	if o.freezeBlocks < 0 {
		problems = append(problems, fmt.Sprintf("auto-freeze blocks is %d; use 0 to disable or a positive count", o.freezeBlocks))
	}
	if o.freezeBlocks > 0 && o.freezeWithin <= 0 {
		problems = append(problems, fmt.Sprintf("auto-freeze window is %s; it must be positive when blocks > 0", o.freezeWithin))
	}
	if o.derivedWindow <= 0 {
		problems = append(problems, fmt.Sprintf("derived key window is %s; it must be positive", o.derivedWindow))
	}
	if o.readers < 1 {
		problems = append(problems, fmt.Sprintf("read pool size is %d; it must be at least 1", o.readers))
	}
	if o.now == nil {
		problems = append(problems, "clock is nil")
	}
	seen := map[string]bool{ledgerComponent: true}
	for _, m := range o.migrations {
		switch {
		case !validComponent(m.component):
			problems = append(problems, fmt.Sprintf("migration component %q must be lower-case letters, digits and _ starting with a letter", m.component))
		case seen[m.component]:
			problems = append(problems, fmt.Sprintf("migration component %q is given twice (%q is the ledger's own)", m.component, ledgerComponent))
		case m.fsys == nil:
			problems = append(problems, fmt.Sprintf("migration component %q has a nil file system", m.component))
		}
		seen[m.component] = true
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

func validComponent(s string) bool {
	if s == "" || len(s) > 64 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for _, c := range []byte(s) {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}

// Open opens (creating if needed) the SQLite file at path ("" means DefaultPath),
// creates its parent folder, checks that WAL mode took, and applies every pending
// migration — the ledger's and those given by WithMigrations — in one transaction.
func Open(ctx context.Context, path string, opts ...Option) (*DB, error) {
	o := options{
		now:           func() time.Time { return time.Now().UTC() },
		freezeBlocks:  5,
		freezeWithin:  10 * time.Minute,
		derivedWindow: 10 * time.Minute,
		readers:       4,
	}
	for _, opt := range opts {
		opt(&o)
	}
	if err := o.validate(); err != nil {
		return nil, fmt.Errorf("open ledger: %w", err)
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	if path == "" {
		path = DefaultPath
	}
	abs, err := checkPath(path)
	if err != nil {
		return nil, fmt.Errorf("open ledger: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o750); err != nil {
		return nil, fmt.Errorf("open ledger: create folder for %s: %w", abs, err)
	}

	// The driver runs busy_timeout first whatever the order, but the DSN lists the
	// pragmas in the order they matter: wait on locks before anything can hit one.
	const pragmas = "_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(ON)"
	writer, err := sql.Open("sqlite", abs+"?"+pragmas+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("open ledger writer: %w", err)
	}
	// One connection: writes within this process queue in database/sql instead of
	// fighting over SQLite's lock; other processes wait in busy_timeout.
	writer.SetMaxOpenConns(1)
	writer.SetMaxIdleConns(1)
	writer.SetConnMaxLifetime(0)
	writer.SetConnMaxIdleTime(0)

	db := &DB{
		path:          abs,
		writer:        writer,
		stmts:         &stmtCache{stmts: map[string]*sql.Stmt{}},
		now:           func() time.Time { return o.now().UTC() },
		freezeBlocks:  o.freezeBlocks,
		freezeWithin:  o.freezeWithin,
		derivedWindow: o.derivedWindow,
		log:           o.logger.With(slog.String("component", "ledger")),
	}
	fail := func(err error) (*DB, error) {
		_ = db.Close()
		return nil, err
	}

	var mode string
	if err := writer.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fail(fmt.Errorf("open ledger %s: %w", abs, err))
	}
	if !strings.EqualFold(mode, "wal") {
		return fail(fmt.Errorf("open ledger %s: journal_mode is %q, not wal; the file system must support WAL (shared memory and locks)", abs, mode))
	}

	// query_only makes an accidental write through the read pool fail loudly
	// instead of bypassing BEGIN IMMEDIATE.
	reader, err := sql.Open("sqlite", abs+"?"+pragmas+"&_pragma=query_only(1)")
	if err != nil {
		return fail(fmt.Errorf("open ledger reader: %w", err))
	}
	reader.SetMaxOpenConns(o.readers)
	reader.SetMaxIdleConns(o.readers)
	db.reader = reader

	sets := append([]migrationSet{{component: ledgerComponent, fsys: mustSub(ledgerMigrations, "migrations")}}, o.migrations...)
	if err := db.migrate(ctx, sets); err != nil {
		return fail(fmt.Errorf("open ledger %s: %w", abs, err))
	}
	if err := reader.PingContext(ctx); err != nil {
		return fail(fmt.Errorf("open ledger reader %s: %w", abs, err))
	}
	return db, nil
}

func mustSub(fsys fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(fsys, dir)
	if err != nil {
		panic(err) // the embedded folder is fixed at build time
	}
	return sub
}

func checkPath(path string) (string, error) {
	switch {
	case path == ":memory:" || strings.HasPrefix(path, "file:"):
		return "", fmt.Errorf("database path %q is not a plain file path; the ledger needs a real file (WAL, several processes), e.g. %s", path, DefaultPath)
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

// Path is the absolute path of the database file.
func (db *DB) Path() string { return db.path }

// Writer is the single write connection. Every BeginTx on it is BEGIN IMMEDIATE, so
// a read-check-write inside it is serialised across goroutines and processes.
// Never call a DB method that writes while holding a transaction from it: there is
// one connection, and the call would wait for it forever.
func (db *DB) Writer() *sql.DB { return db.writer }

// Reader is the read-only pool.
func (db *DB) Reader() *sql.DB { return db.reader }

// Ping checks that both the writer and the read pool answer.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.writer.PingContext(ctx); err != nil {
		return fmt.Errorf("ping ledger writer: %w", err)
	}
	if err := db.reader.PingContext(ctx); err != nil {
		return fmt.Errorf("ping ledger reader: %w", err)
	}
	return nil
}

// Close closes both pools.
func (db *DB) Close() error {
	var errs []error
	db.stmts.close()
	if db.reader != nil {
		errs = append(errs, db.reader.Close())
	}
	if db.writer != nil {
		errs = append(errs, db.writer.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close ledger: %w", err)
	}
	return nil
}

// write runs fn in one BEGIN IMMEDIATE transaction on the writer, committing when fn
// returns nil and rolling back otherwise. Statements fn runs are prepared on the
// writer connection once the transaction is over, so later calls skip SQLite's parser.
func (db *DB) write(ctx context.Context, fn func(tx txc) error) error {
	var misses []string
	err := db.writeWith(ctx, func(tx *sql.Tx) error { return fn(txc{Tx: tx, cache: db.stmts, misses: &misses}) })
	db.stmts.prepare(ctx, db.writer, misses)
	return err
}

// writeWith runs fn in one BEGIN IMMEDIATE transaction without the statement cache.
func (db *DB) writeWith(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := db.writer.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin immediate: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// read runs fn in one read transaction so everything it reads comes from one WAL
// snapshot.
func (db *DB) read(ctx context.Context, fn func(tx txc) error) error {
	tx, err := db.reader.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("begin read: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	return fn(txc{Tx: tx})
}
