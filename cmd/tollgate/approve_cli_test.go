//go:build linux

package main

import (
	"regexp"
	"strings"
	"testing"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/tools"
)

// TestApproveByPrefixPrintsTheRegistration is issue 12's acceptance test for
// the CLI: while a registration waits inside a running server, `approvals
// list` names it in a sentence with its short id, `approvals show` finds it
// by its operation id, and `approvals approve` with the first 6 characters
// of its id approves it, waits for the server to execute it, and prints the
// registration.
func TestApproveByPrefixPrintsTheRegistration(t *testing.T) {
	t.Parallel()
	e := newCrashEnv(t)
	p := e.serve()
	done := make(chan tools.OperationView, 1)
	go func() {
		v, err := p.call("register_domain", map[string]any{"domain": "by-prefix.dev", "reason": crashReason})
		if err != nil {
			t.Error(err)
		}
		done <- v
	}()
	v := <-done
	if v.Status != string(ledger.StateAwaitingApproval) {
		t.Fatalf("register: %+v, want awaiting_approval (wait 0s)", v)
	}
	reqID := e.requestID(v.OperationID)
	short := approvals.ShortID(reqID)

	list, err := e.cli("approvals", "list")
	if err != nil {
		t.Fatalf("approvals list: %v\n%s", err, list)
	}
	sentence := regexp.MustCompile(`(?m)^` + short + `  web-bot asks to register by-prefix\.dev for 1 year \(auto-renew off\) \([0-9.]+ USD\), because "crash test: .*"\. 0 of 1 approvals, expires in .*: tollgate approvals approve ` + short + `\.$`)
	if !sentence.MatchString(list) {
		t.Errorf("approvals list does not read as a sentence:\n%s", list)
	}
	show, err := e.cli("approvals", "show", v.OperationID)
	if err != nil || !strings.Contains(show, reqID) {
		t.Errorf("approvals show %s: %v\n%s", v.OperationID, err, show)
	}
	if out, err := e.cli("approvals", "approve", short[:5], "--as", "bob"); err == nil || !strings.Contains(out, "at least 6") {
		t.Errorf("a 5-character prefix: %v\n%s", err, out)
	}

	out, err := e.cli("approvals", "approve", short[:6], "--as", "bob", "--wait", "50s")
	if err != nil {
		t.Fatalf("approvals approve %s: %v\n%s", short[:6], err, out)
	}
	for _, want := range []string{reqID + " approved by bob: Register by-prefix.dev", "Done: Registered by-prefix.dev", ", charged ", "(operation " + v.OperationID + ")"} {
		if !strings.Contains(out, want) {
			t.Errorf("approvals approve does not print %q:\n%s", want, out)
		}
	}
	if op := e.operation(v.OperationID); op.State != ledger.StateSucceeded {
		t.Fatalf("operation %s is %s after the approve command returned", op.ID, op.State)
	}
	// A second vote on a decided request changes nothing and says so.
	if out, err := e.cli("approvals", "approve", short, "--as", "bob"); err == nil || !strings.Contains(out, "already decided") {
		t.Errorf("approving again: %v\n%s", err, out)
	}
}
