package store

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func leaseOf(t *testing.T, s *Store, id string) LeaseInfo {
	t.Helper()
	leases, err := s.Leases(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, li := range leases {
		if li.ID == id {
			return li
		}
	}
	t.Fatalf("lease %s not recorded: %+v", id, leases)
	return LeaseInfo{}
}

// TestLeaseFileDecidesLiveness: a lease is alive while its file is locked,
// seen from a process that named the database through a symlink, and dead
// the moment the lock goes. A lease file removed by someone else proves
// nothing: the heartbeat decides.
func TestLeaseFileDecidesLiveness(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "tollgate.db")
	a := openAt(t, path)
	sym := filepath.Join(dir, "elsewhere.db")
	must(t, os.Symlink(path, sym))
	b := openAt(t, sym)

	la, err := a.StartLease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	li := leaseOf(t, b, la.ID())
	if !li.Alive || !strings.Contains(li.Why, "locked") || li.PID != os.Getpid() || !filepath.IsAbs(li.File) {
		t.Fatalf("live lease seen as %+v", li)
	}
	if ok, err := b.ReclaimLease(ctx, la.ID()); err != nil || ok {
		t.Fatalf("reclaim of a live lease = %v, %v", ok, err)
	}

	// Someone deletes the lease file: the process is still alive and its
	// heartbeat is fresh, so the lease is too.
	must(t, os.Remove(li.File))
	if li := leaseOf(t, b, la.ID()); !li.Alive || !strings.Contains(li.Why, "heartbeat") {
		t.Fatalf("lease with its file removed: %+v", li)
	}
	la.stop()
	<-la.done
	_ = la.file.Close()

	// A process whose lock is gone is dead at once (a SIGKILL drops it the
	// same way), whatever its heartbeat says.
	lb, err := b.StartLease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = lb.file.Close()
	if li := leaseOf(t, a, lb.ID()); li.Alive || !strings.Contains(li.Why, "not locked") {
		t.Fatalf("lease whose lock is gone: %+v", li)
	}
	if ok, err := a.ReclaimLease(ctx, lb.ID()); err != nil || !ok {
		t.Fatalf("reclaim of a dead lease = %v, %v", ok, err)
	}
	if li := leaseOf(t, a, lb.ID()); li.Alive || !li.Reclaimed {
		t.Fatalf("reclaimed lease: %+v", li)
	}
	must(t, a.DropLease(ctx, lb.ID()))
	if leases, _ := a.Leases(ctx); len(leases) != 1 || leases[0].ID != la.ID() {
		t.Fatalf("after drop: %+v", leases)
	}
}

// heartbeatOnly is a backend whose leases live by heartbeat alone, on a
// clock the test moves: PostgreSQL's kind of lease, on a SQLite file.
type heartbeatOnly struct {
	Backend
	mu  sync.Mutex
	now time.Time
}

func (h *heartbeatOnly) LeaseDir() string { return "" }
func (h *heartbeatOnly) Now(context.Context) (time.Time, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.now, nil
}
func (h *heartbeatOnly) advance(d time.Duration) {
	h.mu.Lock()
	h.now = h.now.Add(d)
	h.mu.Unlock()
}

// TestHeartbeatLeaseLostWhenReclaimed: without a lease file a lease dies when
// its heartbeat is older than the TTL; the process that reclaims it marks it,
// and the holder, should it still run (a stalled replica), learns at its next
// heartbeat that it lost the lease.
func TestHeartbeatLeaseLostWhenReclaimed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "tollgate.db")
	sb, err := OpenSQLite(ctx, path, 2)
	if err != nil {
		t.Fatal(err)
	}
	hb := &heartbeatOnly{Backend: sb, now: time.Now()}
	s, err := New(ctx, hb, WithLogger(quietLog), WithLeaseTTL(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	l, err := s.StartLease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if li := leaseOf(t, s, l.ID()); !li.Alive || li.File != "" {
		t.Fatalf("fresh heartbeat lease: %+v", li)
	}
	// The holder stalls (no heartbeat lands) while the clock runs past the TTL.
	l.stop()
	<-l.done
	hb.advance(2 * time.Second)
	if li := leaseOf(t, s, l.ID()); li.Alive || !strings.Contains(li.Why, "no heartbeat") {
		t.Fatalf("stale lease: %+v", li)
	}
	if ok, err := s.ReclaimLease(ctx, l.ID()); err != nil || !ok {
		t.Fatalf("reclaim = %v, %v", ok, err)
	}
	// The holder wakes up and heartbeats again: it finds its lease gone.
	l.done = make(chan struct{})
	hbCtx, stop := context.WithCancel(ctx)
	defer stop()
	go l.heartbeat(hbCtx)
	select {
	case <-l.Lost():
	case <-time.After(30 * time.Second):
		t.Fatal("a reclaimed lease was not reported lost")
	}
}
