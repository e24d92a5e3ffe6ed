//go:build linux

package main

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/tools"
)

const crashModuleV2 = "export default {\n  async fetch() {\n    return new Response('v2');\n  },\n};\n"

// TestCrashLiveSite is the crash test of the live-site tools, in
// TestCrashAtEveryStage's style: a real `tollgate serve` is taken to a stage
// of attach_worker_domain, detach_worker_domain, a gradual rollout or
// rollback_worker (a request held mid-flight by the sandbox, before or after
// it acted, or the wait between two rollout steps), a second server is
// started, the first is killed with SIGKILL, and the second must reconcile
// by asking Cloudflare: settle what happened, release what did not, resume a
// rollout from the deployment in force. Then every operation is terminal,
// nothing is held, no minted token survives and the audit chain verifies.
func TestCrashLiveSite(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real tollgate, sandbox and Cerbos processes; skipped with -short")
	}
	t.Parallel()
	tests := []struct {
		name string
		// call starts the operation under test on the first server (after the
		// domain is registered and version 1 of the Worker is live).
		tool string
		args func(domain, script string) map[string]any
		// prepare, if set, builds more of the site first.
		prepare func(p *serveProc, domain, script string)
		// fault is put on the sandbox before the approval (or, with
		// afterStep, once that many rollout steps are recorded); the first
		// server is killed once it holds a request, or, without a fault,
		// once afterStep steps are recorded.
		fault     string
		afterStep int
		want      ledger.State
		wantCode  string
		// check looks at what the sandbox holds afterwards.
		check func(t *testing.T, e *crashEnv, domain, script string)
	}{
		{name: "attach, the PUT held before it acted", tool: "attach_worker_domain",
			args: func(d, s string) map[string]any {
				return map[string]any{"script_name": s, "hostname": "www." + d, "environment": "production", "reason": crashReason}
			},
			fault: `{"hang":true,"method":"PUT","path_contains":"/workers/domains"}`, want: ledger.StateFailed, wantCode: "not_executed",
			check: func(t *testing.T, e *crashEnv, d, s string) {
				if ds := e.sandboxState().Domains(); len(ds) != 0 {
					t.Fatalf("custom domains %+v, want none", ds)
				}
			}},
		{name: "attach, the PUT held after it acted", tool: "attach_worker_domain",
			args: func(d, s string) map[string]any {
				return map[string]any{"script_name": s, "hostname": d, "environment": "production", "reason": crashReason}
			},
			fault: `{"hang":true,"fail_after_effect":true,"method":"PUT","path_contains":"/workers/domains"}`, want: ledger.StateSucceeded,
			check: func(t *testing.T, e *crashEnv, d, s string) {
				if ds := e.sandboxState().Domains(); len(ds) != 1 || ds[0].Hostname != d || ds[0].Service != s {
					t.Fatalf("custom domains %+v, want %s on %s", ds, d, s)
				}
			}},
		{name: "a rollout, killed between two steps", tool: "deploy_worker",
			args: func(d, s string) map[string]any {
				return map[string]any{"script_name": s, "module": crashModuleV2, "environment": "production", "reason": crashReason,
					"rollout": map[string]any{"steps": []int{10, 50, 100}, "interval": "5s"}}
			},
			afterStep: 1, want: ledger.StateSucceeded, check: rolledOut},
		{name: "a rollout, the second step held before it acted", tool: "deploy_worker",
			args: func(d, s string) map[string]any {
				return map[string]any{"script_name": s, "module": crashModuleV2, "environment": "production", "reason": crashReason,
					"rollout": map[string]any{"steps": []int{10, 50, 100}, "interval": "5s"}}
			},
			fault: `{"hang":true,"method":"POST","path_contains":"/deployments"}`, afterStep: 1, want: ledger.StateSucceeded, check: rolledOut},
		{name: "detach, the DELETE held after it acted", tool: "detach_worker_domain",
			prepare: func(p *serveProc, d, s string) {
				p.approved("attach_worker_domain", map[string]any{"script_name": s, "hostname": "www." + d, "environment": "production", "reason": crashReason})
			},
			args:  func(d, s string) map[string]any { return map[string]any{"hostname": "www." + d, "reason": crashReason} },
			fault: `{"hang":true,"fail_after_effect":true,"method":"DELETE","path_contains":"/workers/domains/"}`, want: ledger.StateSucceeded,
			check: func(t *testing.T, e *crashEnv, d, s string) {
				if ds := e.sandboxState().Domains(); len(ds) != 0 {
					t.Fatalf("custom domains %+v, want none", ds)
				}
			}},
		{name: "rollback_worker, the deployment held after it acted", tool: "rollback_worker",
			prepare: func(p *serveProc, d, s string) {
				p.approved("deploy_worker", map[string]any{"script_name": s, "module": crashModuleV2, "environment": "production", "reason": crashReason})
			},
			args:  func(d, s string) map[string]any { return map[string]any{"script_name": s, "reason": crashReason} },
			fault: `{"hang":true,"fail_after_effect":true,"method":"POST","path_contains":"/deployments"}`, want: ledger.StateSucceeded,
			check: func(t *testing.T, e *crashEnv, d, s string) {
				deps := e.sandboxState().Deployments(s)
				if len(deps) < 3 || len(deps[0].Traffic) != 1 || deps[0].Traffic[0].VersionID != deps[2].Traffic[0].VersionID {
					t.Fatalf("deployments %+v: want version 1 back in force", deps)
				}
			}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newCrashEnv(t)
			domain, script := fmt.Sprintf("web-crash-%d.dev", i), fmt.Sprintf("web-crash-%d", i)
			first := e.serve()
			// The site so far: the domain registered, version 1 live.
			for _, args := range []map[string]any{
				{"domain": domain, "reason": crashReason},
				{"script_name": script, "module": okModuleCrash, "environment": "production", "reason": crashReason},
			} {
				tool := "register_domain"
				if _, ok := args["script_name"]; ok {
					tool = "deploy_worker"
				}
				v := first.callTool(tool, args)
				e.approve(e.requestID(v.OperationID))
				if got := first.waitTerminal(v.OperationID); got.Status != "succeeded" {
					t.Fatalf("%s: %+v", tool, got)
				}
			}

			if tc.prepare != nil {
				tc.prepare(first, domain, script)
			}
			if tc.fault != "" && tc.afterStep == 0 && tc.tool == "rollback_worker" {
				// No approval to wait for: the call executes at once.
				e.setFaults(tc.fault)
			}
			var v tools.OperationView
			if tc.tool == "rollback_worker" {
				// It executes at once and its request is held: the call waits
				// on it, so it runs aside and the operation is read from the
				// ledger.
				go func() { _, _ = first.call(tc.tool, tc.args(domain, script)) }()
				e.waitFor("the rollback operation", func() bool {
					ops, _, err := e.db.ListOperations(context.Background(), ledger.OperationQuery{Team: "web", Limit: 100})
					for _, op := range ops {
						if err == nil && op.Tool == tc.tool {
							v.OperationID = op.ID
						}
					}
					return v.OperationID != ""
				})
			} else {
				v = first.callTool(tc.tool, tc.args(domain, script))
				if v.Status != "awaiting_approval" {
					t.Fatalf("%s: %+v", tc.tool, v)
				}
				reqID := e.requestID(v.OperationID)
				if tc.fault != "" && tc.afterStep == 0 {
					e.setFaults(tc.fault)
				}
				e.approve(reqID)
			}
			if tc.afterStep > 0 {
				e.waitFor("rollout step "+fmt.Sprint(tc.afterStep), func() bool { return rolloutStepsOf(e, v.OperationID) >= tc.afterStep })
				if tc.fault != "" {
					e.setFaults(tc.fault)
				}
			}
			if tc.fault != "" {
				e.waitFor("the fault to hold a request", func() bool { return e.hanging() == 1 })
			}
			before := e.operation(v.OperationID)
			if before.State != ledger.StateExecuting {
				t.Fatalf("killed in %s, want executing", before.State)
			}
			second := e.serve()
			if tc.fault != "" {
				e.setFaults(`{}`)
			}
			first.kill()
			if tc.fault != "" {
				e.waitFor("the held request to end", func() bool { return e.hanging() == 0 })
			}
			got := second.waitTerminal(v.OperationID)
			e.waitLeaseGone(before.LeaseID)
			second.stop()
			op := e.operation(v.OperationID)
			if got.Status != string(op.State) || op.State != tc.want || op.ErrorCode != tc.wantCode {
				t.Fatalf("ended %s (%s: %s); want %s %q", op.State, op.ErrorCode, op.Error, tc.want, tc.wantCode)
			}
			asked, resumed := false, false
			_ = e.db.Events(context.Background(), ledger.EventQuery{OperationID: op.ID}, func(ev ledger.Event) error {
				asked = asked || ev.Type == "token.minted" && strings.Contains(string(ev.Data), `"purpose":"inspect"`)
				resumed = resumed || ev.Type == "rollout.resumed"
				return nil
			})
			if !asked {
				t.Fatal("the second server did not ask Cloudflare (no inspect token for the operation)")
			}
			if tc.afterStep > 0 && !resumed {
				t.Fatal("the rollout was not resumed from the deployment in force")
			}
			if tc.afterStep > 0 && rolloutStepsOf(e, op.ID) != 3 {
				t.Fatalf("%d rollout steps recorded, want 3 (each once)", rolloutStepsOf(e, op.ID))
			}
			tc.check(t, e, domain, script)
			e.checkSettledAndClean()
		})
	}
}

const okModuleCrash = "export default {\n  async fetch() {\n    return new Response('v1');\n  },\n};\n"

// rolledOut checks that all of the Worker's traffic is on one version, and
// that the steps before it were splits.
func rolledOut(t *testing.T, e *crashEnv, _, script string) {
	t.Helper()
	deps := e.sandboxState().Deployments(script)
	if len(deps) < 3 || len(deps[0].Traffic) != 1 || deps[0].Traffic[0].Percentage != 100 || len(deps[1].Traffic) != 2 {
		t.Fatalf("deployments %+v: want all traffic on the new version after a split", deps)
	}
}

func rolloutStepsOf(e *crashEnv, opID string) int {
	n := 0
	_ = e.db.Events(context.Background(), ledger.EventQuery{OperationID: opID}, func(ev ledger.Event) error {
		if ev.Type == "rollout.step" {
			n++
		}
		return nil
	})
	return n
}

// checkSettledAndClean: every operation is terminal, nothing is held, each
// success settled once, no minted token survives, the chain verifies.
func (e *crashEnv) checkSettledAndClean() {
	t := e.t
	t.Helper()
	ops, _, err := e.db.ListOperations(context.Background(), ledger.OperationQuery{Team: "web", Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range ops {
		if !op.State.Terminal() {
			t.Errorf("operation %s stuck in %s", op.ID, op.State)
		}
		settled := 0
		_ = e.db.Events(context.Background(), ledger.EventQuery{OperationID: op.ID}, func(ev ledger.Event) error {
			if ev.Type == ledger.EventBudgetSettled {
				settled++
			}
			return nil
		})
		if want := b2i(op.State == ledger.StateSucceeded); settled != want {
			t.Errorf("%s (%s %s) settled %d times, want %d", op.ID, op.Tool, op.State, settled, want)
		}
	}
	if _, held := e.teamSpend(); held != 0 {
		t.Errorf("%d still held", held)
	}
	e.waitFor("minted tokens to be gone", func() bool {
		for _, tok := range e.sandboxState().LiveTokens() {
			if strings.HasPrefix(tok.Name, "tollgate:") {
				return false
			}
		}
		return true
	})
	if out, err := e.cli("audit", "verify"); err != nil || !strings.Contains(out, "audit chain intact") {
		t.Errorf("tollgate audit verify: %v\n%s", err, out)
	}
}

// approved runs a call on p, approves it and waits for it to succeed.
func (p *serveProc) approved(tool string, args map[string]any) {
	t := p.e.t
	t.Helper()
	v := p.callTool(tool, args)
	if v.Status == "awaiting_approval" {
		p.e.approve(p.e.requestID(v.OperationID))
	}
	if got := p.waitTerminal(v.OperationID); got.Status != "succeeded" {
		t.Fatalf("%s: %+v", tool, got)
	}
}
