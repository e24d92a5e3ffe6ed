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
	// This process both delivered the decision and follows the approval it
	// asked for: one line, whichever of the two came first.
	waitFollowersDone(t, e.srv)
	if n := strings.Count(term.String(), "approved ["+short+"]"); n != 1 {
		t.Errorf("the approval was printed %d times, want once:\n%s", n, term.String())
	}

	// A deny reason with a new line, a bidi override and an ANSI escape
	// reaches the terminal as one plain line.
	v = opView(t, e.call(webBot, "register_domain", registerArgs("terminal-deny.dev")))
	r = e.pendingApproval(v.OperationID)
	if _, err := e.srv.Approvals().Decide(context.Background(), approvals.VoteInput{RequestID: r.ID, Approver: "bob", Via: approvals.ViaCLI,
		Outcome: approvals.OutcomeDeny, Reason: "no\nfake line \u202eevil\x1b[31m red"}); err != nil {
		t.Fatal(err)
	}
	out = waitFor("denied [" + approvals.ShortID(r.ID) + "] by bob (CLI)")
	waitFollowersDone(t, e.srv)
	if n := strings.Count(term.String(), "denied ["+approvals.ShortID(r.ID)+"]"); n != 1 {
		t.Errorf("the denial was printed %d times, want once:\n%s", n, term.String())
	}
	out = term.String()
	if strings.ContainsAny(out, "\u202e\x1b") || strings.Contains(out, "\nfake line") {
		t.Errorf("unsanitised text reached the terminal: %q", out)
	}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if len(l) < 10 || l[2] != ':' || l[5] != ':' {
			t.Errorf("a line that does not start with the time: %q", l)
		}
	}
}

// waitFollowersDone waits until no goroutine of srv follows an approval's
// decision for its terminal, so a line that would come twice has come.
func waitFollowersDone(t *testing.T, srv *Server) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for srv.Pipeline().following.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d decision followers still running", srv.Pipeline().following.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestTerminalPrintsDecisionsMadeElsewhere: a vote cast through another
// tollgate process on the same ledger (a replica taking the console or
// Slack click, which then delivers the decision and executes) is printed by
// the process whose terminal said the approval was needed too, once; the
// other process prints it at most once on its own terminal.
func TestTerminalPrintsDecisionsMadeElsewhere(t *testing.T) {
	t.Parallel()
	asker, other := &syncBuffer{}, &syncBuffer{}
	e := newEnv(t, withTerminal(asker), withConfig(func(c *Config) { c.Approvals.Wait = 0 }))
	replica := e.replica(t, other)
	waitFor := func(term *syncBuffer, want string) {
		t.Helper()
		deadline := time.Now().Add(hangGuard)
		for !strings.Contains(term.String(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("the terminal never said %q:\n%s", want, term.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	ctx := context.Background()

	v := opView(t, e.call(webBot, "register_domain", registerArgs("elsewhere-ok.dev")))
	r := e.pendingApproval(v.OperationID)
	short := approvals.ShortID(r.ID)
	waitFor(asker, "approval needed ["+short+"]")
	if _, err := replica.Approvals().Decide(ctx, approvals.VoteInput{RequestID: r.ID, Approver: "bob", Via: approvals.ViaWeb, Outcome: approvals.OutcomeApprove}); err != nil {
		t.Fatal(err)
	}
	waitFor(asker, "approved ["+short+"] by bob (web console): register elsewhere-ok.dev")
	e.waitState(v.OperationID, ledger.StateSucceeded)

	v = opView(t, e.call(webBot, "register_domain", registerArgs("elsewhere-no.dev")))
	r2 := e.pendingApproval(v.OperationID)
	short2 := approvals.ShortID(r2.ID)
	waitFor(asker, "approval needed ["+short2+"]")
	if _, err := replica.Approvals().Decide(ctx, approvals.VoteInput{RequestID: r2.ID, Approver: "bob", Via: approvals.ViaWeb,
		Outcome: approvals.OutcomeDeny, Reason: "not this name"}); err != nil {
		t.Fatal(err)
	}
	waitFor(asker, "denied ["+short2+"] by bob (web console): register elsewhere-no.dev for 1 year (auto-renew off) — not this name")
	e.waitState(v.OperationID, ledger.StateDenied)

	waitFollowersDone(t, e.srv)
	for _, line := range []string{"approved [" + short + "]", "denied [" + short2 + "]"} {
		if n := strings.Count(asker.String(), line); n != 1 {
			t.Errorf("the asking process printed %q %d times, want once:\n%s", line, n, asker.String())
		}
		if n := strings.Count(other.String(), line); n > 1 {
			t.Errorf("the other process printed %q %d times:\n%s", line, n, other.String())
		}
	}
	if strings.Contains(other.String(), "approval needed") {
		t.Errorf("the other process announced an approval it did not ask for:\n%s", other.String())
	}
}
