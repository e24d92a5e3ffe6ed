//go:build unix

package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// lockLeaseFile creates dir/<id>.lock and takes an exclusive flock on it,
// held for as long as the returned file stays open: the kernel drops it when
// the process dies, however it dies.
func lockLeaseFile(dir, id string) (*os.File, string, fileID, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, "", fileID{}, err
	}
	// Readable by all: another user's tollgate on the same database must be
	// able to test the lock (a test can only make a dead process look alive,
	// never the reverse). Writable by the owner only.
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, "", fileID{}, fmt.Errorf("create lease folder: %w", err)
	}
	path := filepath.Join(abs, id+".lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, "", fileID{}, fmt.Errorf("create lease file: %w", err)
	}
	fail := func(err error) (*os.File, string, fileID, error) {
		_ = os.Remove(path)
		_ = f.Close()
		return nil, "", fileID{}, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return fail(fmt.Errorf("lock lease file %s: %w", path, err))
	}
	host, _ := os.Hostname()
	_, _ = f.WriteString("tollgate lease " + id + " pid " + strconv.Itoa(os.Getpid()) + " host " + host + "\n")
	fi, err := f.Stat()
	if err != nil {
		return fail(fmt.Errorf("lease file %s: %w", path, err))
	}
	return f, path, idOf(fi), nil
}

// probeLeaseFile tests the flock on the file at path. verified is false when
// the file is missing or is not the file recorded (its identity differs):
// then it proves nothing. Otherwise alive reports whether a process holds
// the lock. A shared, non-blocking attempt never disturbs the holder, and two
// processes probing at once do not mistake each other for the holder.
func probeLeaseFile(path string, want fileID) (alive, verified bool) {
	f, err := os.Open(path)
	if err != nil {
		return false, false
	}
	defer f.Close() // releases the probe's own lock, if it got one
	fi, err := f.Stat()
	if err != nil || idOf(fi) != want {
		return false, false
	}
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
	switch {
	case errors.Is(err, syscall.EWOULDBLOCK):
		return true, true
	case err != nil:
		return false, false
	}
	return false, true
}

// removeDeadLeaseFile removes the lease file of a dead process, if it is
// still the recorded file and still unlocked.
func removeDeadLeaseFile(path string, want fileID) {
	if alive, verified := probeLeaseFile(path, want); verified && !alive {
		_ = os.Remove(path)
	}
}
