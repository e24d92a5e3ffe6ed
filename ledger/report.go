package ledger

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/tollgatehq/tollgate/ledger/money"
	"github.com/tollgatehq/tollgate/ledger/store"
)

// SpendTotal is what a scope spent (settled) and holds in one window's
// current period, whether or not a budget exists for it.
type SpendTotal struct {
	Scope  Scope       `json:"scope"`
	Window Window      `json:"window"`
	Period string      `json:"period"` // "2026-11-22", "2026-11" or "total"
	Spent  money.Money `json:"spent"`
	Held   money.Money `json:"held"`
}

// SpendTotals reports, for each scope, its spend and holds today, this month
// and in total, from the running totals every reservation keeps (one row per
// scope, window and currency; a scope that never spent has none).
func (db *DB) SpendTotals(ctx context.Context, scopes ...Scope) ([]SpendTotal, error) {
	if len(scopes) == 0 {
		return nil, nil
	}
	now := db.now()
	day, _ := period(WindowDay, now)
	month, _ := period(WindowMonth, now)
	args := []any{day, month}
	for _, s := range scopes {
		args = append(args, s)
	}
	var out []SpendTotal
	err := db.st.Read(ctx, func(tx *store.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT scope, win, period, currency, spent_micros, held_micros FROM spend_totals
			WHERE ((win = 'day' AND period = ?) OR (win = 'month' AND period = ?) OR win = 'total')
			AND scope IN (`+store.Placeholders(len(scopes))+`)`, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var t SpendTotal
			var cur string
			if err := rows.Scan(&t.Scope, &t.Window, &t.Period, &cur, &t.Spent.Micros, &t.Held.Micros); err != nil {
				return err
			}
			t.Spent.Currency, t.Held.Currency = cur, cur
			out = append(out, t)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("spend totals: %w", err)
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Scope != b.Scope {
			return scopeRank(a.Scope) < scopeRank(b.Scope) || (scopeRank(a.Scope) == scopeRank(b.Scope) && a.Scope < b.Scope)
		}
		if a.Window != b.Window {
			return windowRank(a.Window) < windowRank(b.Window)
		}
		return a.Spent.Currency < b.Spent.Currency
	})
	return out, nil
}

// Spend report groupings.
const (
	ByAgent = "agent"
	ByTeam  = "team"
	ByDay   = "day"
)

// SpendLine is one group of a spend report: what was charged by operations
// settled since the report's start, and what operations reserved since then
// still hold.
type SpendLine struct {
	Key        string      `json:"key"` // agent:NAME, team:NAME or the UTC date
	Spent      money.Money `json:"spent"`
	Held       money.Money `json:"held"`
	Operations int         `json:"operations"` // settled or holding, in the group
}

// SpendReport groups what was charged since since (by settlement time) and
// what is held by reservations made since then, by agent, team or UTC day.
// Each operation counts once: the report reads the total-window rows of the
// scope kind it groups by (the global scope for days). An agent without a
// team is left out of a team report.
func (db *DB) SpendReport(ctx context.Context, since time.Time, by string) ([]SpendLine, error) {
	var scope, key string
	switch by {
	case ByAgent, ByTeam:
		scope, key = "scope LIKE '"+by+":%'", "scope"
	case ByDay:
		// Integer division of UTC nanoseconds gives the day in SQLite and PostgreSQL alike.
		scope, key = "scope = 'global'", "%s / 86400000000000"
	default:
		return nil, fmt.Errorf("spend report by %q: agent, team or day", by)
	}
	lines := map[string]*SpendLine{}
	add := func(key any, cur string, micros int64, held bool, ops int) {
		var k string
		switch v := key.(type) {
		case int64: // a day number
			k = time.Unix(0, v*int64(24*time.Hour)).UTC().Format(time.DateOnly)
		case []byte:
			k = string(v)
		default:
			k = fmt.Sprint(v)
		}
		l := lines[k+"\x00"+cur]
		if l == nil {
			l = &SpendLine{Key: k, Spent: money.Money{Currency: cur}, Held: money.Money{Currency: cur}}
			lines[k+"\x00"+cur] = l
		}
		if held {
			l.Held.Micros += micros
		} else {
			l.Spent.Micros += micros
		}
		l.Operations += ops
	}
	err := db.st.Read(ctx, func(tx *store.Tx) error {
		for _, q := range []struct {
			table, at string
			held      bool
		}{{"charges", "at", false}, {"holds", "created_at", true}} {
			k := key
			if by == ByDay {
				k = fmt.Sprintf(key, q.at)
			}
			rows, err := tx.QueryContext(ctx, `SELECT `+k+`, currency, SUM(amount_micros), COUNT(DISTINCT operation_id) FROM `+q.table+`
				WHERE win = 'total' AND `+scope+` AND `+q.at+` >= ? GROUP BY 1, 2`, since.UnixNano())
			if err != nil {
				return err
			}
			for rows.Next() {
				var k any
				var cur string
				var sum int64
				var n int
				if err := rows.Scan(&k, &cur, &sum, &n); err != nil {
					rows.Close()
					return err
				}
				add(k, cur, sum, q.held, n)
			}
			if err := rows.Close(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("spend report: %w", err)
	}
	out := make([]SpendLine, 0, len(lines))
	for _, l := range lines {
		out = append(out, *l)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Key != out[j].Key {
			return strings.Compare(out[i].Key, out[j].Key) < 0
		}
		return out[i].Spent.Currency < out[j].Spent.Currency
	})
	return out, nil
}
