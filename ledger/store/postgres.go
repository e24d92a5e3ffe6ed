package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// postgresBackend is one PostgreSQL database (pgx v5 through database/sql),
// shared by any number of tollgate replicas on any number of hosts. Every
// write transaction first takes one transaction-scoped advisory lock, so
// writes are serialised across replicas exactly as BEGIN IMMEDIATE serialises
// them on SQLite: a read-check-write (a budget, the audit chain's next seq)
// is exact, with no retries. The same statement queues a NOTIFY that
// PostgreSQL delivers only if the transaction commits: the change feed.
type postgresBackend struct {
	cfg    *pgx.ConnConfig // parsed DSN, password included: never printed
	name   string          // the DSN without its password, for messages
	writer *sql.DB
	reader *sql.DB
}

var _ Backend = (*postgresBackend)(nil)

// writeLockKey is the advisory lock every write transaction takes ("tollgat"
// in ASCII). Advisory locks are per database, so two tollgate databases on
// one cluster do not serialise each other.
const writeLockKey int64 = 0x746f6c6c67617465

// changesChannel is the LISTEN/NOTIFY channel every committed write
// transaction notifies.
const changesChannel = "tollgate_changes"

// postgresWriteConns is the write pool's size: one, as on SQLite. Writers
// of one process queue in database/sql and only one at a time waits on the
// advisory lock; with a connection per waiter, a queue of waiting backends
// cut throughput several-fold under contention (measured: 16 goroutines,
// 8 connections, 104 reservations/s; one connection, 730/s). The single
// connection also lets the store keep its statements prepared.
const postgresWriteConns = 1

// IsPostgresDSN reports whether dsn names a PostgreSQL database (a
// postgres:// or postgresql:// URL) rather than a SQLite file.
func IsPostgresDSN(dsn string) bool {
	l := strings.ToLower(dsn)
	return strings.HasPrefix(l, "postgres://") || strings.HasPrefix(l, "postgresql://")
}

// RedactDSN returns dsn fit for a log line or an error message: a PostgreSQL
// URL loses its password (in the user info or a password= parameter); a
// SQLite path is returned as it is.
func RedactDSN(dsn string) string {
	if !IsPostgresDSN(dsn) {
		return dsn
	}
	u, err := url.Parse(dsn)
	if err != nil {
		// Unparseable: print the scheme only, never what may hold a secret.
		scheme, _, _ := strings.Cut(dsn, "://")
		return scheme + "://(unparseable URL)"
	}
	q := u.Query()
	if q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

// OpenPostgres connects to the PostgreSQL database dsn names (a postgres://
// URL as pgx reads it) with readers connections in the read pool.
func OpenPostgres(ctx context.Context, dsn string, readers int) (Backend, error) {
	name := RedactDSN(dsn)
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// pgx's message may quote the DSN: keep only our redacted name.
		return nil, fmt.Errorf("open %s: the PostgreSQL URL is not valid (want postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=…)", name)
	}
	b := &postgresBackend{cfg: cfg, name: name}
	b.writer = stdlib.OpenDB(*cfg)
	b.writer.SetMaxOpenConns(postgresWriteConns)
	b.writer.SetMaxIdleConns(postgresWriteConns)
	b.writer.SetConnMaxIdleTime(5 * time.Minute)
	b.reader = stdlib.OpenDB(*cfg)
	b.reader.SetMaxOpenConns(readers)
	b.reader.SetMaxIdleConns(readers)
	b.reader.SetConnMaxIdleTime(5 * time.Minute)
	if err := b.writer.PingContext(ctx); err != nil {
		_ = b.Close()
		return nil, fmt.Errorf("open %s: %w", name, redactErr(err, dsn))
	}
	return b, nil
}

// redactErr keeps a password out of an error that quotes the DSN.
func redactErr(err error, dsn string) error {
	u, perr := url.Parse(dsn)
	if perr != nil {
		return err
	}
	pw, ok := u.User.Password()
	if !ok || pw == "" || !strings.Contains(err.Error(), pw) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), pw, "xxxxx"))
}

func (b *postgresBackend) Dialect() Dialect { return Postgres }
func (b *postgresBackend) Writer() *sql.DB  { return b.writer }
func (b *postgresBackend) Reader() *sql.DB  { return b.reader }
func (b *postgresBackend) String() string   { return b.name }

// LeaseDir is "": replicas may run on different hosts, so leases live by
// heartbeat and TTL alone.
func (b *postgresBackend) LeaseDir() string { return "" }

// BeginWrite begins a READ COMMITTED transaction and takes the write lock in
// its first statement: every later statement sees every transaction committed
// before the lock was granted.
func (b *postgresBackend) BeginWrite(ctx context.Context) (*sql.Tx, error) {
	tx, err := b.writer.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1), pg_notify($2, '')`, writeLockKey, changesChannel); err != nil {
		_ = tx.Rollback()
		return nil, fmt.Errorf("take the write lock: %w", err)
	}
	return tx, nil
}

// BeginRead begins a read-only REPEATABLE READ transaction: one snapshot.
func (b *postgresBackend) BeginRead(ctx context.Context) (*sql.Tx, error) {
	return b.reader.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
}

// Health has nothing to check beyond what every statement finds out: the
// server owns the files.
func (b *postgresBackend) Health(context.Context) error { return nil }

// Watch listens on its own connection for the notification every committed
// write transaction sends.
func (b *postgresBackend) Watch(ctx context.Context, changed func()) error {
	conn, err := pgx.ConnectConfig(ctx, b.cfg)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("connect to listen: %w", err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{changesChannel}.Sanitize()); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("listen: %w", err)
	}
	// A change committed before LISTEN took effect would otherwise be missed.
	changed()
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("wait for notification: %w", err)
		}
		changed()
	}
}

// Now is the database server's clock, which every replica shares whatever
// its own host's clock says.
func (b *postgresBackend) Now(ctx context.Context) (time.Time, error) {
	var t time.Time
	if err := b.reader.QueryRowContext(ctx, `SELECT clock_timestamp()`).Scan(&t); err != nil {
		return time.Time{}, fmt.Errorf("read the database clock: %w", err)
	}
	return t, nil
}

// Rebind turns ? and ?NNN placeholders into $N, leaving string literals,
// quoted identifiers and comments alone. A bare ? takes the number after the
// largest used so far, as SQLite numbers it.
func (b *postgresBackend) Rebind(q string) string { return rebindDollar(q) }

func rebindDollar(q string) string {
	var out strings.Builder
	out.Grow(len(q) + 16)
	largest := 0
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case c == '\'' || c == '"':
			j := i + 1
			for j < len(q) {
				if q[j] == c {
					if j+1 < len(q) && q[j+1] == c { // doubled quote inside
						j += 2
						continue
					}
					break
				}
				j++
			}
			end := min(j+1, len(q))
			out.WriteString(q[i:end])
			i = end - 1
		case c == '-' && i+1 < len(q) && q[i+1] == '-':
			j := strings.IndexByte(q[i:], '\n')
			if j < 0 {
				out.WriteString(q[i:])
				i = len(q)
				continue
			}
			out.WriteString(q[i : i+j+1])
			i += j
		case c == '?':
			j := i + 1
			for j < len(q) && q[j] >= '0' && q[j] <= '9' {
				j++
			}
			n := largest + 1
			if j > i+1 {
				n, _ = strconv.Atoi(q[i+1 : j])
			}
			largest = max(largest, n)
			out.WriteByte('$')
			out.WriteString(strconv.Itoa(n))
			i = j - 1
		default:
			out.WriteByte(c)
		}
	}
	return out.String()
}

func (b *postgresBackend) Close() error {
	var errs []error
	if b.reader != nil {
		errs = append(errs, b.reader.Close())
	}
	if b.writer != nil {
		errs = append(errs, b.writer.Close())
	}
	return errors.Join(errs...)
}
