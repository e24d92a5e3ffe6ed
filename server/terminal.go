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
//
// The process that asked for an approval prints its decision however the
// decision arrived: a vote in another process (the CLI, the console or Slack
// on another replica) is acted on by whichever process delivers it, so the
// asking process follows the operation (Pipeline.followDecision) and prints
// the line too, once: announced remembers which decisions it printed.
type terminal struct {
	mu        sync.Mutex
	w         io.Writer
	console   string // the console's base URL, "" without one
	now       func() time.Time
	announced map[string]*announcement // by operation id
}

// announcement is an approval this process asked for: printed says whether
// its decision line was printed (by the delivering onDecided or by the
// follower, whichever came first), at when.
type announcement struct {
	printed bool
	at      time.Time
}

// announcedFor is how long a printed decision is remembered: long past the
// moment both the follower and this process's own onDecided have run (they
// run as the operation leaves awaiting_approval).
const announcedFor = 10 * time.Minute

func newTerminal(w io.Writer, console string, now func() time.Time) *terminal {
	if w == nil {
		return nil
	}
	return &terminal{w: w, console: console, now: now, announced: map[string]*announcement{}}
}

// announce records that this process asks for the approval of operation
// opID (before the request exists, so a decision that comes at once is
// already printed once), and forgets decisions printed long ago.
func (t *terminal) announce(opID string) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	for id, a := range t.announced {
		if a.printed && now.Sub(a.at) > announcedFor {
			delete(t.announced, id)
		}
	}
	t.announced[opID] = &announcement{}
}

// forget drops an announcement whose request was never made, or whose
// follower stopped before a decision.
func (t *terminal) forget(opID string) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if a := t.announced[opID]; a != nil && !a.printed {
		delete(t.announced, opID)
	}
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

// decided: approved, denied, expired or withdrawn. A decision on an
// approval this process announced is printed once, by whichever of its
// deliverer and its follower comes first.
func (t *terminal) decided(r approvals.Request) {
	if t == nil {
		return
	}
	t.mu.Lock()
	if a := t.announced[r.OperationID]; a != nil {
		if a.printed {
			t.mu.Unlock()
			return
		}
		a.printed, a.at = true, t.now()
	}
	t.mu.Unlock()
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
