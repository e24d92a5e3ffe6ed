package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/ledger"
)

// TestTerminalLines: serve's terminal gets one line per approval requested
// (what, cost, short id, the approve command, the console link) and per
// decision and outcome; what the agent or a voter wrote arrives sanitised.
func TestTerminalLines(t *testing.T) {
	t.Parallel()
	term := &syncBuffer{}
	e := newEnv(t, withTerminal(term), withConfig(func(c *Config) { c.Approvals.Wait = 0 }))
	waitFor := func(want string) string {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(term.String(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("the terminal never said %q:\n%s", want, term.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
		return term.String()
	}

	v := opView(t, e.call(webBot, "register_domain", registerArgs("terminal-line.dev")))
	r := e.pendingApproval(v.OperationID)
	short := approvals.ShortID(r.ID)
	out := waitFor("approval needed [" + short + "]")
	for _, want := range []string{
		"web-bot asks to register terminal-line.dev for 1 year", "USD), 1 approval, expires ",
		"approve: tollgate approvals approve " + short, e.cfg.ConsoleBase() + "/console/approvals/" + r.ID,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the request line lacks %q:\n%s", want, out)
		}
	}
	e.approve(v.OperationID, "bob")
	waitFor("approved [" + short + "] by bob (CLI): register terminal-line.dev")
	waitFor("done [" + short + "]: Registered terminal-line.dev")
	e.waitState(v.OperationID, ledger.StateSucceeded)

	// A deny reason with a new line, a bidi override and an ANSI escape
	// reaches the terminal as one plain line.
	v = opView(t, e.call(webBot, "register_domain", registerArgs("terminal-deny.dev")))
	r = e.pendingApproval(v.OperationID)
	if _, err := e.srv.Approvals().Decide(context.Background(), approvals.VoteInput{RequestID: r.ID, Approver: "bob", Via: approvals.ViaCLI,
		Outcome: approvals.OutcomeDeny, Reason: "no\nfake line \u202eevil\x1b[31m red"}); err != nil {
		t.Fatal(err)
	}
	out = waitFor("denied [" + approvals.ShortID(r.ID) + "] by bob (CLI)")
	if strings.ContainsAny(out, "\u202e\x1b") || strings.Contains(out, "\nfake line") {
		t.Errorf("unsanitised text reached the terminal: %q", out)
	}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if len(l) < 10 || l[2] != ':' || l[5] != ':' {
			t.Errorf("a line that does not start with the time: %q", l)
		}
	}
}
