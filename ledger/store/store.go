// Package store is tollgate's storage layer, shared by the ledger and
// approvals: it opens the database, applies every component's numbered
// migrations, and runs the serialised write transaction that makes a
// read-check-write exact across goroutines, processes and replicas.
//
// Everything that differs between database engines sits behind Backend (as
// litestream keeps each replica type behind ReplicaClient): SQLite
// (sqlite.go, the default, one file shared by any number of processes) and
// PostgreSQL (postgres.go, for replicas). The ledger and approvals write their
// queries once, with ? placeholders, and never see which engine runs them.
// New takes a Backend the caller built, so a third engine is one new file set.
package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

//go:embed migrations
var migrationFiles embed.FS

// ownMigrations are the store's own tables (leases), applied before every
// component's.
var ownMigrations = Embedded("store", migrationFiles, "migrations")

// ErrUnhealthy is wrapped by every write refused because the database can no
// longer be trusted with one (a file replaced or removed under the process).
var ErrUnhealthy = errors.New("database unhealthy")

// Dialect names a database engine's SQL. It picks the migrations folder of
// every component and how placeholders are written.
type Dialect string

// The dialects tollgate ships.
const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// Backend is one database engine under the store.
type Backend interface {
	// Dialect is the engine's SQL dialect.
	Dialect() Dialect
	// Writer is the pool write transactions run on; Reader the pool reads run
	// on (it may be the same pool).
	Writer() *sql.DB
	Reader() *sql.DB
	// BeginWrite begins the serialised write transaction: until it ends, no
	// other write transaction on the database can begin, in this process or
	// any other. A read-check-write inside it is therefore exact.
	BeginWrite(ctx context.Context) (*sql.Tx, error)
	// BeginRead begins a read-only transaction that sees one snapshot.
	BeginRead(ctx context.Context) (*sql.Tx, error)
	// Rebind rewrites a query written with ? and ?NNN placeholders into the
	// engine's own form. It is called once per distinct query.
	Rebind(query string) string
	// Health reports whether the database can be trusted with a write now;
	// an error wrapping ErrUnhealthy says what is wrong (a replaced or
	// missing file).
	Health(ctx context.Context) error
	// Watch calls changed, until ctx ends, soon after any write transaction
	// commits — in this process or any other. Calls may be coalesced and a
	// few may come without a change; waiters re-read what they wait for.
	Watch(ctx context.Context, changed func()) error
	// Now is the clock leases are kept on: one that every process using the
	// database agrees on (the host's for SQLite, the server's for PostgreSQL).
	Now(ctx context.Context) (time.Time, error)
	// LeaseDir is where a process keeps the file it holds locked while it
	// lives, proving its lease to the others; "" when the engine's processes
	// may run on different hosts and leases live by heartbeat alone.
	LeaseDir() string
	// String names the database for messages (a file path; a URL without
	// its password).
	String() string
	// Close closes the pools.
	Close() error
}

// Store is the handle the ledger and approvals share.
type Store struct {
	b        Backend
	cache    *stmtCache // statements prepared on a single-connection writer; nil otherwise
	reads    readStmts  // statements prepared on the read pool
	now      func() time.Time
	log      *slog.Logger
	rebinds  sync.Map // query -> Rebind(query), when the dialect rewrites queries
	leaseTTL time.Duration
	ckpt     checkpointCounters
	ckptDone chan struct{} // closed when the checkpointer has stopped
	writes   atomic.Uint64 // write transactions begun
	grouped  atomic.Uint64 // Write calls those transactions carried
	gen      atomic.Uint64 // see Generation

	// The group writer (group.go): Write enqueues on queue; closed, under
	// queueMu, refuses new writes once Close began.
	queueMu    sync.RWMutex
	queue      chan *writeCall
	closed     bool
	writerDone chan struct{}

	life context.Context // the store's lifetime: the change watch runs in it
	stop context.CancelFunc

	subsMu   sync.Mutex
	subs     map[chan struct{}]struct{}
	watching bool

	leasesMu sync.Mutex
	leases   map[*Lease]struct{} // started and not yet closed
}

// Option configures Open and New.
type Option func(*options)

type options struct {
	migrations []Migrations
	now        func() time.Time
	logger     *slog.Logger
	readers    int
	leaseTTL   time.Duration

	checkpointEvery time.Duration
	truncateAbove   int64
}

// WithMigrations adds components' migrations, applied by Open and New in one
// serialised write transaction, in the order given.
func WithMigrations(m ...Migrations) Option {
	return func(o *options) { o.migrations = append(o.migrations, m...) }
}

// WithClock replaces the clock (default time.Now) for migration and lease
// records.
func WithClock(now func() time.Time) Option {
	return func(o *options) { o.now = now }
}

// WithLogger sets the logger for migrations (default slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// WithReadConns sets the size of the read pool (default 4).
func WithReadConns(n int) Option {
	return func(o *options) { o.readers = n }
}

func buildOptions(opts []Option) (options, error) {
	o := options{now: time.Now, readers: 4, leaseTTL: DefaultLeaseTTL, checkpointEvery: DefaultCheckpointInterval, truncateAbove: DefaultTruncateAbove}
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	var problems []string
	if o.now == nil {
		problems = append(problems, "clock is nil")
	}
	if o.readers < 1 {
		problems = append(problems, fmt.Sprintf("read pool size is %d; it must be at least 1", o.readers))
	}
	if o.checkpointEvery <= 0 {
		problems = append(problems, fmt.Sprintf("checkpoint interval is %s; it must be positive", o.checkpointEvery))
	}
	if o.leaseTTL < time.Second {
		problems = append(problems, fmt.Sprintf("lease TTL is %s; it must be at least 1s", o.leaseTTL))
	}
	o.migrations = append([]Migrations{ownMigrations}, o.migrations...)
	if err := checkComponents(o.migrations); err != nil {
		problems = append(problems, err.Error())
	}
	if len(problems) > 0 {
		return o, errors.New(strings.Join(problems, "; "))
	}
	return o, nil
}

// Open opens the database dsn names — a postgres:// or postgresql:// URL
// selects PostgreSQL, anything else is a SQLite file path ("" means
// DefaultPath) — and applies every pending migration.
func Open(ctx context.Context, dsn string, opts ...Option) (*Store, error) {
	o, err := buildOptions(opts)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	var b Backend
	if IsPostgresDSN(dsn) {
		b, err = OpenPostgres(ctx, dsn, o.readers)
	} else {
		b, err = OpenSQLite(ctx, dsn, o.readers)
	}
	if err != nil {
		return nil, err
	}
	return New(ctx, b, opts...)
}

// New builds a store on a backend the caller opened (as pocketbase lets the
// caller supply the connection) and applies every pending migration. The
// store owns b from then on: Close closes it, and so does a failing New.
func New(ctx context.Context, b Backend, opts ...Option) (*Store, error) {
	o, err := buildOptions(opts)
	if err != nil {
		_ = b.Close()
		return nil, fmt.Errorf("open %s: %w", b, err)
	}
	s, err := newStore(ctx, b, o)
	if err != nil {
		_ = b.Close()
		return nil, err
	}
	return s, nil
}

func newStore(ctx context.Context, b Backend, o options) (*Store, error) {
	s := &Store{b: b, now: o.now, log: o.logger, leaseTTL: o.leaseTTL, reads: readStmts{stmts: map[string]*sql.Stmt{}}}
	s.life, s.stop = context.WithCancel(context.Background())
	if b.Writer().Stats().MaxOpenConnections == 1 {
		s.cache = &stmtCache{stmts: map[string]*sql.Stmt{}}
	}
	if err := s.migrate(ctx, o.migrations); err != nil {
		s.stop()
		return nil, fmt.Errorf("open %s: %w", b, err)
	}
	if err := b.Reader().PingContext(ctx); err != nil {
		s.stop()
		return nil, fmt.Errorf("open %s: read pool: %w", b, err)
	}
	s.startWriter()
	s.ckptDone = make(chan struct{})
	if c, ok := b.(checkpointer); ok {
		go func() {
			defer close(s.ckptDone)
			s.runCheckpoints(c, o.checkpointEvery, o.truncateAbove)
		}()
	} else {
		close(s.ckptDone)
	}
	return s, nil
}

// Dialect is the engine's SQL dialect.
func (s *Store) Dialect() Dialect { return s.b.Dialect() }

// String names the database for messages.
func (s *Store) String() string { return s.b.String() }

// Backend is the engine under the store.
func (s *Store) Backend() Backend { return s.b }

// Ping checks that the database is healthy and both pools answer.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.b.Health(ctx); err != nil {
		return err
	}
	if err := s.b.Writer().PingContext(ctx); err != nil {
		return fmt.Errorf("ping %s: %w", s.b, err)
	}
	if err := s.b.Reader().PingContext(ctx); err != nil {
		return fmt.Errorf("ping %s read pool: %w", s.b, err)
	}
	return nil
}

// Health reports whether the database can be trusted with a write now.
func (s *Store) Health(ctx context.Context) error { return s.b.Health(ctx) }

// Close stops the change watch and closes the backend. A lease still held is
// abandoned as a crash would leave it: heartbeats stop and its lock is
// dropped, but its record stays, for another process to find it dead and
// take its work over.
func (s *Store) Close() error {
	s.stop()
	s.stopWriter()
	if s.ckptDone != nil {
		<-s.ckptDone
	}
	s.leasesMu.Lock()
	for l := range s.leases {
		l.abandon()
	}
	s.leases = nil
	s.leasesMu.Unlock()
	if s.cache != nil {
		s.cache.close()
	}
	s.reads.close()
	if err := s.b.Close(); err != nil {
		return fmt.Errorf("close %s: %w", s.b, err)
	}
	return nil
}

// rebind returns q in the engine's placeholder form, remembering the answer.
func (s *Store) rebind(q string) string {
	if s.b.Dialect() == SQLite {
		return q
	}
	if r, ok := s.rebinds.Load(q); ok {
		return r.(string)
	}
	r := s.b.Rebind(q)
	s.rebinds.Store(q, r)
	return r
}

// bind adapts arguments to the engine: PostgreSQL's integer columns take no
// Go bool (SQLite stores one as 0 or 1), so a flag is sent as 0 or 1 there too.
func (s *Store) bind(args []any) []any {
	if s.b.Dialect() == SQLite {
		return args
	}
	var out []any
	for i, a := range args {
		v, ok := a.(bool)
		if !ok {
			continue
		}
		if out == nil {
			out = append([]any(nil), args...)
		}
		out[i] = 0
		if v {
			out[i] = 1
		}
	}
	if out == nil {
		return args
	}
	return out
}

// WriteTransactions is how many write transactions this store has begun
// (committed or not), migrations included: the counter behind
// tollgate_ledger_write_transactions_total ("write transactions per call").
func (s *Store) WriteTransactions() uint64 { return s.writes.Load() }

// GroupedWrites is how many Write calls the group writer has carried in those
// transactions: with WriteTransactions, how well concurrent commits group.
func (s *Store) GroupedWrites() uint64 { return s.grouped.Load() }

// Write runs fn in a serialised write transaction and returns once that
// transaction has committed (nil) or fn's work was undone (fn's error, or the
// transaction's). Concurrent callers' functions are grouped into one
// transaction by the group writer, each in its own savepoint: fn sees every
// write committed or grouped before it, exactly as if it ran alone, and a
// failing fn undoes only its own work. fn must run every statement through tx,
// and must not call anything that writes on its own: it would wait for the
// writer fn runs on. Statements fn runs are prepared once the transaction is
// over (SQLite's single writer connection), so later calls skip the parser.
// Once fn is queued, Write waits for its outcome even if ctx ends.
func (s *Store) Write(ctx context.Context, fn func(tx *Tx) error) error {
	return s.queueWrite(ctx, fn, false)
}

// WriteRecords is Write for a function that only appends records (audit
// events) and changes no state anything reads back for a decision: its commit
// does not advance Generation, so snapshots kept by readers stay valid.
func (s *Store) WriteRecords(ctx context.Context, fn func(tx *Tx) error) error {
	return s.queueWrite(ctx, fn, true)
}

// Generation is a counter that advances after every committed write of this
// process (but those made with WriteRecords) and whenever the change watch
// sees a commit of any process (see Subscribe; the first call starts the
// watch). A reader that reads Generation before reading the database may
// keep what it read while Generation has not moved: no write that it could
// have missed has committed since, but another process's within the watch's
// interval.
func (s *Store) Generation() uint64 {
	s.subsMu.Lock()
	start := !s.watching
	s.watching = true
	s.subsMu.Unlock()
	if start {
		go s.watch()
	}
	return s.gen.Load()
}

func (s *Store) queueWrite(ctx context.Context, fn func(tx *Tx) error, records bool) error {
	c := &writeCall{ctx: ctx, fn: fn, records: records, done: make(chan error, 1)}
	if err := s.enqueue(c); err != nil {
		return err
	}
	return <-c.done
}

func (s *Store) write(ctx context.Context, cache *stmtCache, misses *[]string, fn func(tx *Tx) error) error {
	if err := s.b.Health(ctx); err != nil {
		return err
	}
	s.writes.Add(1)
	sqlTx, err := s.b.BeginWrite(ctx)
	if err != nil {
		return fmt.Errorf("begin write: %w", err)
	}
	tx := &Tx{tx: sqlTx, s: s, cache: cache, misses: misses}
	if err := fn(tx); err != nil {
		_ = sqlTx.Rollback()
		return err
	}
	err = sqlTx.Commit()
	s.gen.Add(1)
	if err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// Read runs fn in one read-only transaction, so everything it reads comes
// from one snapshot.
func (s *Store) Read(ctx context.Context, fn func(tx *Tx) error) error {
	sqlTx, err := s.b.BeginRead(ctx)
	if err != nil {
		return fmt.Errorf("begin read: %w", err)
	}
	defer func() { _ = sqlTx.Rollback() }() // a panicking fn
	var misses []string
	err = fn(&Tx{tx: sqlTx, s: s, reads: true, misses: &misses})
	_ = sqlTx.Rollback()
	// Prepared once the transaction has given its connection back: preparing
	// inside it could wait for a pool every connection of which is held.
	for _, q := range misses {
		s.reads.get(ctx, s.b.Reader(), q)
	}
	return err
}

// ExecContext runs one writing statement in its own serialised write
// transaction.
func (s *Store) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	var res sql.Result
	err := s.Write(ctx, func(tx *Tx) error {
		var err error
		res, err = tx.ExecContext(ctx, q, args...)
		return err
	})
	return res, err
}

// QueryContext runs a query on the read pool, prepared once per connection.
func (s *Store) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	if st := s.reads.get(ctx, s.b.Reader(), s.rebind(q)); st != nil {
		return st.QueryContext(ctx, s.bind(args)...)
	}
	return s.b.Reader().QueryContext(ctx, s.rebind(q), s.bind(args)...)
}

// QueryRowContext runs a one-row query on the read pool, prepared once per
// connection.
func (s *Store) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	if st := s.reads.get(ctx, s.b.Reader(), s.rebind(q)); st != nil {
		return st.QueryRowContext(ctx, s.bind(args)...)
	}
	return s.b.Reader().QueryRowContext(ctx, s.rebind(q), s.bind(args)...)
}

// Queryer runs statements: a *Tx (inside a transaction) or the *Store (reads
// on the read pool, writes in a transaction of their own).
type Queryer interface {
	ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

var (
	_ Queryer = (*Tx)(nil)
	_ Queryer = (*Store)(nil)
)

// Tx is a transaction of the store. Its statements use ? placeholders
// whatever the engine.
type Tx struct {
	tx     *sql.Tx
	s      *Store
	cache  *stmtCache
	misses *[]string
	// detached: statements ignore their caller's cancellation. A grouped
	// transaction carries other callers' writes, and SQLite rolls a whole
	// transaction back when a write statement in it is interrupted.
	detached bool
	reads    bool // a read transaction: statements come from the read pool's cache
	// memo is shared by the write functions of one group transaction (nil
	// elsewhere); see Memo.
	memo map[string]any
}

// Memo returns what an earlier write function of this group transaction
// left under key with SetMemo (the audit chain's head, say), so the next one
// need not read it back. Nothing is remembered across a write function that
// failed: its savepoint was rolled back, and with it what the memo described.
func (t *Tx) Memo(key string) (any, bool) {
	v, ok := t.memo[key]
	return v, ok
}

// SetMemo leaves v under key for the write functions that follow in this
// group transaction; outside a group transaction it does nothing.
func (t *Tx) SetMemo(key string, v any) {
	if t.memo != nil {
		t.memo[key] = v
	}
}

// stmtCtx is the context a statement runs with.
func (t *Tx) stmtCtx(ctx context.Context) context.Context {
	if t.detached {
		return context.WithoutCancel(ctx)
	}
	return ctx
}

// Dialect is the engine's SQL dialect, for the rare statement that differs.
func (t *Tx) Dialect() Dialect { return t.s.b.Dialect() }

// stmt returns q prepared on the transaction's connection if the cache has it,
// and records a miss otherwise.
func (t *Tx) stmt(ctx context.Context, q string) *sql.Stmt {
	if t.reads {
		q = t.s.rebind(q)
		if st := t.s.reads.peek(q); st != nil {
			return t.tx.StmtContext(ctx, st)
		}
		*t.misses = append(*t.misses, q)
		return nil
	}
	if t.cache == nil {
		return nil
	}
	if st := t.cache.get(q); st != nil {
		return t.tx.StmtContext(ctx, st)
	}
	*t.misses = append(*t.misses, q)
	return nil
}

// ExecContext runs q.
func (t *Tx) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	ctx = t.stmtCtx(ctx)
	if st := t.stmt(ctx, q); st != nil {
		return st.ExecContext(ctx, t.s.bind(args)...)
	}
	return t.tx.ExecContext(ctx, t.s.rebind(q), t.s.bind(args)...)
}

// QueryContext runs q.
func (t *Tx) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	ctx = t.stmtCtx(ctx)
	if st := t.stmt(ctx, q); st != nil {
		return st.QueryContext(ctx, t.s.bind(args)...)
	}
	return t.tx.QueryContext(ctx, t.s.rebind(q), t.s.bind(args)...)
}

// QueryRowContext runs q, which returns at most one row.
func (t *Tx) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	ctx = t.stmtCtx(ctx)
	if st := t.stmt(ctx, q); st != nil {
		return st.QueryRowContext(ctx, t.s.bind(args)...)
	}
	return t.tx.QueryRowContext(ctx, t.s.rebind(q), t.s.bind(args)...)
}

// Strings runs a query whose rows are one text column (ids, mostly) and
// returns them in order.
func Strings(ctx context.Context, q Queryer, query string, args ...any) ([]string, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// Placeholders returns n comma-separated ? placeholders for an IN list.
func Placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?,", n), ",")
}
