package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"time"

	"github.com/tollgatehq/tollgate/ledger/money"
	"github.com/tollgatehq/tollgate/ledger/store"
)

// Budget caps what a scope may spend (settled plus held) in a window.
type Budget struct {
	Scope     Scope       `json:"scope"`
	Window    Window      `json:"window"`
	Limit     money.Money `json:"limit"`
	UpdatedAt time.Time   `json:"updated_at"`
	UpdatedBy string      `json:"updated_by"`
}

// BudgetStatus is a budget in its current period.
type BudgetStatus struct {
	Budget    Budget      `json:"budget"`
	Period    string      `json:"period"` // "2026-11-22", "2026-11" or "total"
	Spent     money.Money `json:"spent"`
	Held      money.Money `json:"held"`
	Remaining money.Money `json:"remaining"` // limit - spent - held, never below zero
	ResetsAt  *time.Time  `json:"resets_at,omitempty"`
}

// VelocityLimit caps how many times a scope may do an action per window.
type VelocityLimit struct {
	Scope  Scope  `json:"scope"`
	Action string `json:"action"` // the caller's name for what is counted (tollgate: a tool's name)
	Window Window `json:"window"` // day | month
	Max    int    `json:"max"`
}

// LimitStatus is a velocity limit in its current period.
type LimitStatus struct {
	Limit    VelocityLimit `json:"limit"`
	Period   string        `json:"period"`
	Count    int           `json:"count"` // reservations of the action not released
	ResetsAt time.Time     `json:"resets_at"`
}

func checkActor(actor string) string {
	if actor == "" {
		return ActorSystem
	}
	return actor
}

// SetBudget creates or replaces the budget for (b.Scope, b.Window), audited as
// "budget.set" with the previous limit if there was one.
func (db *DB) SetBudget(ctx context.Context, b Budget, actor string) error {
	if _, err := ParseScope(string(b.Scope)); err != nil {
		return fmt.Errorf("set budget: %w", err)
	}
	if _, err := ParseWindow(string(b.Window)); err != nil {
		return fmt.Errorf("set budget: %w", err)
	}
	if err := money.CheckAmount("budget limit", b.Limit); err != nil {
		return fmt.Errorf("set budget: %w", err)
	}
	actor = checkActor(actor)
	err := db.write(ctx, func(tx *store.Tx) error {
		data := map[string]any{"scope": b.Scope, "window": b.Window, "limit": b.Limit, "limit_text": b.Limit.String()}
		var prevMicros int64
		var prevCur string
		err := tx.QueryRowContext(ctx, `SELECT limit_micros, currency FROM budgets WHERE scope = ? AND win = ?`, b.Scope, b.Window).Scan(&prevMicros, &prevCur)
		switch {
		case err == nil:
			data["previous"] = money.Money{Micros: prevMicros, Currency: prevCur}
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("read budget: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO budgets (scope, win, currency, limit_micros, updated_at, updated_by) VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (scope, win) DO UPDATE SET currency = excluded.currency, limit_micros = excluded.limit_micros,
			updated_at = excluded.updated_at, updated_by = excluded.updated_by`,
			b.Scope, b.Window, b.Limit.Currency, b.Limit.Micros, db.now().UnixNano(), actor); err != nil {
			return fmt.Errorf("write budget: %w", err)
		}
		return db.appendTx(ctx, tx, NewEvent(EventBudgetSet, actor, "", data))
	})
	if err != nil {
		return fmt.Errorf("set budget %s (%s): %w", b.Scope, b.Window, err)
	}
	return nil
}

// DeleteBudget removes a budget, audited as "budget.deleted". ErrNotFound if none.
func (db *DB) DeleteBudget(ctx context.Context, s Scope, w Window, actor string) error {
	actor = checkActor(actor)
	err := db.write(ctx, func(tx *store.Tx) error {
		var micros int64
		var cur string
		err := tx.QueryRowContext(ctx, `DELETE FROM budgets WHERE scope = ? AND win = ? RETURNING limit_micros, currency`, s, w).Scan(&micros, &cur)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("no budget for %s (%s): %w", quoteInput(string(s)), quoteInput(string(w)), ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("delete budget: %w", err)
		}
		return db.appendTx(ctx, tx, NewEvent(EventBudgetDeleted, actor, "", map[string]any{
			"scope": s, "window": w, "limit": money.Money{Micros: micros, Currency: cur},
		}))
	})
	if err != nil {
		return fmt.Errorf("delete budget: %w", err)
	}
	return nil
}

// Budgets lists every budget ordered by scope and window.
func (db *DB) Budgets(ctx context.Context) ([]Budget, error) {
	rows, err := db.st.QueryContext(ctx, `SELECT scope, win, currency, limit_micros, updated_at, updated_by FROM budgets`)
	if err != nil {
		return nil, fmt.Errorf("list budgets: %w", err)
	}
	defer rows.Close()
	var out []Budget
	for rows.Next() {
		var b Budget
		var at int64
		if err := rows.Scan(&b.Scope, &b.Window, &b.Limit.Currency, &b.Limit.Micros, &at, &b.UpdatedBy); err != nil {
			return nil, fmt.Errorf("list budgets: %w", err)
		}
		b.UpdatedAt = time.Unix(0, at).UTC()
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list budgets: %w", err)
	}
	sort.SliceStable(out, func(i, j int) bool { return budgetLess(out[i], out[j]) })
	return out, nil
}

// budgetLess orders budgets agent, team, global, then by name and window.
func budgetLess(a, b Budget) bool {
	if ra, rb := scopeRank(a.Scope), scopeRank(b.Scope); ra != rb {
		return ra < rb
	}
	if a.Scope != b.Scope {
		return a.Scope < b.Scope
	}
	return windowRank(a.Window) < windowRank(b.Window)
}

// BudgetStatuses reports the budgets of scopes (all budgets when none are given) in
// their current periods, from the running totals.
func (db *DB) BudgetStatuses(ctx context.Context, scopes ...Scope) ([]BudgetStatus, error) {
	var out []BudgetStatus
	err := db.st.Read(ctx, func(tx *store.Tx) error {
		var err error
		out, err = budgetStatuses(ctx, tx, db.now(), scopes)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("budget statuses: %w", err)
	}
	return out, nil
}

// budgetStatuses reads budgets and their current-period totals in one query: the
// cost is one index probe per budget, whatever the size of the history.
func budgetStatuses(ctx context.Context, q store.Queryer, now time.Time, scopes []Scope) ([]BudgetStatus, error) {
	day, dayReset := period(WindowDay, now)
	month, monthReset := period(WindowMonth, now)
	query := `SELECT b.scope, b.win, b.currency, b.limit_micros, b.updated_at, b.updated_by,
		COALESCE(t.spent_micros, 0), COALESCE(t.held_micros, 0)
		FROM budgets b LEFT JOIN spend_totals t
		ON t.scope = b.scope AND t.win = b.win AND t.currency = b.currency
		AND t.period = CASE b.win WHEN 'day' THEN ? WHEN 'month' THEN ? ELSE 'total' END`
	args := []any{day, month}
	if len(scopes) > 0 {
		query += ` WHERE b.scope IN (` + store.Placeholders(len(scopes)) + `)`
		for _, s := range scopes {
			args = append(args, s)
		}
	}
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []BudgetStatus
	for rows.Next() {
		var st BudgetStatus
		var at, spent, held int64
		b := &st.Budget
		if err := rows.Scan(&b.Scope, &b.Window, &b.Limit.Currency, &b.Limit.Micros, &at, &b.UpdatedBy, &spent, &held); err != nil {
			return nil, err
		}
		b.UpdatedAt = time.Unix(0, at).UTC()
		cur := b.Limit.Currency
		st.Spent = money.Money{Micros: spent, Currency: cur}
		st.Held = money.Money{Micros: held, Currency: cur}
		st.Remaining = money.Money{Micros: remaining(b.Limit.Micros, spent, held), Currency: cur}
		switch b.Window {
		case WindowDay:
			st.Period, st.ResetsAt = day, dayReset
		case WindowMonth:
			st.Period, st.ResetsAt = month, monthReset
		default:
			st.Period = "total"
		}
		out = append(out, st)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	sort.SliceStable(out, func(i, j int) bool { return budgetLess(out[i].Budget, out[j].Budget) })
	return out, nil
}

// remaining is limit - spent - held floored at zero, without overflowing.
func remaining(limit, spent, held int64) int64 {
	r := limit - spent // both non-negative: cannot overflow
	if r <= 0 || held >= r {
		return 0
	}
	return r - held
}

var actionRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)

// checkLimitAction checks an action's syntax only: which actions exist is
// the caller's to say (tollgate's tool inventory), not the ledger's.
func checkLimitAction(a string) error {
	if !actionRE.MatchString(a) {
		return fmt.Errorf("action %s must be a lower-case identifier (a letter, then letters, digits or _; at most 64)", quoteInput(a))
	}
	return nil
}

// SetLimit creates or replaces a velocity limit, audited as "limit.set".
func (db *DB) SetLimit(ctx context.Context, l VelocityLimit, actor string) error {
	if _, err := ParseScope(string(l.Scope)); err != nil {
		return fmt.Errorf("set limit: %w", err)
	}
	if err := checkLimitAction(l.Action); err != nil {
		return fmt.Errorf("set limit: %w", err)
	}
	if l.Window != WindowDay && l.Window != WindowMonth {
		return fmt.Errorf("set limit: window %s is not valid for a velocity limit; use day or month", quoteInput(string(l.Window)))
	}
	if l.Max < 0 {
		return fmt.Errorf("set limit: max %d must be zero (forbid the action) or more", l.Max)
	}
	actor = checkActor(actor)
	err := db.write(ctx, func(tx *store.Tx) error {
		data := map[string]any{"scope": l.Scope, "action": l.Action, "window": l.Window, "max": l.Max}
		var prev int
		err := tx.QueryRowContext(ctx, `SELECT max_count FROM velocity_limits WHERE scope = ? AND action = ? AND win = ?`, l.Scope, l.Action, l.Window).Scan(&prev)
		switch {
		case err == nil:
			data["previous"] = prev
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("read limit: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO velocity_limits (scope, action, win, max_count, updated_at, updated_by) VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (scope, action, win) DO UPDATE SET max_count = excluded.max_count, updated_at = excluded.updated_at, updated_by = excluded.updated_by`,
			l.Scope, l.Action, l.Window, l.Max, db.now().UnixNano(), actor); err != nil {
			return fmt.Errorf("write limit: %w", err)
		}
		return db.appendTx(ctx, tx, NewEvent(EventLimitSet, actor, "", data))
	})
	if err != nil {
		return fmt.Errorf("set limit %s %s (%s): %w", l.Scope, l.Action, l.Window, err)
	}
	return nil
}

// DeleteLimit removes a velocity limit, audited as "limit.deleted". ErrNotFound if none.
func (db *DB) DeleteLimit(ctx context.Context, s Scope, action string, w Window, actor string) error {
	actor = checkActor(actor)
	err := db.write(ctx, func(tx *store.Tx) error {
		var prev int
		err := tx.QueryRowContext(ctx, `DELETE FROM velocity_limits WHERE scope = ? AND action = ? AND win = ? RETURNING max_count`, s, action, w).Scan(&prev)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("no limit for %s %s (%s): %w", quoteInput(string(s)), quoteInput(action), quoteInput(string(w)), ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("delete limit: %w", err)
		}
		return db.appendTx(ctx, tx, NewEvent(EventLimitDeleted, actor, "", map[string]any{"scope": s, "action": action, "window": w, "max": prev}))
	})
	if err != nil {
		return fmt.Errorf("delete limit: %w", err)
	}
	return nil
}

// Limits lists every velocity limit.
func (db *DB) Limits(ctx context.Context) ([]VelocityLimit, error) {
	rows, err := db.st.QueryContext(ctx, `SELECT scope, action, win, max_count FROM velocity_limits`)
	if err != nil {
		return nil, fmt.Errorf("list limits: %w", err)
	}
	defer rows.Close()
	var out []VelocityLimit
	for rows.Next() {
		var l VelocityLimit
		if err := rows.Scan(&l.Scope, &l.Action, &l.Window, &l.Max); err != nil {
			return nil, fmt.Errorf("list limits: %w", err)
		}
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list limits: %w", err)
	}
	sortLimits(out)
	return out, nil
}

func sortLimits(l []VelocityLimit) {
	sort.SliceStable(l, func(i, j int) bool { return limitLess(l[i], l[j]) })
}

// limitLess orders limits agent, team, global, then by name, action and window.
func limitLess(a, b VelocityLimit) bool {
	if ra, rb := scopeRank(a.Scope), scopeRank(b.Scope); ra != rb {
		return ra < rb
	}
	if a.Scope != b.Scope {
		return a.Scope < b.Scope
	}
	if a.Action != b.Action {
		return a.Action < b.Action
	}
	return windowRank(a.Window) < windowRank(b.Window)
}

// LimitStatuses reports the velocity limits for action ("" for every action) of
// scopes (all scopes when none are given) in their current periods.
func (db *DB) LimitStatuses(ctx context.Context, action string, scopes ...Scope) ([]LimitStatus, error) {
	var out []LimitStatus
	err := db.st.Read(ctx, func(tx *store.Tx) error {
		var err error
		out, err = limitStatuses(ctx, tx, db.now(), action, scopes)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("limit statuses: %w", err)
	}
	return out, nil
}

func limitStatuses(ctx context.Context, q store.Queryer, now time.Time, action string, scopes []Scope) ([]LimitStatus, error) {
	day, dayReset := period(WindowDay, now)
	month, monthReset := period(WindowMonth, now)
	query := `SELECT l.scope, l.action, l.win, l.max_count, COALESCE(v.count, 0)
		FROM velocity_limits l LEFT JOIN velocity_totals v
		ON v.scope = l.scope AND v.action = l.action AND v.win = l.win
		AND v.period = CASE l.win WHEN 'day' THEN ? ELSE ? END
		WHERE 1 = 1`
	args := []any{day, month}
	if action != "" {
		query += ` AND l.action = ?`
		args = append(args, action)
	}
	if len(scopes) > 0 {
		query += ` AND l.scope IN (` + store.Placeholders(len(scopes)) + `)`
		for _, s := range scopes {
			args = append(args, s)
		}
	}
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []LimitStatus
	for rows.Next() {
		var st LimitStatus
		if err := rows.Scan(&st.Limit.Scope, &st.Limit.Action, &st.Limit.Window, &st.Limit.Max, &st.Count); err != nil {
			return nil, err
		}
		if st.Limit.Window == WindowDay {
			st.Period, st.ResetsAt = day, *dayReset
		} else {
			st.Period, st.ResetsAt = month, *monthReset
		}
		out = append(out, st)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	sort.SliceStable(out, func(i, j int) bool { return limitLess(out[i].Limit, out[j].Limit) })
	return out, nil
}
