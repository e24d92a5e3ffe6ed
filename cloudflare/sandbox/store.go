package sandbox

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"
)

// The state file is shared: every Sandbox opened on it (in this process or
// in another tollgate process on the same database) works on the same
// state. The rules that keep them from overwriting each other:
//
//   - every request first checks whether the file changed since this
//     sandbox last read or wrote it (one stat) and re-reads it if so;
//   - every change is a read-modify-write under an exclusive flock on
//     "<file>.lock": re-read if changed, apply, write (temp file, fsync,
//     rename), unlock, so no two writers ever start from the same snapshot;
//   - changes nothing is lost by forgetting (minting and deleting the
//     short-lived per-operation tokens) are applied in memory at once and
//     written with the next durable change or after FlushInterval, as one
//     write. Until then they live in an ordered list that is replayed onto
//     whatever the file holds when it is re-read, so another writer never
//     erases them. A crash forgets them: a forgotten mint is a token that
//     never existed, a forgotten delete a leftover that Sweep deletes.
//   - everything else (registrations and what they charge, workflows,
//     zones, scripts, versions, deployments, custom domains, prices, a
//     rolled token value) is durable before the answer is sent.

// DefaultFlushInterval is how long lazy changes (token mints and deletes)
// may wait in memory before they are written.
const DefaultFlushInterval = 200 * time.Millisecond

// maxPending writes lazy changes at once when this many are waiting.
const maxPending = 256

// lazyOp is a change that may wait for the next write. It must be safe to
// apply again onto a state re-read from the file (it is replayed there).
type lazyOp func(*state)

// syncLocked re-reads the state file when another writer changed it, then
// replays the lazy changes not yet written. Callers hold s.mu.
func (s *Sandbox) syncLocked() error {
	if s.stateFn == "" {
		return nil
	}
	st, err := statFile(s.stateFn)
	if err == nil && st == s.stamp {
		return nil
	}
	return s.reloadLocked()
}

// reloadLocked reads the state file and makes it the sandbox's state, with
// the pending lazy changes applied on top. Callers hold s.mu.
func (s *Sandbox) reloadLocked() error {
	f, err := os.Open(s.stateFn)
	if err != nil {
		return fmt.Errorf("read sandbox state: %w", err)
	}
	defer f.Close()
	stamp, err := statOpen(f)
	if err != nil {
		return fmt.Errorf("read sandbox state: %w", err)
	}
	st, err := decodeState(s.stateFn, f)
	if err != nil {
		return err
	}
	for _, op := range s.pending {
		op(st)
	}
	s.st = st
	s.stamp = stamp
	s.reindexLocked()
	return nil
}

// reindexLocked rebuilds the token-value index from the state.
func (s *Sandbox) reindexLocked() {
	s.byHash = make(map[string]string, len(s.st.Tokens))
	for id, t := range s.st.Tokens {
		s.byHash[t.ValueSHA256] = id
	}
	// The parent token's hash is derived, not trusted from the file.
	if p := s.st.Tokens[s.st.ParentTokenID]; p != nil && s.st.ParentToken != "" {
		delete(s.byHash, p.ValueSHA256)
		p.ValueSHA256 = hashToken(s.st.ParentToken)
		s.byHash[p.ValueSHA256] = p.ID
	}
}

// commitLocked applies fn to the current state and makes the result durable
// before returning: under the file lock, after re-reading what other
// writers wrote, together with every pending lazy change. fn must leave the
// state untouched when it returns an error. Callers hold s.mu.
func (s *Sandbox) commitLocked(fn func(*state) error) error {
	if s.stateFn == "" {
		return fn(s.st)
	}
	unlock, err := s.lockFile()
	if err != nil {
		return err
	}
	defer unlock()
	if err := s.syncLocked(); err != nil {
		return err
	}
	if err := fn(s.st); err != nil {
		return err
	}
	return s.writeLocked()
}

// lazyLocked applies op now and writes it later (see the rules above).
// Callers hold s.mu.
func (s *Sandbox) lazyLocked(op lazyOp) {
	op(s.st)
	if s.stateFn == "" {
		return
	}
	s.pending = append(s.pending, op)
	if len(s.pending) >= maxPending {
		if err := s.flushLocked(); err != nil {
			s.log.Warn("sandbox: writing token changes failed; retrying later", "err", err)
		}
		return
	}
	if s.flushTimer == nil {
		s.flushTimer = time.AfterFunc(s.flushEvery, func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.flushTimer = nil
			if err := s.flushLocked(); err != nil {
				s.log.Warn("sandbox: writing token changes failed; retrying with the next change", "err", err)
			}
		})
	}
}

// flushLocked writes the pending lazy changes. Callers hold s.mu.
func (s *Sandbox) flushLocked() error {
	if len(s.pending) == 0 {
		return nil
	}
	return s.commitLocked(func(*state) error { return nil })
}

// commitScriptLocked is commitLocked on the Worker named name: fn runs on it,
// and the change is refused with Cloudflare's 404 when there is none.
// Callers hold s.mu.
func (s *Sandbox) commitScriptLocked(name string, fn func(st *state, sc *scriptRec) error) error {
	return s.commitLocked(func(st *state) error {
		sc := st.Scripts[name]
		if sc == nil {
			return failf(http.StatusNotFound, codeWorkerNotFound, msgWorkerNotFound)
		}
		return fn(st, sc)
	})
}

// writeLocked writes the whole state; the pending lazy changes are in it,
// so they are done. Callers hold s.mu and the file lock. A failed write
// leaves the file as it was; the next sync re-reads it, dropping the
// change that could not be written from memory too.
func (s *Sandbox) writeLocked() error {
	stamp, err := saveState(s.stateFn, s.st)
	if err != nil {
		s.stamp = fileStamp{}
		return err
	}
	s.stamp = stamp
	s.pending = nil
	s.writes.Add(1)
	return nil
}

// lockFile takes the exclusive lock on the state's lock file, waiting for
// other writers.
func (s *Sandbox) lockFile() (unlock func(), err error) {
	if s.lockF == nil {
		return nil, errors.New("sandbox state: no lock file open")
	}
	if err := flock(s.lockF); err != nil {
		return nil, fmt.Errorf("lock sandbox state %s: %w", s.lockF.Name(), err)
	}
	return func() { _ = funlock(s.lockF) }, nil
}

// Flush writes the token mints and deletes that are waiting in memory (see
// Options.FlushInterval). Close calls it.
func (s *Sandbox) Flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.flushTimer != nil {
		s.flushTimer.Stop()
		s.flushTimer = nil
	}
	return s.flushLocked()
}

// StateWrites is how many times the state file has been written (each a
// temp file, fsync and rename) by this sandbox since New, the bootstrap
// write included.
func (s *Sandbox) StateWrites() int64 { return s.writes.Load() }
