package main

import (
	"strings"
	"testing"

	"github.com/tollgatehq/tollgate/server"
)

// TestMandatesCLI: the local approver creates a mandate within what the
// policy lets a mandate cover, lists it as a sentence and revokes it; one
// above the policy's bound, or for an agent the approver owns, is refused
// with the reason.
func TestMandatesCLI(t *testing.T) {
	me := osUser()
	db, l, _ := servedLedger(t, server.ApproverConfig{Name: "bob", OSUser: me, Roles: []string{"approver"}})
	_ = l.Close()
	create := func(extra ...string) (string, error) {
		return run(t, db, append([]string{"mandates", "create", "--agent", "web-bot", "--action", "register_domain", "--resource", "*.dev",
			"--max-total", "45.00", "--count", "3", "--expires", "8h"}, extra...)...)
	}
	out, err := create("--max-per-call", "15.00")
	if err != nil || !strings.Contains(out, "web-bot may register_domain *.dev up to 15.00 USD each, given by cli:bob: 0 of 3 used") {
		t.Fatalf("mandates create: %v\n%s", err, out)
	}
	id := strings.Fields(strings.TrimPrefix(out, "Created "))[0]
	if out, err := create("--max-per-call", "25.00"); err == nil || !strings.Contains(err.Error(), "a mandate may cover registrations up to 20 USD") {
		t.Errorf("a mandate above the policy's bound: %v\n%s", err, out)
	}
	if out, err := run(t, db, "mandates", "create", "--agent", "web-bot", "--action", "delete_zone", "--resource", "*", "--max-per-call", "1", "--max-total", "1"); err == nil ||
		!strings.Contains(err.Error(), "--action") {
		t.Errorf("bad flags: %v\n%s", err, out)
	}
	if out := mustRun(t, db, "mandates", "list"); !strings.Contains(out, id+"  web-bot may register_domain *.dev") {
		t.Errorf("mandates list:\n%s", out)
	}
	if out := mustRun(t, db, "mandates", "revoke", id); !strings.Contains(out, "revoked by cli:") {
		t.Errorf("mandates revoke:\n%s", out)
	}
	if out := mustRun(t, db, "mandates", "list", "--json"); !strings.Contains(out, `"revoked_by": "cli:`) {
		t.Errorf("mandates list --json:\n%s", out)
	}
}
