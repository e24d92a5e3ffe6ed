package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tollgatehq/tollgate/ledger/store"
)

// Freeze stops every spending call of a scope until a human clears it.
type Freeze struct {
	Scope  Scope     `json:"scope"`
	Reason string    `json:"reason"`
	By     string    `json:"by"`
	At     time.Time `json:"at"`
	Auto   bool      `json:"auto"` // set by the auto-freeze after repeated blocks
}

// Freeze freezes spending for scope (GlobalScope is `freeze --all`), audited as
// "freeze.set". Freezing a scope that is already frozen keeps and returns the
// existing freeze unchanged.
//
// Cancelling the scope's pending approvals and releasing their holds is the
// caller's part: list them with ListOperations and Release each.
func (db *DB) Freeze(ctx context.Context, s Scope, reason, by string) (Freeze, error) {
	if _, err := ParseScope(string(s)); err != nil {
		return Freeze{}, fmt.Errorf("freeze: %w", err)
	}
	if strings.TrimSpace(reason) == "" {
		return Freeze{}, fmt.Errorf("freeze %s: a reason is required so the unfreezer knows why", s)
	}
	by = checkActor(by)
	var f Freeze
	err := db.write(ctx, func(tx *store.Tx) error {
		var err error
		f, _, err = db.freezeTx(ctx, tx, Freeze{Scope: s, Reason: reason, By: by, At: db.now()}, "")
		return err
	})
	if err != nil {
		return Freeze{}, fmt.Errorf("freeze %s: %w", s, err)
	}
	return f, nil
}

// freezeTx inserts f unless the scope is already frozen, in which case it returns
// the existing freeze and created == false.
func (db *DB) freezeTx(ctx context.Context, tx *store.Tx, f Freeze, operationID string) (Freeze, bool, error) {
	existing, err := scanFreeze(tx.QueryRowContext(ctx, `SELECT scope, reason, frozen_by, at, auto FROM freezes WHERE scope = ?`, f.Scope))
	switch {
	case err == nil:
		return existing, false, nil
	case !errors.Is(err, sql.ErrNoRows):
		return Freeze{}, false, fmt.Errorf("read freeze: %w", err)
	}
	f.At = time.Unix(0, f.At.UnixNano()).UTC()
	if _, err := tx.ExecContext(ctx, `INSERT INTO freezes (scope, reason, frozen_by, at, auto) VALUES (?, ?, ?, ?, ?)`,
		f.Scope, f.Reason, f.By, f.At.UnixNano(), f.Auto); err != nil {
		return Freeze{}, false, fmt.Errorf("write freeze: %w", err)
	}
	if err := db.appendTx(ctx, tx, NewEvent(EventFreezeSet, f.By, operationID, map[string]any{
		"scope": f.Scope, "reason": f.Reason, "auto": f.Auto,
	})); err != nil {
		return Freeze{}, false, err
	}
	return f, true, nil
}

func scanFreeze(row interface{ Scan(...any) error }) (Freeze, error) {
	var f Freeze
	var at int64
	if err := row.Scan(&f.Scope, &f.Reason, &f.By, &at, &f.Auto); err != nil {
		return Freeze{}, err
	}
	f.At = time.Unix(0, at).UTC()
	return f, nil
}

// Unfreeze clears the freeze on scope, audited as "freeze.cleared". ErrNotFound if
// the scope is not frozen. The auto-freeze counts only blocks after an agent's
// last unfreeze.
func (db *DB) Unfreeze(ctx context.Context, s Scope, by string) error {
	by = checkActor(by)
	err := db.write(ctx, func(tx *store.Tx) error {
		f, err := scanFreeze(tx.QueryRowContext(ctx, `DELETE FROM freezes WHERE scope = ? RETURNING scope, reason, frozen_by, at, auto`, s))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%s is not frozen: %w", quoteInput(string(s)), ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("delete freeze: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO freeze_clears (scope, at) VALUES (?, ?) ON CONFLICT (scope) DO UPDATE SET at = excluded.at`,
			s, db.now().UnixNano()); err != nil {
			return fmt.Errorf("record unfreeze: %w", err)
		}
		return db.appendTx(ctx, tx, NewEvent(EventFreezeCleared, by, "", map[string]any{
			"scope": s, "frozen_reason": f.Reason, "frozen_by": f.By, "frozen_at": f.At, "auto": f.Auto,
		}))
	})
	if err != nil {
		return fmt.Errorf("unfreeze: %w", err)
	}
	return nil
}

// Freezes lists every freeze, oldest first.
func (db *DB) Freezes(ctx context.Context) ([]Freeze, error) {
	rows, err := db.st.QueryContext(ctx, `SELECT scope, reason, frozen_by, at, auto FROM freezes ORDER BY at, scope`)
	if err != nil {
		return nil, fmt.Errorf("list freezes: %w", err)
	}
	defer rows.Close()
	var out []Freeze
	for rows.Next() {
		f, err := scanFreeze(rows)
		if err != nil {
			return nil, fmt.Errorf("list freezes: %w", err)
		}
		out = append(out, f)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list freezes: %w", err)
	}
	return out, nil
}

// FrozenFor returns the freeze that stops agent (in team) from spending — its own,
// then its team's, then the global one — or nil if none applies.
func (db *DB) FrozenFor(ctx context.Context, agent, team string) (*Freeze, error) {
	f, err := frozenFor(ctx, db.st, agent, team)
	if err != nil {
		return nil, fmt.Errorf("frozen for %s: %w", agent, err)
	}
	return f, nil
}

func frozenFor(ctx context.Context, q store.Queryer, agent, team string) (*Freeze, error) {
	scopes := applicableScopes(agent, team)
	args := make([]any, len(scopes))
	for i, s := range scopes {
		args[i] = s
	}
	rows, err := q.QueryContext(ctx, `SELECT scope, reason, frozen_by, at, auto FROM freezes WHERE scope IN (`+store.Placeholders(len(scopes))+`)`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var best *Freeze
	for rows.Next() {
		f, err := scanFreeze(rows)
		if err != nil {
			return nil, err
		}
		if best == nil || scopeRank(f.Scope) < scopeRank(best.Scope) {
			best = &f
		}
	}
	return best, rows.Err()
}
