package ledger

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Scope is what a budget, velocity limit or freeze applies to: "agent:<name>",
// "team:<name>" or "global".
type Scope string

// GlobalScope applies to every agent.
const GlobalScope Scope = "global"

// AgentScope is the scope of one agent.
func AgentScope(name string) Scope { return Scope("agent:" + name) }

// TeamScope is the scope of one team.
func TeamScope(name string) Scope { return Scope("team:" + name) }

// Agent returns the agent name of an agent:<name> scope.
func (s Scope) Agent() (string, bool) { return strings.CutPrefix(string(s), "agent:") }

// Team returns the team name of a team:<name> scope.
func (s Scope) Team() (string, bool) { return strings.CutPrefix(string(s), "team:") }

// ParseScope parses "agent:NAME", "team:NAME" or "global" (untrusted: CLI flags,
// config). Names are 1-64 letters, digits, '.', '_' or '-'.
func ParseScope(s string) (Scope, error) {
	if s == string(GlobalScope) {
		return GlobalScope, nil
	}
	kind, name, ok := strings.Cut(s, ":")
	if ok && (kind == "agent" || kind == "team") {
		if err := checkName(kind, name); err != nil {
			return "", fmt.Errorf("scope %s: %w", quoteInput(s), err)
		}
		return Scope(s), nil
	}
	return "", fmt.Errorf("scope %s is not valid; use agent:NAME, team:NAME or global", quoteInput(s))
}

// Window is a budget or limit period: calendar day or month in UTC, or the total
// with no reset.
type Window string

// The windows.
const (
	WindowDay   Window = "day"
	WindowMonth Window = "month"
	WindowTotal Window = "total"
)

// ParseWindow parses "day", "month" or "total".
func ParseWindow(s string) (Window, error) {
	switch w := Window(s); w {
	case WindowDay, WindowMonth, WindowTotal:
		return w, nil
	}
	return "", fmt.Errorf("window %s is not valid; use day, month or total", quoteInput(s))
}

// period names the current period of w at t ("2026-11-22", "2026-11", "total") and
// when it ends (nil for total).
func period(w Window, t time.Time) (string, *time.Time) {
	t = t.UTC()
	y, m, d := t.Date()
	switch w {
	case WindowDay:
		r := time.Date(y, m, d+1, 0, 0, 0, 0, time.UTC)
		return t.Format("2006-01-02"), &r
	case WindowMonth:
		r := time.Date(y, m+1, 1, 0, 0, 0, 0, time.UTC)
		return t.Format("2006-01"), &r
	}
	return "total", nil
}

// applicableScopes are the scopes a call by agent in team spends against, most
// specific first. An agent without a team has no team scope.
func applicableScopes(agent, team string) []Scope {
	s := []Scope{AgentScope(agent)}
	if team != "" {
		s = append(s, TeamScope(team))
	}
	return append(s, GlobalScope)
}

func scopeRank(s Scope) int {
	switch {
	case strings.HasPrefix(string(s), "agent:"):
		return 0
	case strings.HasPrefix(string(s), "team:"):
		return 1
	}
	return 2
}

func windowRank(w Window) int {
	switch w {
	case WindowDay:
		return 0
	case WindowMonth:
		return 1
	}
	return 2
}

// quoteInput quotes untrusted input for an error message, cut to a readable length.
func quoteInput(s string) string {
	const maxLen = 64
	if len(s) > maxLen {
		return strconv.Quote(s[:maxLen]) + "…"
	}
	return strconv.Quote(s)
}
