package ledger

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tollgatehq/tollgate/ledger/store"
)

// spendSnapshotMaxAge bounds how long a snapshot serves, even if no change
// was seen: a change watch that stalls costs freshness for at most this.
const spendSnapshotMaxAge = time.Second

// spendSnapshotMax bounds how many snapshots are kept; past it they are all
// dropped (keys are agents × actions × commitment keys: few in practice).
const spendSnapshotMax = 1024

// spendSnapshots keeps the spend state estimates read (budgets with their
// totals, freezes, velocity counts, whether a commitment is recorded), keyed
// by what was read for, and tagged with the store's generation when the read
// began. The store's generation advances after every committed write that is
// not a pure audit record (this process's) and on every change the store's
// watch sees (any process's), so a snapshot whose generation is still the
// store's is what a fresh read would return; a snapshot is also dropped when
// the day or month changes (periods) and after spendSnapshotMaxAge.
type spendSnapshots struct {
	mu    sync.Mutex
	m     map[spendKey]spendSnapshot
	reads atomic.Uint64 // snapshots read from the database (tests count them)
}

type spendKey struct {
	agent, team, action, commitment string
	hasCommitment                   bool
}

type spendSnapshot struct {
	gen        uint64
	day, month string
	at         time.Time
	state      spendState
}

// evaluate is evaluate for r (no OperationID) from a current snapshot, or
// from a fresh read that becomes the snapshot.
func (c *spendSnapshots) evaluate(ctx context.Context, db *DB, r ReserveRequest) (evaluation, error) {
	key := spendKey{agent: r.Agent, team: r.Team, action: r.Action}
	if r.Commitment != nil {
		key.commitment, key.hasCommitment = r.Commitment.Key, true
	}
	now := db.now()
	day, _ := period(WindowDay, now)
	month, _ := period(WindowMonth, now)
	// The generation is read before the snapshot: a write that commits
	// after it advances it, so a snapshot that might have missed that write
	// is never served.
	gen := db.st.Generation()
	c.mu.Lock()
	s, ok := c.m[key]
	c.mu.Unlock()
	if ok && fresh(s.gen, s.at, gen, now) && s.day == day && s.month == month {
		return s.state.evaluate(r.Action, r.Amount, r.Commitment), nil
	}
	c.reads.Add(1)
	var st spendState
	err := db.st.Read(ctx, func(tx *store.Tx) error {
		var err error
		st, err = readSpendState(ctx, tx, now, r.Agent, r.Team, r.Action, key.commitment, key.hasCommitment)
		return err
	})
	if err != nil {
		return evaluation{}, err
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= spendSnapshotMax {
		c.m = make(map[spendKey]spendSnapshot)
	}
	c.m[key] = spendSnapshot{gen: gen, day: day, month: month, at: now, state: st}
	c.mu.Unlock()
	return st.evaluate(r.Action, r.Amount, r.Commitment), nil
}

// mandateSnapshots keeps the live mandates MandateFor reads, by agent,
// action and currency, under the same rules as spendSnapshots: served while
// the store's generation is the one the read began at, for at most
// spendSnapshotMaxAge; expiry is checked again at every use.
type mandateSnapshots struct {
	mu    sync.Mutex
	m     map[mandateKey]mandateSnapshot
	reads atomic.Uint64 // snapshots read from the database (tests count them)
}

type mandateKey struct{ agent, action, currency string }

type mandateSnapshot struct {
	gen      uint64
	at       time.Time
	mandates []Mandate
}

func (c *mandateSnapshots) get(ctx context.Context, db *DB, key mandateKey, now time.Time) ([]Mandate, error) {
	gen := db.st.Generation() // before the read: see spendSnapshots.evaluate
	c.mu.Lock()
	s, ok := c.m[key]
	c.mu.Unlock()
	if ok && fresh(s.gen, s.at, gen, now) {
		return s.mandates, nil
	}
	c.reads.Add(1)
	ms, err := liveMandates(ctx, db.st, now, key.agent, key.action, key.currency)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= spendSnapshotMax {
		c.m = make(map[mandateKey]mandateSnapshot)
	}
	c.m[key] = mandateSnapshot{gen: gen, at: now, mandates: ms}
	c.mu.Unlock()
	return ms, nil
}

// fresh reports whether a snapshot read at generation snapGen and time at
// still stands at generation gen and time now: nothing it could have missed
// committed, and it is younger than spendSnapshotMaxAge.
func fresh(snapGen uint64, at time.Time, gen uint64, now time.Time) bool {
	return snapGen == gen && !now.Before(at) && now.Sub(at) < spendSnapshotMaxAge
}
