package server

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/approvals/display"
)

// terminal prints one line per approval requested, decided, withdrawn or
// executed, for whoever watches tollgate serve: what, how much, the short id,
// the command that approves it and the console link. Everything an agent,
// its client or a voter wrote goes through display.Text. A nil terminal (no
// Deps.Terminal) prints nothing.
type terminal struct {
	mu      sync.Mutex
	w       io.Writer
	console string // the console's base URL, "" without one
	now     func() time.Time
}

func newTerminal(w io.Writer, console string, now func() time.Time) *terminal {
	if w == nil {
		return nil
	}
	return &terminal{w: w, console: console, now: now}
}

func (t *terminal) line(format string, args ...any) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	fmt.Fprintf(t.w, t.now().Local().Format("15:04:05")+"  "+format+"\n", args...)
}

func txt(s string) string { return display.Text(s, 160) }

// requested: "approval needed: web-bot asks to register … (12.18 USD), 1 approval, expires 12:45:00 — approve: tollgate approvals approve 3f7k2m1a · console: …".
func (t *terminal) requested(r approvals.Request) {
	if t == nil {
		return
	}
	short := approvals.ShortID(r.ID)
	link := ""
	if t.console != "" {
		link = " · " + t.console + "/console/approvals/" + r.ID
	}
	t.line("approval needed [%s]: %s asks to %s (%s), %s, expires %s — approve: tollgate approvals approve %s%s",
		short, txt(r.Agent), lowerFirst(txt(r.Summary)), txt(r.AmountText), plural(max(r.Quorum, 1), "approval"),
		r.ExpiresAt.Local().Format("15:04:05"), short, link)
}

// decided: approved, denied, expired or withdrawn.
func (t *terminal) decided(r approvals.Request) {
	if t == nil {
		return
	}
	short := approvals.ShortID(r.ID)
	what := lowerFirst(txt(r.Summary))
	switch r.State {
	case approvals.StateApproved:
		t.line("approved [%s] by %s: %s (%s); executing", short, txt(votersOf(r, approvals.OutcomeApprove)), what, txt(r.AmountText))
	case approvals.StateDenied:
		t.line("denied [%s] by %s: %s — %s", short, txt(votersOf(r, approvals.OutcomeDeny)), what, txt(r.DecidedReason))
	case approvals.StateExpired:
		t.line("expired [%s]: %s — nobody decided in time; the hold is released", short, what)
	case approvals.StateCancelled:
		t.line("withdrawn [%s]: %s — %s; the hold is released", short, what, txt(r.DecidedReason))
	}
}

// finished: the execution's outcome.
func (t *terminal) finished(requestID, result string) {
	if t == nil || requestID == "" {
		return
	}
	t.line("done [%s]: %s", approvals.ShortID(requestID), txt(result))
}

func votersOf(r approvals.Request, outcome string) string {
	var names []string
	for _, v := range r.Votes {
		if v.Outcome == outcome {
			names = append(names, v.Approver+" ("+approvals.ViaLabel(v.Via)+")")
		}
	}
	if len(names) == 0 {
		return "nobody"
	}
	return strings.Join(names, ", ")
}

func lowerFirst(s string) string {
	if s == "" {
		return s
	}
	r, n := utf8.DecodeRuneInString(s)
	return string(unicode.ToLower(r)) + s[n:]
}
