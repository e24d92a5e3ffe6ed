package server

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/tools"
)

const moduleV2 = "export default {\n  async fetch(request) {\n    return new Response('v2');\n  },\n};\n"

// deployProduction deploys module to production for webBot, approved.
func deployProduction(t *testing.T, e *testEnv, script, module string, rollout map[string]any) tools.OperationView {
	t.Helper()
	args := map[string]any{"script_name": script, "module": module, "environment": "production", "reason": reason}
	if rollout != nil {
		args["rollout"] = rollout
	}
	res := e.call(webBot, "deploy_worker", args)
	if res.IsError {
		t.Fatalf("deploy: %s", text(res))
	}
	v := opView(t, res)
	e.approve(v.OperationID, "bob")
	return v
}

// rolloutSteps are the percentages the operation's rollout.step events recorded.
func rolloutSteps(t *testing.T, e *testEnv, opID string) []float64 {
	t.Helper()
	var out []float64
	if err := e.db.Events(context.Background(), ledger.EventQuery{OperationID: opID}, func(ev ledger.Event) error {
		if ev.Type == "rollout.step" {
			var d struct{ Percent float64 }
			_ = json.Unmarshal(ev.Data, &d)
			out = append(out, d.Percent)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRolloutEndToEnd: one approval, then 10 → 50 → 100 % step by step,
// each step a deployment at Cloudflare, a token of its own and an event in
// the Operation's story.
func TestRolloutEndToEnd(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) { c.Approvals.Wait = 0 }))
	v1 := deployProduction(t, e, "web-roll", okModule, nil)
	e.waitState(v1.OperationID, ledger.StateSucceeded)

	v := deployProduction(t, e, "web-roll", moduleV2, map[string]any{"steps": []int{10, 50, 100}, "interval": "5s"})
	req := e.pendingApproval(v.OperationID)
	if !strings.Contains(req.Summary, "gradual rollout: 10% → 50% → 100%, every 5s") {
		t.Fatalf("approval summary %q does not show the rollout", req.Summary)
	}
	op := e.waitState(v.OperationID, ledger.StateSucceeded)
	if got := rolloutSteps(t, e, v.OperationID); len(got) != 3 || got[0] != 10 || got[1] != 50 || got[2] != 100 {
		t.Fatalf("recorded steps %v", got)
	}
	deps := e.sb.Deployments("web-roll")
	if len(deps) < 4 || len(deps[0].Traffic) != 1 || deps[0].Traffic[0].Percentage != 100 ||
		len(deps[1].Traffic) != 2 || len(deps[2].Traffic) != 2 {
		t.Fatalf("deployments at Cloudflare %+v", deps)
	}
	var res tools.DeployResult
	if err := json.Unmarshal(op.Result, &res); err != nil || res.Rollout == nil || res.Rollout.Done != 3 || res.Rollout.RolledBack != "" {
		t.Fatalf("result %s: %v", op.Result, err)
	}
	// One approval for the whole rollout; a token minted per step.
	minted := 0
	_ = e.db.Events(context.Background(), ledger.EventQuery{OperationID: v.OperationID}, func(ev ledger.Event) error {
		if ev.Type == "token.minted" && strings.Contains(string(ev.Data), `"purpose":"deploy"`) {
			minted++
		}
		return nil
	})
	if minted != 3 {
		t.Fatalf("%d deploy tokens minted, want one per step", minted)
	}
	for _, tok := range operationTokens(e) {
		if !strings.Contains(tok.Name, ":inspect:") {
			t.Fatalf("token %s alive after the rollout", tok.Name)
		}
	}
}

// TestRolloutStoppedByRollbackAndFreeze: rollback_worker during a rollout
// returns all traffic to the previous version and stops the rollout; so
// does a freeze of the agent.
func TestRolloutStoppedByRollbackAndFreeze(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"rollback", "freeze"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, withConfig(func(c *Config) { c.Approvals.Wait = 0 }))
			script := "web-stop-" + how
			v1 := deployProduction(t, e, script, okModule, nil)
			e.waitState(v1.OperationID, ledger.StateSucceeded)
			first := e.sb.Deployments(script)[0].Traffic[0].VersionID

			v := deployProduction(t, e, script, moduleV2, map[string]any{"steps": []int{10, 100}, "interval": "5s"})
			waitFor(t, func() bool { return len(rolloutSteps(t, e, v.OperationID)) == 1 })
			switch how {
			case "rollback":
				rb := opView(t, e.call(webBot, "rollback_worker", map[string]any{"script_name": script, "reason": "error rate doubled on the new version"}))
				if rb.Status != "succeeded" {
					t.Fatalf("rollback_worker: %+v", rb)
				}
			case "freeze":
				if _, err := Freeze(context.Background(), e.db, e.srv.Approvals(), ledger.AgentScope(webBot), "incident", "cli:bob"); err != nil {
					t.Fatal(err)
				}
			}
			op := e.waitState(v.OperationID, ledger.StateFailed)
			if op.ErrorCode != "rolled_back" {
				t.Fatalf("rollout ended %s: %s", op.ErrorCode, op.Error)
			}
			live := e.sb.Deployments(script)[0]
			if len(live.Traffic) != 1 || live.Traffic[0].VersionID != first || live.Traffic[0].Percentage != 100 {
				t.Fatalf("traffic after the %s: %+v, want all on %s", how, live, first)
			}
			if got := rolloutSteps(t, e, v.OperationID); len(got) != 1 {
				t.Fatalf("steps after the %s: %v", how, got)
			}
			requireEvents(t, e, v.OperationID, "rollout.step", "rollout.rolled_back", "budget.released")
		})
	}
}

// waitFor polls cond until it holds, failing after a generous hang guard.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 30 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
