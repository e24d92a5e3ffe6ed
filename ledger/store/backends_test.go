package store_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/tollgatehq/tollgate/ledger/store"
	"github.com/tollgatehq/tollgate/ledger/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// counterMigrations is a component with one table, in both dialects.
var counterMigrations = store.Migrations{Component: "counter", FS: fstest.MapFS{
	"sqlite/0001_counter.sql":   {Data: []byte(`CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL); INSERT INTO counter VALUES (1, 0);`)},
	"postgres/0001_counter.sql": {Data: []byte(`CREATE TABLE counter (id INTEGER PRIMARY KEY, n BIGINT NOT NULL); INSERT INTO counter VALUES (1, 0);`)},
}}

func open(t testing.TB, dsn string, opts ...store.Option) *store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), dsn, append([]store.Option{store.WithLogger(quiet), store.WithMigrations(counterMigrations)}, opts...)...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestWriteSerialisedAcrossHandles: read-check-writes from two handles on one
// database (two processes, or two replicas) never lose an update, and a
// check against a limit holds exactly.
func TestWriteSerialisedAcrossHandles(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		dsn := b.DSN(t)
		a, c := open(t, dsn), open(t, dsn)
		if a.Dialect() != b.Dialect {
			t.Fatalf("dialect %s, want %s", a.Dialect(), b.Dialect)
		}
		const workers, each, limit = 8, 10, 50
		ctx := context.Background()
		var wg sync.WaitGroup
		var mu sync.Mutex
		granted := 0
		for w := range workers {
			s := a
			if w%2 == 1 {
				s = c
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range each {
					ok := false
					err := s.Write(ctx, func(tx *store.Tx) error {
						var n int
						if err := tx.QueryRowContext(ctx, `SELECT n FROM counter WHERE id = ?`, 1).Scan(&n); err != nil {
							return err
						}
						if n >= limit {
							return nil
						}
						ok = true
						_, err := tx.ExecContext(ctx, `UPDATE counter SET n = ?1 WHERE id = ?2`, n+1, 1)
						return err
					})
					if err != nil {
						t.Error(err)
						return
					}
					if ok {
						mu.Lock()
						granted++
						mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
		var n int
		if err := a.QueryRowContext(ctx, `SELECT n FROM counter WHERE id = ?`, 1).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != limit || granted != limit {
			t.Fatalf("counter %d, granted %d; want both %d", n, granted, limit)
		}
	})
}

// TestChangeFeedAcrossHandles: a write committed through one handle wakes a
// subscriber of another; a rolled-back one need not.
func TestChangeFeedAcrossHandles(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		dsn := b.DSN(t)
		a, c := open(t, dsn), open(t, dsn)
		ctx := context.Background()
		ch, cancel := c.Subscribe()
		defer cancel()
		// The watch wakes everyone once when it starts; drain that first.
		select {
		case <-ch:
		case <-time.After(30 * time.Second):
			t.Fatal("the watch never started")
		}
		for i := range 3 {
			if _, err := a.ExecContext(ctx, `UPDATE counter SET n = n + 1 WHERE id = ?`, 1); err != nil {
				t.Fatal(err)
			}
			select {
			case <-ch:
			case <-time.After(30 * time.Second):
				t.Fatalf("change %d not seen by the other handle", i)
			}
		}
	})
}

// TestLeaseDeadByHeartbeatOnPostgres: replicas on PostgreSQL have no lease
// file; a lease whose heartbeats stop is dead once the TTL has passed, by the
// database's clock, and then reclaimable exactly once.
func TestLeaseDeadByHeartbeatOnPostgres(t *testing.T) {
	t.Parallel()
	dsn := storetest.PostgresDSN(t)
	const ttl = time.Second
	a := open(t, dsn, store.WithLeaseTTL(ttl))
	c := open(t, dsn, store.WithLeaseTTL(ttl))
	ctx := context.Background()
	l, err := a.StartLease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	infos, err := c.Leases(ctx)
	if err != nil || len(infos) != 1 || !infos[0].Alive || infos[0].File != "" || !strings.Contains(infos[0].Why, "heartbeat") {
		t.Fatalf("live lease seen as %+v, %v", infos, err)
	}
	if ok, err := c.ReclaimLease(ctx, l.ID()); err != nil || ok {
		t.Fatalf("reclaim of a live lease = %v, %v", ok, err)
	}
	// The process "dies": its store closes without ending the lease.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second) // hang guard
	for {
		infos, err = c.Leases(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(infos) == 1 && !infos[0].Alive {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lease never died: %+v", infos)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if ok, err := c.ReclaimLease(ctx, l.ID()); err != nil || !ok {
		t.Fatalf("reclaim of a dead lease = %v, %v", ok, err)
	}
	if err := c.DropLease(ctx, l.ID()); err != nil {
		t.Fatal(err)
	}
	if infos, _ := c.Leases(ctx); len(infos) != 0 {
		t.Fatalf("dropped lease still listed: %+v", infos)
	}
}

// TestPostgresDSNNeverShowsItsPassword: messages name the database without
// the password, whether the DSN carries it in the user info or a parameter.
func TestPostgresDSNNeverShowsItsPassword(t *testing.T) {
	t.Parallel()
	for _, dsn := range []string{
		"postgres://tollgate:s3cr3t-pw@127.0.0.1:1/tollgate?sslmode=disable&connect_timeout=1",
		"postgresql://tollgate@127.0.0.1:1/tollgate?password=s3cr3t-pw&sslmode=disable&connect_timeout=1",
		"postgres://tollgate:s3cr3t-pw@[::1/bad",
	} {
		if r := store.RedactDSN(dsn); strings.Contains(r, "s3cr3t-pw") {
			t.Errorf("RedactDSN(%q) = %q", dsn, r)
		}
		_, err := store.Open(context.Background(), dsn, store.WithLogger(quiet))
		if err == nil {
			t.Fatalf("Open(%q) succeeded with nothing listening", dsn)
		}
		if strings.Contains(err.Error(), "s3cr3t-pw") {
			t.Errorf("Open error shows the password: %v", err)
		}
	}
	if !store.IsPostgresDSN("PostgreSQL://x/y") || store.IsPostgresDSN("./var/postgres.db") {
		t.Error("IsPostgresDSN misjudges")
	}
}

// TestMigrationsApplyOncePerDatabase: handles opening one database at once
// apply each version once.
func TestMigrationsApplyOncePerDatabase(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		dsn := b.DSN(t)
		// Two handles opening at once: the version is applied once.
		var wg sync.WaitGroup
		errs := make([]error, 4)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s, err := store.Open(context.Background(), dsn, store.WithLogger(quiet), store.WithMigrations(counterMigrations))
				if err == nil {
					err = s.Close()
				}
				errs[i] = err
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		s := open(t, dsn)
		var n int
		if err := s.QueryRowContext(context.Background(), `SELECT COUNT(*) FROM schema_migrations WHERE component = ?`, "counter").Scan(&n); err != nil || n != 1 {
			t.Fatalf("counter migrations recorded %d times, %v", n, err)
		}
		if err := s.QueryRowContext(context.Background(), `SELECT n FROM counter`).Scan(&n); err != nil || n != 0 {
			t.Fatal(fmt.Errorf("counter = %d, %v", n, err))
		}
	})
}
