package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHealthNoticesReplacedFiles: a database file or write-ahead log removed
// or replaced under a running process turns Health (and Ping) into an error
// naming the file, and every write is refused with ErrUnhealthy. It stays
// that way: the process must be restarted on the files as they now are.
func TestHealthNoticesReplacedFiles(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		damage func(t *testing.T, path string)
		want   string
	}{
		{"WAL removed", func(t *testing.T, path string) { must(t, os.Remove(path+"-wal")) }, "write-ahead log"},
		{"WAL replaced", func(t *testing.T, path string) {
			must(t, os.Remove(path+"-wal"))
			must(t, os.WriteFile(path+"-wal", nil, 0o600))
		}, "was replaced"},
		{"database removed", func(t *testing.T, path string) { must(t, os.Remove(path)) }, "was removed"},
		{"database replaced", func(t *testing.T, path string) {
			b, err := os.ReadFile(path)
			must(t, err)
			must(t, os.WriteFile(path+".new", b, 0o600))
			must(t, os.Rename(path+".new", path))
		}, "was replaced"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "tollgate.db")
			s := openAt(t, path)
			if _, err := s.ExecContext(ctx, `INSERT INTO schema_migrations (component, version, applied_at) VALUES ('t', 1, 0)`); err != nil {
				t.Fatal(err)
			}
			if err := s.Ping(ctx); err != nil {
				t.Fatalf("healthy store: %v", err)
			}
			tt.damage(t, path)
			for _, err := range []error{s.Health(ctx), s.Ping(ctx)} {
				if !errors.Is(err, ErrUnhealthy) || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), path) {
					t.Fatalf("after damage: %v, want ErrUnhealthy saying %q about %s", err, tt.want, path)
				}
			}
			_, err := s.ExecContext(ctx, `INSERT INTO schema_migrations (component, version, applied_at) VALUES ('t', 2, 0)`)
			if !errors.Is(err, ErrUnhealthy) {
				t.Fatalf("write after damage: %v, want ErrUnhealthy", err)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestOpenRefusesHardLinkedDatabase: SQLite keeps its log beside the name it
// was opened by, so a second name for the file is refused by either name.
func TestOpenRefusesHardLinkedDatabase(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "tollgate.db")
	openAt(t, path).Close()
	link := filepath.Join(dir, "other-name.db")
	must(t, os.Link(path, link))
	for _, p := range []string{path, link} {
		if _, err := Open(context.Background(), p, WithLogger(quietLog)); err == nil || !strings.Contains(err.Error(), "2 hard links") {
			t.Fatalf("Open(%s) = %v, want a refusal naming the hard links", p, err)
		}
	}
	// A symlink is another name SQLite resolves: fine.
	must(t, os.Remove(link))
	sym := filepath.Join(dir, "symlink.db")
	must(t, os.Symlink(path, sym))
	openAt(t, sym)
}

// TestSubscribeSeesOtherProcessCommits: a commit through another handle on
// the file (another process, as far as SQLite knows) reaches a subscriber.
func TestSubscribeSeesOtherProcessCommits(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "tollgate.db")
	a, b := openAt(t, path), openAt(t, path)
	ch, cancel := a.Subscribe()
	defer cancel()
	for i := range 3 {
		if _, err := b.ExecContext(ctx, `INSERT INTO schema_migrations (component, version, applied_at) VALUES ('t', ?, 0)`, i+1); err != nil {
			t.Fatal(err)
		}
		select {
		case <-ch:
		case <-time.After(30 * time.Second):
			t.Fatalf("no change seen after commit %d", i+1)
		}
		// Drain what the same commit may have signalled twice.
		select {
		case <-ch:
		default:
		}
	}
}
