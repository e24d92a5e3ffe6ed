package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/tools"
)

// Two approvers of whom one owns the agent cannot meet the policy's
// two-person rule: start-up says so, estimate_cost reports the approval as
// unavailable (would_block) with the reason, and the call fails at once.
func TestQuorumThatCannotBeMetIsReported(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) {
		c.Approvals.Wait = 0
		c.Approvers = []ApproverConfig{
			{Name: "alice", Roles: []string{"approver"}}, // owns web-bot
			{Name: "bob", OSUser: "bob", Roles: []string{"approver"}},
		}
	}))
	waitLog(t, e, "approval quorum")
	logs := e.logs.String()
	if !strings.Contains(logs, `msg="approval quorum cannot be met`) || !strings.Contains(logs, "agent=web-bot") ||
		!strings.Contains(logs, "register_domain of 50.00 USD needs 2 distinct approvers") {
		t.Errorf("start-up does not warn about the two-person rule:\n%s", logs)
	}
	for _, name := range []string{"alice", "bob"} {
		if !strings.Contains(logs, `msg=approver name=`+name) {
			t.Errorf("start-up does not name approver %s:\n%s", name, logs)
		}
	}
	if err := e.sb.SetPrice("dev", "40.00", "40.00"); err != nil {
		t.Fatal(err)
	}
	est := structured[tools.EstimateResult](t, e.call(webBot, "estimate_cost", map[string]any{"action": "register_domain", "params": map[string]any{"domain": "two-keys.dev"}}))
	if !est.WouldBlock || est.Approval.Approvals != 2 || !strings.Contains(est.Approval.Unavailable, "only bob may approve it") ||
		!strings.Contains(est.BlockReason, "approval unavailable: register_domain of 40.00 USD needs 2 distinct approvers") {
		t.Fatalf("estimate %+v: want would_block with the unmet quorum", est)
	}
	// Below the two-person line bob alone suffices: nothing to report.
	if err := e.sb.SetPrice("dev", "12.00", "12.00"); err != nil {
		t.Fatal(err)
	}
	est = structured[tools.EstimateResult](t, e.call(webBot, "estimate_cost", map[string]any{"action": "register_domain", "params": map[string]any{"domain": "one-key.dev"}}))
	if est.WouldBlock || est.Approval.Unavailable != "" || est.BlockReason != "" {
		t.Fatalf("estimate %+v: one eligible approver meets a quorum of 1", est)
	}
}

// The quickstart: no tollgate.yaml, the sandbox, the OS user as the one
// approver. A production deploy and a registration above 30 USD each go
// through after that one approval.
func TestQuickstartDefaultsNeedOneApprover(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withNothingBilled(), withConfig(func(c *Config) {
		d := Default()
		c.Agents, c.Agent, c.Approvers, c.Approvals = d.Agents, d.Agent, d.Approvers, d.Approvals
		c.Approvals.Wait = 0
	}))
	waitLog(t, e, "approval quorums checked")
	if logs := e.logs.String(); strings.Contains(logs, "quorum cannot be met") || !strings.Contains(logs, "msg=approver name="+Default().Approvers[0].Name) {
		t.Fatalf("start-up logs:\n%s", logs)
	}
	me := Default().Approvers[0].Name
	if err := e.sb.SetPrice("dev", "40.00", "40.00"); err != nil {
		t.Fatal(err)
	}
	est := structured[tools.EstimateResult](t, e.call(DefaultAgent, "estimate_cost", map[string]any{"action": "register_domain", "params": map[string]any{"domain": "quick-start.dev"}}))
	if est.WouldBlock || est.Approval.Approvals != 1 {
		t.Fatalf("estimate %+v: the sandbox's one approver suffices", est)
	}
	for _, call := range []struct {
		tool string
		args map[string]any
	}{
		{"register_domain", registerArgs("quick-start.dev")},
		{"deploy_worker", map[string]any{"script_name": "local-site", "module": okModule, "compatibility_date": "2025-01-01", "environment": "production", "reason": reason}},
	} {
		res := e.call(DefaultAgent, call.tool, call.args)
		if res.IsError {
			t.Fatalf("%s: %s", call.tool, text(res))
		}
		v := opView(t, res)
		if r := e.pendingApproval(v.OperationID); r.Quorum != 1 {
			t.Fatalf("%s: quorum %d, want 1", call.tool, r.Quorum)
		}
		if out := e.approve(v.OperationID, me); !out.Final || out.Request.State != approvals.StateApproved {
			t.Fatalf("%s: one approval is not final: %+v", call.tool, out)
		}
		e.waitState(v.OperationID, ledger.StateSucceeded)
	}
}

// A tollgate.yaml without approvers: keeps the OS user as the approver.
func TestConfigWithoutApproversKeepsTheDefault(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "tollgate.yaml")
	if err := os.WriteFile(path, []byte("agents:\n  - {name: web-bot, team: web, roles: [agent]}\nagent: web-bot\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Approvers) != 1 || cfg.Approvers[0].Name != Default().Approvers[0].Name || cfg.Approvers[0].OSUser != Default().Approvers[0].OSUser {
		t.Fatalf("approvers %+v, want the default %+v", cfg.Approvers, Default().Approvers)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}
