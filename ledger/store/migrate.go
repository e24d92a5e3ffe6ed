package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"sort"
	"strconv"
	"strings"
)

// Migrations are one component's numbered schema files: FS holds a folder per
// dialect ("sqlite", "postgres") of files named NNNN_description.sql. Each
// dialect's folder has the same versions; a version changes the schema in the
// same way in every dialect. Applied versions are recorded per component in
// schema_migrations.
type Migrations struct {
	Component string // lower-case letters, digits and _, starting with a letter
	FS        fs.FS
}

// Embedded returns the migrations of component kept in the folder dir of an
// embedded file system. It panics when dir is missing: an embed pattern fixes
// it at build time.
func Embedded(component string, fsys fs.FS, dir string) Migrations {
	sub, err := fs.Sub(fsys, dir)
	if err != nil {
		panic(err)
	}
	return Migrations{Component: component, FS: sub}
}

func checkComponents(sets []Migrations) error {
	var problems []string
	seen := map[string]bool{}
	for _, m := range sets {
		switch {
		case !validComponent(m.Component):
			problems = append(problems, fmt.Sprintf("migration component %q must be lower-case letters, digits and _ starting with a letter", m.Component))
		case seen[m.Component]:
			problems = append(problems, fmt.Sprintf("migration component %q is given twice", m.Component))
		case m.FS == nil:
			problems = append(problems, fmt.Sprintf("migration component %q has a nil file system", m.Component))
		}
		seen[m.Component] = true
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

type migration struct {
	version int
	name    string
	sql     string
}

// load reads the numbered *.sql files of m for dialect d. Versions must be
// positive and unique. Other files are ignored so a package can keep a README
// beside its migrations.
func (m Migrations) load(d Dialect) ([]migration, error) {
	dir := string(d)
	entries, err := fs.ReadDir(m.FS, dir)
	if err != nil {
		return nil, fmt.Errorf("read %s migrations of %s: %w", d, m.Component, err)
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
			return nil, fmt.Errorf("migration %s/%s/%s: name must be NNNN_description.sql with NNNN a positive number of at least 4 digits", m.Component, dir, e.Name())
		}
		if prev, dup := seen[v]; dup {
			return nil, fmt.Errorf("migrations %s/%s/%s and %s share version %d", m.Component, dir, prev, e.Name(), v)
		}
		seen[v] = e.Name()
		body, err := fs.ReadFile(m.FS, path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read migration %s/%s/%s: %w", m.Component, dir, e.Name(), err)
		}
		out = append(out, migration{version: v, name: e.Name(), sql: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	return out, nil
}

// migrate applies every pending migration of every component in one
// serialised write transaction: two processes starting at once cannot both
// apply a version, and a failure leaves the schema exactly as it was.
func (s *Store) migrate(ctx context.Context, sets []Migrations) error {
	type pending struct {
		component string
		m         migration
	}
	all := make([][]migration, len(sets))
	for i, set := range sets {
		ms, err := set.load(s.Dialect())
		if err != nil {
			return err
		}
		all[i] = ms
	}
	var applied []pending
	// No statement cache: the schema changes under it.
	err := s.write(ctx, nil, nil, func(tx *Tx) error {
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			component  TEXT    NOT NULL,
			version    INTEGER NOT NULL,
			name       TEXT    NOT NULL DEFAULT '',
			applied_at BIGINT  NOT NULL,
			PRIMARY KEY (component, version)
		)`); err != nil {
			return fmt.Errorf("create schema_migrations: %w", err)
		}
		now := s.now().UnixNano()
		for i, set := range sets {
			done := map[int]bool{}
			maxDone := 0
			rows, err := tx.QueryContext(ctx, `SELECT version FROM schema_migrations WHERE component = ?`, set.Component)
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
			// A database migrated by a newer binary may hold tables this one
			// does not understand: refuse rather than run against a schema it
			// cannot reason about.
			if maxDone > known {
				return fmt.Errorf("schema of %s is at version %d but this binary knows only up to %d; upgrade tollgate", set.Component, maxDone, known)
			}
			for _, m := range all[i] {
				if done[m.version] {
					continue
				}
				if _, err := tx.tx.ExecContext(ctx, m.sql); err != nil {
					return fmt.Errorf("apply migration %s/%s: %w", set.Component, m.name, err)
				}
				if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (component, version, name, applied_at) VALUES (?, ?, ?, ?)`,
					set.Component, m.version, m.name, now); err != nil {
					return fmt.Errorf("record migration %s/%s: %w", set.Component, m.name, err)
				}
				applied = append(applied, pending{set.Component, m})
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	for _, p := range applied {
		s.log.InfoContext(ctx, "migration applied", slog.String("migration_component", p.component), slog.Int("version", p.m.version), slog.String("name", p.m.name))
	}
	return nil
}

// CheckDialects reports every version of m that is not in every dialect's
// folder under the same name: each engine must get the same schema changes.
func (m Migrations) CheckDialects() error {
	var problems []string
	byDialect := map[Dialect][]migration{}
	for _, d := range []Dialect{SQLite, Postgres} {
		ms, err := m.load(d)
		if err != nil {
			return err
		}
		byDialect[d] = ms
	}
	names := map[string]map[Dialect]bool{}
	for d, ms := range byDialect {
		for _, x := range ms {
			if names[x.name] == nil {
				names[x.name] = map[Dialect]bool{}
			}
			names[x.name][d] = true
		}
	}
	for name, in := range names {
		for _, d := range []Dialect{SQLite, Postgres} {
			if !in[d] {
				problems = append(problems, fmt.Sprintf("migration %s/%s has no %s twin", m.Component, name, d))
			}
		}
	}
	sort.Strings(problems)
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}
