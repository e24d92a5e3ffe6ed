package server

import (
	"testing"

	"github.com/tollgatehq/tollgate/ledger"
)

// TestPrincipalBuilder checks the one place the Cerbos principal is built:
// sandbox=true only on the sandbox (never from configured attributes),
// identity from the agent record, audit-only attributes from the client.
func TestPrincipalBuilder(t *testing.T) {
	t.Parallel()
	pr := Principal{Name: "web-bot", Team: "web", Owner: "alice", Roles: []string{"agent"}, Transport: "http",
		Attributes: map[string]string{"team": "finance", "owner": "mallory", "tier": "gold"}}
	ci := ledger.ClientInfo{Name: "claude", Version: "1.0", SessionID: "s1"}
	for _, sandbox := range []bool{false, true} {
		got := (&Pipeline{sandbox: sandbox}).principal(pr, ci)
		if v, ok := got.Attr["sandbox"]; ok != sandbox || (ok && v != true) {
			t.Errorf("sandbox=%v: P.attr.sandbox = %v (present %v)", sandbox, v, ok)
		}
		want := map[string]any{"team": "web", "owner": "alice", "tier": "gold", "transport": "http",
			"client_name": "claude", "client_version": "1.0", "session_id": "s1"}
		for k, v := range want {
			if got.Attr[k] != v {
				t.Errorf("sandbox=%v: P.attr.%s = %v, want %v", sandbox, k, got.Attr[k], v)
			}
		}
		if got.ID != "web-bot" || len(got.Roles) != 1 || got.Roles[0] != "agent" {
			t.Errorf("sandbox=%v: principal %s %v", sandbox, got.ID, got.Roles)
		}
		// The load comparison sends the very same principal.
		lp := PolicyPrincipal(AgentConfig{Name: "web-bot", Team: "web", Roles: []string{"agent"}}, "http", ci, sandbox)
		if _, ok := lp.Attr["sandbox"]; ok != sandbox {
			t.Errorf("PolicyPrincipal sandbox=%v: attr %v", sandbox, lp.Attr)
		}
	}
}
