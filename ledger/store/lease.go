package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
)

// DefaultLeaseTTL is how long a lease lives without a heartbeat when nothing
// else proves its holder alive (PostgreSQL, or a lease file that cannot be
// checked). Heartbeats come every third of it.
const DefaultLeaseTTL = 30 * time.Second

// WithLeaseTTL sets the lease TTL (default DefaultLeaseTTL).
func WithLeaseTTL(d time.Duration) Option {
	return func(o *options) { o.leaseTTL = d }
}

// Lease is a running process's registration in the database: id, pid, host,
// start and heartbeat, and on SQLite an exclusive flock on a file of its own
// that the kernel drops the moment the process dies, SIGKILL included. Work
// a process does carries its lease id; another process takes that work over
// only once the lease is dead.
type Lease struct {
	s    *Store
	id   string
	file *os.File // the flock'd lease file; nil where leases live by heartbeat

	lost     chan struct{}
	lostOnce sync.Once
	stop     context.CancelFunc
	done     chan struct{}
}

// LeaseInfo is a lease as recorded, with what the liveness check found.
type LeaseInfo struct {
	ID          string    `json:"id"`
	PID         int       `json:"pid"`
	Host        string    `json:"host"`
	StartedAt   time.Time `json:"started_at"`
	HeartbeatAt time.Time `json:"heartbeat_at"`
	File        string    `json:"file,omitempty"`
	Reclaimed   bool      `json:"reclaimed"`
	Alive       bool      `json:"alive"`
	Why         string    `json:"why"` // how liveness was decided
	dev, ino    uint64
}

var leaseIDEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

func newLeaseID() string {
	b := make([]byte, 15)
	_, _ = rand.Read(b) // never fails on supported platforms
	return "ls_" + leaseIDEncoding.EncodeToString(b)
}

// StartLease registers this process: it locks a lease file of its own (where
// the backend keeps them), records the lease, and heartbeats it until Close.
func (s *Store) StartLease(ctx context.Context) (*Lease, error) {
	id := newLeaseID()
	l := &Lease{s: s, id: id, lost: make(chan struct{}), done: make(chan struct{})}
	var (
		path string
		fid  fileID
	)
	if dir := s.b.LeaseDir(); dir != "" {
		f, p, got, err := lockLeaseFile(dir, id)
		if err != nil {
			return nil, fmt.Errorf("start lease: %w", err)
		}
		l.file, path, fid = f, p, got
	}
	host, _ := os.Hostname()
	now, err := s.b.Now(ctx)
	if err != nil {
		l.releaseFile()
		return nil, fmt.Errorf("start lease: %w", err)
	}
	if _, err := s.ExecContext(ctx, `INSERT INTO leases (id, pid, host, started_at, heartbeat_at, lock_file, lock_dev, lock_ino)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, id, os.Getpid(), host, now.UnixNano(), now.UnixNano(), path, int64(fid.dev), int64(fid.ino)); err != nil {
		l.releaseFile()
		return nil, fmt.Errorf("start lease: %w", err)
	}
	hbCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	l.stop = stop
	go l.heartbeat(hbCtx)
	s.leasesMu.Lock()
	if s.leases == nil {
		s.leases = map[*Lease]struct{}{}
	}
	s.leases[l] = struct{}{}
	s.leasesMu.Unlock()
	s.log.InfoContext(ctx, "lease started", slog.String("lease", id), slog.String("lock_file", path))
	return l, nil
}

// ID is the lease id operations record.
func (l *Lease) ID() string { return l.id }

// Lost is closed once the lease is no longer this process's: another
// process found it dead and took its work over (a heartbeat that came too
// late), or heartbeats have failed for half the TTL. A process whose lease
// is lost must start no new work.
func (l *Lease) Lost() <-chan struct{} { return l.lost }

func (l *Lease) markLost(why string) {
	l.lostOnce.Do(func() {
		l.s.log.Error("lease lost: this process must start no new work", slog.String("lease", l.id), slog.String("why", why))
		close(l.lost)
	})
}

func (l *Lease) heartbeat(ctx context.Context) {
	defer close(l.done)
	every := l.s.leaseTTL / 3
	t := time.NewTicker(every)
	defer t.Stop()
	lastOK := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now, err := l.s.b.Now(ctx)
		var res sql.Result
		if err == nil {
			res, err = l.s.ExecContext(ctx, `UPDATE leases SET heartbeat_at = ? WHERE id = ? AND reclaimed_at IS NULL`, now.UnixNano(), l.id)
		}
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			l.s.log.Warn("lease heartbeat failed", slog.String("lease", l.id), slog.String("error", err.Error()))
			if time.Since(lastOK) > l.s.leaseTTL/2 {
				l.markLost("heartbeats have failed for " + time.Since(lastOK).Round(time.Second).String())
			}
		default:
			if n, _ := res.RowsAffected(); n == 0 {
				l.markLost("another process found it dead and took its work over")
				return
			}
			lastOK = time.Now()
		}
	}
}

// Close ends the lease: heartbeats stop, the record is removed and the lease
// file unlocked and deleted. Work still carrying the lease id is then dead
// work, for whichever process comes next.
func (l *Lease) Close(ctx context.Context) error {
	l.s.leasesMu.Lock()
	delete(l.s.leases, l)
	l.s.leasesMu.Unlock()
	l.stop()
	<-l.done
	_, err := l.s.ExecContext(ctx, `DELETE FROM leases WHERE id = ?`, l.id)
	l.releaseFile()
	if err != nil {
		return fmt.Errorf("end lease %s: %w", l.id, err)
	}
	return nil
}

// abandon stops the heartbeat and drops the lock, leaving file and record.
func (l *Lease) abandon() {
	l.stop()
	<-l.done
	if l.file != nil {
		_ = l.file.Close()
		l.file = nil
	}
}

func (l *Lease) releaseFile() {
	if l.file == nil {
		return
	}
	_ = os.Remove(l.file.Name())
	_ = l.file.Close() // drops the flock
	l.file = nil
}

// Leases lists every recorded lease with its liveness: a reclaimed lease is
// dead; a lease file (checked at the path and identity recorded, whoever
// asks and however they named the database) is alive exactly while its
// flock is held; otherwise a lease is alive while its heartbeat is younger
// than the TTL.
func (s *Store) Leases(ctx context.Context) ([]LeaseInfo, error) {
	rows, err := s.QueryContext(ctx, `SELECT id, pid, host, started_at, heartbeat_at, lock_file, lock_dev, lock_ino, reclaimed_at IS NOT NULL
		FROM leases ORDER BY started_at, id`)
	if err != nil {
		return nil, fmt.Errorf("read leases: %w", err)
	}
	var out []LeaseInfo
	for rows.Next() {
		var (
			li                 LeaseInfo
			started, heartbeat int64
			dev, ino           int64
		)
		if err := rows.Scan(&li.ID, &li.PID, &li.Host, &started, &heartbeat, &li.File, &dev, &ino, &li.Reclaimed); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read leases: %w", err)
		}
		li.StartedAt, li.HeartbeatAt = time.Unix(0, started).UTC(), time.Unix(0, heartbeat).UTC()
		li.dev, li.ino = uint64(dev), uint64(ino)
		out = append(out, li)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, fmt.Errorf("read leases: %w", err)
	}
	if len(out) == 0 {
		return out, nil
	}
	now, err := s.b.Now(ctx)
	if err != nil {
		return nil, fmt.Errorf("read leases: %w", err)
	}
	for i := range out {
		out[i].Alive, out[i].Why = s.liveness(out[i], now)
	}
	return out, nil
}

func (s *Store) liveness(li LeaseInfo, now time.Time) (bool, string) {
	if li.Reclaimed {
		return false, "reclaimed by another process"
	}
	if li.File != "" {
		alive, verified := probeLeaseFile(li.File, fileID{dev: li.dev, ino: li.ino})
		switch {
		case verified && alive:
			return true, "its lease file is locked"
		case verified:
			return false, "its lease file is not locked: the process is gone"
		}
		// The file is missing or replaced: someone tampered with it, so it
		// proves nothing either way; fall back to the heartbeat.
	}
	age := now.Sub(li.HeartbeatAt)
	if age < s.leaseTTL {
		return true, fmt.Sprintf("heartbeat %s ago (TTL %s)", age.Round(time.Millisecond), s.leaseTTL)
	}
	return false, fmt.Sprintf("no heartbeat for %s (TTL %s)", age.Round(time.Second), s.leaseTTL)
}

// ReclaimLease marks a dead lease as taken over, so that its holder, should
// it still be running after all (a stalled replica), finds its lease lost at
// its next heartbeat. It re-checks liveness first and reports whether the
// lease is now reclaimed. A lease with no record counts as reclaimed.
func (s *Store) ReclaimLease(ctx context.Context, id string) (bool, error) {
	reclaimed := false
	err := s.Write(ctx, func(tx *Tx) error {
		var (
			li                 LeaseInfo
			started, heartbeat int64
			dev, ino           int64
		)
		li.ID = id
		err := tx.QueryRowContext(ctx, `SELECT heartbeat_at, started_at, lock_file, lock_dev, lock_ino, reclaimed_at IS NOT NULL FROM leases WHERE id = ?`, id).
			Scan(&heartbeat, &started, &li.File, &dev, &ino, &li.Reclaimed)
		if errors.Is(err, sql.ErrNoRows) {
			reclaimed = true
			return nil
		}
		if err != nil {
			return err
		}
		li.HeartbeatAt, li.dev, li.ino = time.Unix(0, heartbeat), uint64(dev), uint64(ino)
		now, err := s.b.Now(ctx)
		if err != nil {
			return err
		}
		if alive, _ := s.liveness(li, now); alive {
			return nil
		}
		reclaimed = true
		if li.Reclaimed {
			return nil
		}
		_, err = tx.ExecContext(ctx, `UPDATE leases SET reclaimed_at = ? WHERE id = ? AND reclaimed_at IS NULL`, now.UnixNano(), id)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("reclaim lease %s: %w", id, err)
	}
	return reclaimed, nil
}

// DropLease deletes the record of a reclaimed lease and its file once no
// work carries it any more.
func (s *Store) DropLease(ctx context.Context, id string) error {
	var file string
	var dev, ino int64
	err := s.QueryRowContext(ctx, `SELECT lock_file, lock_dev, lock_ino FROM leases WHERE id = ? AND reclaimed_at IS NOT NULL`, id).Scan(&file, &dev, &ino)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("drop lease %s: %w", id, err)
	}
	if _, err := s.ExecContext(ctx, `DELETE FROM leases WHERE id = ? AND reclaimed_at IS NOT NULL`, id); err != nil {
		return fmt.Errorf("drop lease %s: %w", id, err)
	}
	if file != "" && strings.HasSuffix(file, id+".lock") {
		removeDeadLeaseFile(file, fileID{dev: uint64(dev), ino: uint64(ino)})
	}
	return nil
}
