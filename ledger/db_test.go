package ledger

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/tollgatehq/tollgate/ledger/store"
)

func TestOpenRejectsBadOptions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "x.db")
	tests := []struct {
		name string
		opt  Option
		want string
	}{
		{"negative blocks", WithAutoFreeze(-1, time.Minute), "auto-freeze blocks"},
		{"no window", WithAutoFreeze(3, 0), "auto-freeze window"},
		{"derived window", WithDerivedKeyWindow(0), "derived key window"},
		{"readers", WithReadConns(0), "read pool"},
		{"component name", WithMigrations(store.Migrations{Component: "Bad-Name", FS: fstest.MapFS{}}), "component"},
		{"ledger component", WithMigrations(store.Migrations{Component: "ledger", FS: fstest.MapFS{}}), "given twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := Open(ctx, path, tt.opt); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Open = %v, want error containing %q", err, tt.want)
			}
		})
	}
}

// TestMigrationsShipBothDialects: every ledger schema version exists for
// SQLite and PostgreSQL under the same name.
func TestMigrationsShipBothDialects(t *testing.T) {
	t.Parallel()
	if err := Migrations.CheckDialects(); err != nil {
		t.Fatal(err)
	}
}
