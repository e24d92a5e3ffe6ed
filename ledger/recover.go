package ledger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/tollgatehq/tollgate/ledger/store"
)

// RecoveryReport is what Recover did and what the server must still reconcile.
type RecoveryReport struct {
	Released []Operation `json:"released"` // stale planned/authorized/reserved ops now failed (interrupted)
	InDoubt  []Operation `json:"in_doubt"` // every in_doubt op: ask Cloudflare, then Settle or Release
	Approved []Operation `json:"approved"` // every approved op: execute it (or release it)
}

// Recover runs on server start, after a crash or a clean stop alike:
//   - planned, authorized and reserved operations not updated for staleAfter never
//     reached Cloudflare: they move to failed (code interrupted) and their holds
//     are released;
//   - every executing operation may or may not have reached Cloudflare: it moves to
//     in_doubt (audited) for the server to reconcile;
//   - awaiting_approval operations are left alone (approvals expire them).
//
// It returns the released operations, all in_doubt ones and all approved ones.
// Each operation moves in its own transaction with its state re-checked, so a
// concurrent CLI command cannot be overwritten. Only one server may run Recover on
// a file: a second server's executing operations would be marked in_doubt.
func (db *DB) Recover(ctx context.Context, staleAfter time.Duration) (RecoveryReport, error) {
	if staleAfter < 0 {
		return RecoveryReport{}, fmt.Errorf("recover: staleAfter %s must not be negative", staleAfter)
	}
	var rep RecoveryReport
	cutoff := db.now().Add(-staleAfter).UnixNano()
	stale, err := store.Strings(ctx, db.st, `SELECT id FROM operations WHERE state IN (?, ?, ?) AND updated_at <= ? ORDER BY seq`,
		StatePlanned, StateAuthorized, StateReserved, cutoff)
	if err != nil {
		return rep, fmt.Errorf("recover: %w", err)
	}
	for _, id := range stale {
		var op Operation
		err := db.st.Write(ctx, func(tx *store.Tx) error {
			cur, err := getOperation(ctx, tx, id)
			if err != nil {
				return err
			}
			// Re-check inside the lock: another process may have moved it on.
			if (cur.State != StatePlanned && cur.State != StateAuthorized && cur.State != StateReserved) || cur.UpdatedAt.UnixNano() > cutoff {
				return errSkip
			}
			op, err = db.releaseTx(ctx, tx, id, nil, StateFailed, "interrupted",
				fmt.Sprintf("tollgate stopped while the operation was %s, before anything reached Cloudflare; nothing was charged, retry the call", cur.State),
				ActorSystem, nil)
			return err
		})
		if errors.Is(err, errSkip) {
			continue
		}
		if err != nil {
			return rep, fmt.Errorf("recover: release %s: %w", id, err)
		}
		rep.Released = append(rep.Released, op)
	}

	executing, err := store.Strings(ctx, db.st, `SELECT id FROM operations WHERE state = ? ORDER BY seq`, StateExecuting)
	if err != nil {
		return rep, fmt.Errorf("recover: %w", err)
	}
	for _, id := range executing {
		_, err := db.Transition(ctx, id, StateInDoubt, TransitionOpts{
			From:      []State{StateExecuting},
			ErrorCode: "interrupted",
			Error:     "tollgate stopped while executing; the result is being reconciled with Cloudflare",
		})
		if errors.Is(err, ErrStateConflict) {
			continue // finished meanwhile
		}
		if err != nil {
			return rep, fmt.Errorf("recover: %w", err)
		}
	}

	if rep.InDoubt, err = db.operationsInState(ctx, StateInDoubt); err != nil {
		return rep, fmt.Errorf("recover: %w", err)
	}
	if rep.Approved, err = db.operationsInState(ctx, StateApproved); err != nil {
		return rep, fmt.Errorf("recover: %w", err)
	}
	db.log.InfoContext(ctx, "ledger recovered", slog.Int("released", len(rep.Released)),
		slog.Int("in_doubt", len(rep.InDoubt)), slog.Int("approved", len(rep.Approved)))
	return rep, nil
}

var errSkip = errors.New("skip")

func (db *DB) operationsInState(ctx context.Context, s State) ([]Operation, error) {
	rows, err := db.st.QueryContext(ctx, `SELECT `+opColumns+` FROM operations WHERE state = ? ORDER BY seq`, s)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Operation
	for rows.Next() {
		op, err := scanOperation(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, op)
	}
	return out, rows.Err()
}
