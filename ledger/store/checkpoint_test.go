package store

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCheckpointsRunInTheBackground: the writer never checkpoints on commit
// (wal_autocheckpoint is 0), the background checkpointer copies the log
// PASSIVEly while writes go on, and truncates it to zero bytes once writes
// stop and it is past its size.
func TestCheckpointsRunInTheBackground(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ck.db")
	s := openAt(t, path, WithMigrations(counterMigrations), WithCheckpoints(20*time.Millisecond, 64<<10))
	var auto int
	if err := s.Backend().Writer().QueryRowContext(ctx, "PRAGMA wal_autocheckpoint").Scan(&auto); err != nil || auto != 0 {
		t.Fatalf("writer wal_autocheckpoint = %d (%v), want 0", auto, err)
	}
	pad := strings.Repeat("x", 4000)
	for i := range 100 {
		if _, err := s.ExecContext(ctx, `INSERT INTO seen (v) VALUES (?)`, i); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ExecContext(ctx, `UPDATE counter SET n = length(?) + ? WHERE id = 1`, pad, i); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second) // a hang guard, not a measurement
	for {
		st := s.Checkpoints()
		size := int64(-1)
		if fi, err := os.Stat(path + "-wal"); err == nil {
			size = fi.Size()
		}
		if st.Passive > 0 && st.Truncate > 0 && size == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("checkpoints %+v, log %d bytes: the log was not truncated when idle", st, size)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := countRows(t, s, `SELECT COUNT(*) FROM seen`); got != 100 {
		t.Fatalf("%d rows after the checkpoints, want 100", got)
	}
	if err := s.Health(ctx); err != nil {
		t.Fatalf("a truncated log must still be the one in use: %v", err)
	}
}
