package ledger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/tollgatehq/tollgate/ledger/store"
)

// EventOperationReclaimed records that a process took over an operation whose
// lease was dead.
const EventOperationReclaimed = "operation.reclaimed"

// StartLease registers this process in the database (store.StartLease) and
// makes every operation it creates or moves from now on carry the lease. A
// server starts one before it serves; CLI commands do not.
func (db *DB) StartLease(ctx context.Context) (*store.Lease, error) {
	if db.lease.Load() != nil {
		return nil, errors.New("start lease: this ledger handle already has one")
	}
	l, err := db.st.StartLease(ctx)
	if err != nil {
		return nil, err
	}
	db.lease.Store(l)
	return l, nil
}

// Lease is this process's lease, or nil.
func (db *DB) Lease() *store.Lease { return db.lease.Load() }

// leaseID is the lease operations written now record: nil (SQL NULL, which
// keeps the recorded one) without a lease.
func (db *DB) leaseID() any {
	if l := db.lease.Load(); l != nil {
		return l.ID()
	}
	return nil
}

// LeaseAlive reports whether the lease id belongs to a process that is alive
// (this one included). An unknown id is dead: leases are only ever removed
// once their process is gone and its work taken over.
func (db *DB) LeaseAlive(ctx context.Context, id string) (bool, error) {
	if l := db.lease.Load(); l != nil && l.ID() == id {
		return true, nil
	}
	leases, err := db.st.Leases(ctx)
	if err != nil {
		return false, err
	}
	for _, li := range leases {
		if li.ID == id {
			return li.Alive, nil
		}
	}
	return false, nil
}

// RecoveryReport is what Reclaim took over from processes that are gone.
type RecoveryReport struct {
	Leases   []string    `json:"leases"`   // the dead leases still recorded: clean up after them, then DropLeases
	Released []Operation `json:"released"` // planned/authorized/reserved ops now failed (interrupted), holds released
	InDoubt  []Operation `json:"in_doubt"` // were executing (now in_doubt) or in_doubt: ask Cloudflare, then Settle or Release
	Approved []Operation `json:"approved"` // approved, maybe started: ask Cloudflare first, then execute or settle
	Awaiting []Operation `json:"awaiting"` // still waiting for a human; now this process's to follow
}

// liveStates are the states a dead process's operation can be left in.
var liveStates = []State{StatePlanned, StateAuthorized, StateReserved, StateAwaitingApproval, StateApproved, StateExecuting, StateInDoubt}

// Reclaim takes over the work of processes that are gone: every non-terminal
// operation whose lease is dead (or that has none) becomes this process's
// (its lease must have been started), and:
//   - planned, authorized and reserved ones never reached Cloudflare: they
//     move to failed (code interrupted) and their holds are released;
//   - executing ones may or may not have reached Cloudflare: they move to
//     in_doubt, for the caller to reconcile;
//   - approved ones are returned for the caller to ask Cloudflare whether they
//     already happened before executing them; in_doubt and awaiting_approval
//     ones are returned as they are.
//
// An operation whose lease is alive is never touched, whoever started it and
// however it named the database. Each operation moves in its own transaction,
// re-checked against the dead lease it was seen with, so two processes
// reclaiming at once take each operation once. Dead leases without work left
// are reported, for the caller to clean up after and drop (DropLeases).
func (db *DB) Reclaim(ctx context.Context) (RecoveryReport, error) {
	var rep RecoveryReport
	own := db.lease.Load()
	if own == nil {
		return rep, errors.New("reclaim: this process has no lease (StartLease first)")
	}
	leases, err := db.st.Leases(ctx)
	if err != nil {
		return rep, fmt.Errorf("reclaim: %w", err)
	}
	alive := map[string]bool{own.ID(): true}
	for _, li := range leases {
		if li.Alive {
			alive[li.ID] = true
		}
	}
	args := make([]any, len(liveStates))
	for i, s := range liveStates {
		args[i] = s
	}
	type candidate struct{ id, lease string }
	var cands []candidate
	rows, err := db.st.QueryContext(ctx, `SELECT id, COALESCE(lease_id, '') FROM operations WHERE state IN (`+store.Placeholders(len(liveStates))+`) ORDER BY seq`, args...)
	if err != nil {
		return rep, fmt.Errorf("reclaim: %w", err)
	}
	for rows.Next() {
		var c candidate
		if err := rows.Scan(&c.id, &c.lease); err != nil {
			rows.Close()
			return rep, fmt.Errorf("reclaim: %w", err)
		}
		if !alive[c.lease] {
			cands = append(cands, c)
		}
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return rep, fmt.Errorf("reclaim: %w", err)
	}

	dead := map[string]bool{} // leases confirmed dead (and marked reclaimed) in this pass
	for _, c := range cands {
		if c.lease != "" {
			ok, seen := dead[c.lease]
			if !seen {
				if ok, err = db.st.ReclaimLease(ctx, c.lease); err != nil {
					return rep, fmt.Errorf("reclaim: %w", err)
				}
				dead[c.lease] = ok
				if ok {
					rep.Leases = append(rep.Leases, c.lease)
				}
			}
			if !ok {
				continue // alive after all
			}
		}
		op, err := db.reclaimOne(ctx, c.id, c.lease, own.ID())
		if errors.Is(err, errSkip) {
			continue
		}
		if err != nil {
			return rep, fmt.Errorf("reclaim %s: %w", c.id, err)
		}
		switch op.State {
		case StateFailed:
			rep.Released = append(rep.Released, op)
		case StateInDoubt:
			rep.InDoubt = append(rep.InDoubt, op)
		case StateApproved:
			rep.Approved = append(rep.Approved, op)
		case StateAwaitingApproval:
			rep.Awaiting = append(rep.Awaiting, op)
		}
	}
	for _, li := range leases {
		if !li.Alive && li.ID != own.ID() && !slices.Contains(rep.Leases, li.ID) {
			rep.Leases = append(rep.Leases, li.ID)
		}
	}
	if len(rep.Leases) > 0 || len(cands) > 0 {
		db.log.InfoContext(ctx, "reclaimed the work of stopped processes", slog.Any("leases", rep.Leases),
			slog.Int("released", len(rep.Released)), slog.Int("in_doubt", len(rep.InDoubt)),
			slog.Int("approved", len(rep.Approved)), slog.Int("awaiting", len(rep.Awaiting)))
	}
	return rep, nil
}

var errSkip = errors.New("skip")

// reclaimOne takes one operation over from the dead lease it was seen with.
func (db *DB) reclaimOne(ctx context.Context, id, deadLease, mine string) (Operation, error) {
	var op Operation
	err := db.st.Write(ctx, func(tx *store.Tx) error {
		cur, err := getOperation(ctx, tx, id)
		if err != nil {
			return err
		}
		// Re-check inside the lock: another process may have taken it over or
		// moved it on.
		if cur.LeaseID != deadLease || cur.State.Terminal() {
			return errSkip
		}
		ev := NewEvent(EventOperationReclaimed, ActorSystem, id, map[string]any{
			"from_lease": deadLease, "lease": mine, "state": cur.State,
		})
		switch cur.State {
		case StatePlanned, StateAuthorized, StateReserved:
			op, err = db.releaseTx(ctx, tx, id, nil, StateFailed, "interrupted",
				fmt.Sprintf("the tollgate process running the operation stopped while it was %s, before anything reached Cloudflare; nothing was charged, retry the call", cur.State),
				ActorSystem, []Event{ev})
		case StateExecuting:
			op, err = db.applyTransition(ctx, tx, cur, StateInDoubt, TransitionOpts{
				ErrorCode: "interrupted",
				Error:     "the tollgate process executing the operation stopped; the result is being reconciled with Cloudflare",
			}, []Event{ev})
		default: // awaiting_approval, approved, in_doubt: same state, new owner
			op, err = scanOperation(tx.QueryRowContext(ctx, `UPDATE operations SET lease_id = ? WHERE id = ? RETURNING `+opColumns, mine, id))
			if err == nil {
				err = db.appendTx(ctx, tx, ev)
			}
		}
		return err
	})
	return op, err
}

// DropLeases removes the records of dead leases (from RecoveryReport.Leases)
// that no non-terminal operation carries any more. The caller drops them
// once it has cleaned up after them (their Cloudflare tokens): until then
// every Reclaim reports them again.
func (db *DB) DropLeases(ctx context.Context, leases []string) error {
	for _, id := range leases {
		if own := db.lease.Load(); own != nil && own.ID() == id {
			continue
		}
		if _, err := db.dropIfIdle(ctx, id); err != nil {
			return fmt.Errorf("drop lease %s: %w", id, err)
		}
	}
	return nil
}

// dropIfIdle removes a dead lease once no non-terminal operation carries it,
// and reports whether it did.
func (db *DB) dropIfIdle(ctx context.Context, lease string) (bool, error) {
	args := []any{lease}
	for _, s := range liveStates {
		args = append(args, s)
	}
	var n int
	if err := db.st.QueryRowContext(ctx, `SELECT COUNT(*) FROM operations WHERE lease_id = ? AND state IN (`+store.Placeholders(len(liveStates))+`)`, args...).Scan(&n); err != nil {
		return false, err
	}
	if n > 0 {
		return false, nil
	}
	if ok, err := db.st.ReclaimLease(ctx, lease); err != nil || !ok {
		return false, err
	}
	return true, db.st.DropLease(ctx, lease)
}
