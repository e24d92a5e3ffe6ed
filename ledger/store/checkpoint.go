package store

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"sync/atomic"
	"time"
)

// Checkpoint defaults: a PASSIVE checkpoint every second, and a TRUNCATE
// once the write-ahead log has grown past 4 MiB and this process wrote
// nothing during the last interval.
const (
	DefaultCheckpointInterval = time.Second
	DefaultTruncateAbove      = 4 << 20
)

// WithCheckpoints sets how often the background checkpointer runs a PASSIVE
// checkpoint, and how large (bytes) the write-ahead log may grow before an
// idle interval truncates it. SQLite only.
func WithCheckpoints(every time.Duration, truncateAbove int64) Option {
	return func(o *options) { o.checkpointEvery, o.truncateAbove = every, truncateAbove }
}

// checkpointer is a backend whose write-ahead log a background goroutine
// checkpoints, so no commit of a request ever runs one inline.
type checkpointer interface {
	// checkpoint runs PRAGMA wal_checkpoint(PASSIVE) or (TRUNCATE), on a
	// connection of its own, and returns the log's size in bytes after it.
	checkpoint(ctx context.Context, truncate bool) (int64, error)
}

// CheckpointStats counts the background checkpointer's work.
type CheckpointStats struct {
	Passive  uint64 // PASSIVE checkpoints run
	Truncate uint64 // TRUNCATE checkpoints run
	Failed   uint64 // checkpoints that returned an error (busy, mostly)
}

type checkpointCounters struct {
	passive, truncate, failed atomic.Uint64
}

// Checkpoints reports the background checkpointer's work.
func (s *Store) Checkpoints() CheckpointStats {
	return CheckpointStats{Passive: s.ckpt.passive.Load(), Truncate: s.ckpt.truncate.Load(), Failed: s.ckpt.failed.Load()}
}

// runCheckpoints checkpoints the write-ahead log until the store closes:
// PASSIVE (never waits for a reader or writer, copies what it can) every
// interval, and TRUNCATE (resets the log to zero bytes; waits briefly for
// readers) when the log is past truncateAbove and the interval saw no write
// of this process.
func (s *Store) runCheckpoints(c checkpointer, every time.Duration, truncateAbove int64) {
	t := time.NewTicker(every)
	defer t.Stop()
	lastWrites := s.writes.Load()
	for {
		select {
		case <-s.life.Done():
			return
		case <-t.C:
		}
		writes := s.writes.Load()
		idle := writes == lastWrites
		lastWrites = writes
		size, err := c.checkpoint(s.life, false)
		if err != nil {
			s.ckpt.failed.Add(1)
			continue
		}
		s.ckpt.passive.Add(1)
		if idle && size > truncateAbove {
			if _, err := c.checkpoint(s.life, true); err != nil {
				s.ckpt.failed.Add(1)
				continue
			}
			s.ckpt.truncate.Add(1)
		}
	}
}

// checkpoint runs on the backend's checkpoint connection: a short busy
// timeout, so a TRUNCATE that must wait for readers gives up rather than
// hold the write lock.
func (b *sqliteBackend) checkpoint(ctx context.Context, truncate bool) (int64, error) {
	mode := "PASSIVE"
	if truncate {
		mode = "TRUNCATE"
	}
	var busy, logFrames, done int
	if err := b.ckpt.QueryRowContext(ctx, "PRAGMA wal_checkpoint("+mode+")").Scan(&busy, &logFrames, &done); err != nil {
		return 0, fmt.Errorf("checkpoint %s: %w", b.path, err)
	}
	if busy != 0 {
		return 0, fmt.Errorf("checkpoint %s: %s checkpoint was blocked", b.path, mode)
	}
	fi, err := os.Stat(b.path + "-wal")
	if err != nil {
		return 0, nil // no log: nothing to truncate
	}
	return fi.Size(), nil
}

// openCheckpointConn opens the connection checkpoints run on.
func openCheckpointConn(abs string) (*sql.DB, error) {
	db, err := sql.Open("sqlite", abs+"?_pragma=busy_timeout(250)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)")
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	return db, nil
}
