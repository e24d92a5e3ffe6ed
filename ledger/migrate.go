package ledger

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"sort"
	"strconv"
	"strings"
)

type migration struct {
	version int
	name    string
	sql     string
}

// loadMigrations reads the numbered *.sql files at the root of fsys. Names are
// NNNN_description.sql; versions must be positive and unique. Other files are
// ignored so a package can keep a README beside its migrations.
func loadMigrations(component string, fsys fs.FS) ([]migration, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("read migrations of %s: %w", component, err)
	}
	var out []migration
	seen := map[int]string{}
	for _, e := range entries {
		if e.IsDir() || path.Ext(e.Name()) != ".sql" {
			continue
		}
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 || len(num) < 4 {
			return nil, fmt.Errorf("migration %s/%s: name must be NNNN_description.sql with NNNN a positive number of at least 4 digits", component, e.Name())
		}
		if prev, dup := seen[v]; dup {
			return nil, fmt.Errorf("migrations %s/%s and %s/%s share version %d", component, prev, component, e.Name(), v)
		}
		seen[v] = e.Name()
		body, err := fs.ReadFile(fsys, e.Name())
		if err != nil {
			return nil, fmt.Errorf("read migration %s/%s: %w", component, e.Name(), err)
		}
		out = append(out, migration{version: v, name: e.Name(), sql: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	return out, nil
}

// migrate applies every pending migration of every component in one BEGIN
// IMMEDIATE transaction: two processes starting at once cannot both apply a
// version, and a failure leaves the schema exactly as it was.
func (db *DB) migrate(ctx context.Context, sets []migrationSet) error {
	type pending struct {
		component string
		m         migration
	}
	var all [][]migration
	for _, s := range sets {
		ms, err := loadMigrations(s.component, s.fsys)
		if err != nil {
			return err
		}
		all = append(all, ms)
	}
	var applied []pending
	err := db.writeWith(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			component  TEXT    NOT NULL,
			version    INTEGER NOT NULL,
			name       TEXT    NOT NULL DEFAULT '',
			applied_at INTEGER NOT NULL,
			PRIMARY KEY (component, version)
		)`); err != nil {
			return fmt.Errorf("create schema_migrations: %w", err)
		}
		now := db.now().UnixNano()
		for i, s := range sets {
			done := map[int]bool{}
			maxDone := 0
			rows, err := tx.QueryContext(ctx, `SELECT version FROM schema_migrations WHERE component = ?`, s.component)
			if err != nil {
				return fmt.Errorf("read schema_migrations: %w", err)
			}
			for rows.Next() {
				var v int
				if err := rows.Scan(&v); err != nil {
					rows.Close()
					return fmt.Errorf("read schema_migrations: %w", err)
				}
				done[v] = true
				maxDone = max(maxDone, v)
			}
			if err := rows.Close(); err != nil {
				return fmt.Errorf("read schema_migrations: %w", err)
			}
			known := 0
			if n := len(all[i]); n > 0 {
				known = all[i][n-1].version
			}
			// A file migrated by a newer binary may hold tables this one does not
			// understand: refuse rather than run against a schema it cannot reason about.
			if maxDone > known {
				return fmt.Errorf("schema of %s is at version %d but this binary knows only up to %d; upgrade tollgate", s.component, maxDone, known)
			}
			for _, m := range all[i] {
				if done[m.version] {
					continue
				}
				if _, err := tx.ExecContext(ctx, m.sql); err != nil {
					return fmt.Errorf("apply migration %s/%s: %w", s.component, m.name, err)
				}
				if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (component, version, name, applied_at) VALUES (?, ?, ?, ?)`,
					s.component, m.version, m.name, now); err != nil {
					return fmt.Errorf("record migration %s/%s: %w", s.component, m.name, err)
				}
				applied = append(applied, pending{s.component, m})
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	for _, p := range applied {
		db.log.InfoContext(ctx, "migration applied", slog.String("migration_component", p.component), slog.Int("version", p.m.version), slog.String("name", p.m.name))
	}
	return nil
}
