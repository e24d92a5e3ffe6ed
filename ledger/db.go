// Package ledger is tollgate's durable record: operations and their
// idempotency keys, budgets, holds, velocity limits, freezes, agent credentials
// and the hash-chained audit trail, on the shared storage layer (ledger/store).
//
// Every state-changing method runs in one serialised write transaction
// (store.Write) and appends its audit events in that same transaction, so the
// rows and the chain can never disagree. Nothing mutable is cached in memory:
// the server and CLI commands (another process) may use the same database at
// the same time.
package ledger

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tollgatehq/tollgate/ledger/store"
)

// DefaultPath is where Open puts the database when path is empty.
const DefaultPath = store.DefaultPath

//go:embed migrations
var migrationFiles embed.FS

// Migrations are the ledger's own numbered schema files, per dialect.
var Migrations = store.Embedded("ledger", migrationFiles, "migrations")

// DB is the ledger's handle on the shared store.
type DB struct {
	st            *store.Store
	lease         atomic.Pointer[store.Lease]
	now           func() time.Time
	freezeBlocks  int
	freezeWithin  time.Duration
	derivedWindow time.Duration
	log           *slog.Logger
	key           *AuditKey // nil: a legacy, unkeyed chain only (see WithAuditKey)

	spendSnapshots   spendSnapshots   // what estimates read (CheckBudget)
	mandateSnapshots mandateSnapshots // the mandates estimates read (MandateFor)
}

// Option configures Open.
type Option func(*options)

type options struct {
	migrations    []store.Migrations
	now           func() time.Time
	freezeBlocks  int
	freezeWithin  time.Duration
	derivedWindow time.Duration
	logger        *slog.Logger
	readers       int
	leaseTTL      time.Duration
	key           *AuditKey
	adoptLegacy   bool
}

// WithMigrations adds other packages' migrations (approvals.Migrations), applied
// in the same transaction as the ledger's own.
func WithMigrations(m ...store.Migrations) Option {
	return func(o *options) { o.migrations = append(o.migrations, m...) }
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

// WithAuditKey keys the audit chain with k. On the first Open of a database
// with a key, the key's id is recorded and the current head signed as the
// boundary between plain and keyed events; later, a process with another key
// is refused (*KeyMismatchError), and one with no key may read but not
// append. An existing chain is adopted only by a key that was just created
// (k.Created()) or with WithAuditKeyAdoption: otherwise a database whose key
// record was deleted would have a tampered chain signed as genuine.
func WithAuditKey(k *AuditKey) Option {
	return func(o *options) { o.key = k }
}

// WithAuditKeyAdoption lets WithAuditKey's key sign an existing unkeyed
// chain's head as its boundary although the key was not just created (an
// operator upgrading an old database with a key made for another one).
func WithAuditKeyAdoption() Option {
	return func(o *options) { o.adoptLegacy = true }
}

// WithLeaseTTL sets how long a lease lives without heartbeats where no lock
// file proves its holder alive (PostgreSQL); default store.DefaultLeaseTTL.
func WithLeaseTTL(d time.Duration) Option {
	return func(o *options) { o.leaseTTL = d }
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
	if o.now == nil {
		problems = append(problems, "clock is nil")
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// Open opens the database path names — a postgres:// or postgresql:// URL,
// or else a SQLite file (created if needed; "" means DefaultPath) — and applies every pending migration — the ledger's and those
// given by WithMigrations — in one transaction.
func Open(ctx context.Context, path string, opts ...Option) (*DB, error) {
	o := options{
		now:           func() time.Time { return time.Now().UTC() },
		freezeBlocks:  5,
		freezeWithin:  10 * time.Minute,
		derivedWindow: 10 * time.Minute,
		readers:       4,
		leaseTTL:      store.DefaultLeaseTTL,
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
	st, err := store.Open(ctx, path,
		store.WithMigrations(append([]store.Migrations{Migrations}, o.migrations...)...),
		store.WithClock(o.now), store.WithLogger(o.logger.With(slog.String("component", "store"))),
		store.WithReadConns(o.readers), store.WithLeaseTTL(o.leaseTTL))
	if err != nil {
		return nil, fmt.Errorf("open ledger: %w", err)
	}
	db := &DB{
		st:            st,
		now:           func() time.Time { return o.now().UTC() },
		freezeBlocks:  o.freezeBlocks,
		freezeWithin:  o.freezeWithin,
		derivedWindow: o.derivedWindow,
		log:           o.logger.With(slog.String("component", "ledger")),
		key:           o.key,
	}
	if db.key != nil {
		if err := db.adoptAuditKey(ctx, o.adoptLegacy || db.key.Created()); err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("open ledger %s: %w", st, err)
		}
	}
	return db, nil
}

// Path is the absolute path of the SQLite file ("" on another engine).
func (db *DB) Path() string { return db.st.Path() }

// Store is the storage layer under the ledger, for the packages that keep
// their own tables in the same database (approvals).
func (db *DB) Store() *store.Store { return db.st }

// Ping checks that the database answers.
func (db *DB) Ping(ctx context.Context) error { return db.st.Ping(ctx) }

// Close closes the database.
func (db *DB) Close() error { return db.st.Close() }
