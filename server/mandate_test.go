package server

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/cloudflare/sandbox"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/ledger/money"
	"github.com/tollgatehq/tollgate/tools"
)

// TestMandateCoversExactlyItsCount is issue 12's acceptance test for
// standing approvals: a mandate of count 3 lets exactly 3 of 4 racing
// matching registrations through without a click; the fourth waits for a
// human. Every use is audited with the mandate's id; a production deploy is
// never covered, whatever mandate exists.
func TestMandateCoversExactlyItsCount(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) {
		c.Approvals.Wait = 0
		c.Budgets = []BudgetConfig{{Scope: "global", Window: "day", Limit: "200.00"}}
	}))
	ctx := context.Background()
	usd := func(micros int64) money.Money { return money.Money{Micros: micros, Currency: "USD"} }
	m, err := e.db.CreateMandate(ctx, ledger.Mandate{Agent: webBot, Action: "register_domain", Pattern: "*.dev",
		MaxPerCall: usd(15_000_000), MaxTotal: usd(60_000_000), Count: 3, CreatedBy: "cli:bob", ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	views := make([]tools.OperationView, 4)
	var wg sync.WaitGroup
	for i, d := range []string{"mandate-a.dev", "mandate-b.dev", "mandate-c.dev", "mandate-d.dev"} {
		wg.Go(func() { views[i] = opView(t, e.call(webBot, "register_domain", registerArgs(d))) })
	}
	wg.Wait()
	covered, waiting := 0, 0
	for _, v := range views {
		if v.Status != "awaiting_approval" {
			got := e.waitState(v.OperationID, ledger.StateSucceeded)
			if id, _ := e.db.MandateOf(ctx, got.ID); id != m.ID {
				t.Errorf("%s succeeded without the mandate (%q) and without a human", got.ID, id)
			}
			if _, err := e.srv.Approvals().ByOperation(ctx, got.ID); err == nil {
				t.Errorf("%s asked a human although the mandate covered it", got.ID)
			}
			covered++
			continue
		}
		if r := e.pendingApproval(v.OperationID); r.State != approvals.StatePending {
			t.Errorf("the fourth call's approval is %s", r.State)
		}
		waiting++
	}
	if covered != 3 || waiting != 1 {
		t.Fatalf("%d covered by the mandate, %d waiting; want 3 and 1", covered, waiting)
	}
	if n := len(e.sb.Registrations()); n != 3 {
		t.Fatalf("%d registrations, want 3", n)
	}
	// The operation's story (audit show, the console) names the mandate.
	var story []string
	_ = e.db.Events(ctx, ledger.EventQuery{Types: []string{ledger.EventMandateUsed}}, func(ev ledger.Event) error {
		story = append(story, EventDetail(ev))
		return nil
	})
	if len(story) != 3 || !strings.Contains(story[0], "mandate_id="+m.ID) || !strings.Contains(story[0], "count=3") {
		t.Errorf("mandate.used in the timeline: %q", story)
	}
	if n := e.auditCount(ledger.EventMandateUsed); n != 3 || !e.auditHas(ledger.EventMandateUsed, m.ID) || !e.auditHas("approval.mandate", m.ID) {
		t.Errorf("%d mandate.used events (want 3, with the id)", n)
	}

	// No mandate covers a production deploy.
	if _, err := e.db.CreateMandate(ctx, ledger.Mandate{Agent: webBot, Action: "deploy_worker", Pattern: "web-*",
		MaxPerCall: usd(15_000_000), MaxTotal: usd(60_000_000), Count: 3, CreatedBy: "cli:bob", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	v := opView(t, e.call(webBot, "deploy_worker", map[string]any{
		"script_name": "web-mandated", "module": okModule, "compatibility_date": "2025-01-01", "environment": "production", "reason": reason,
	}))
	if v.Status != "awaiting_approval" {
		t.Fatalf("a production deploy under a mandate: %s (%s)", v.Status, v.Error)
	}
	if id, _ := e.db.MandateOf(ctx, v.OperationID); id != "" {
		t.Fatalf("a production deploy used mandate %s", id)
	}
}

// TestMandateUseReturnedWhenNothingIsCharged: a call a mandate covered that
// ends without a charge gives the use back with its release, audited with
// the mandate's id: the registry refusing the registration, and Cloudflare
// failing before acting (reconciliation finds nothing bought). A settled call
// keeps its use, so a mandate of count 1 covers both failures, then one
// registration, and the call after that waits for a human.
func TestMandateUseReturnedWhenNothingIsCharged(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) {
		c.Approvals.Wait = 0
		c.Budgets = []BudgetConfig{{Scope: "global", Window: "day", Limit: "200.00"}}
	}))
	ctx := context.Background()
	usd := func(micros int64) money.Money { return money.Money{Micros: micros, Currency: "USD"} }
	m, err := e.db.CreateMandate(ctx, ledger.Mandate{Agent: webBot, Action: "register_domain", Pattern: "*.dev",
		MaxPerCall: usd(15_000_000), MaxTotal: usd(15_000_000), Count: 1, CreatedBy: "cli:bob", ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	mandate := func() ledger.Mandate {
		t.Helper()
		ms, err := e.db.Mandates(ctx)
		if err != nil || len(ms) != 1 {
			t.Fatalf("mandates %+v %v", ms, err)
		}
		return ms[0]
	}
	failedWithout := func(domain, code string) {
		t.Helper()
		v := opView(t, e.call(webBot, "register_domain", registerArgs(domain)))
		op := e.waitState(v.OperationID, ledger.StateFailed)
		if op.ErrorCode != code || op.Charged != nil {
			t.Fatalf("%s: failed %s (%s) charged %+v; want %s, nothing charged", domain, op.ErrorCode, op.Error, op.Charged, code)
		}
		if id, _ := e.db.MandateOf(ctx, op.ID); id != m.ID {
			t.Fatalf("%s ran without the mandate (%q)", domain, id)
		}
		if got := mandate(); got.Used != 0 || got.UsedMicros != 0 {
			t.Fatalf("after %s failed: %d used (%d micros), want the use given back", domain, got.Used, got.UsedMicros)
		}
		if n := eventCount(t, e, op.ID, ledger.EventMandateUseReturned); n != 1 || !e.auditHas(ledger.EventMandateUseReturned, m.ID) {
			t.Fatalf("%s: %d mandate.use_returned events (want 1, with the mandate's id)", domain, n)
		}
	}

	// The registry rejects the registration ("fail-" names in the sandbox).
	failedWithout("fail-returned.dev", "registry_rejected")
	// Cloudflare answers 500 before acting; reconciliation finds nothing.
	e.sb.SetFaults(sandbox.Faults{ErrorRate: 1, PathContains: "registrations", Method: "POST"})
	failedWithout("nothing-bought.dev", "not_executed")
	e.sb.SetFaults(sandbox.Faults{})

	// The use is there for a call that succeeds, which keeps it.
	v := opView(t, e.call(webBot, "register_domain", registerArgs("kept-use.dev")))
	op := e.waitState(v.OperationID, ledger.StateSucceeded)
	if id, _ := e.db.MandateOf(ctx, op.ID); id != m.ID {
		t.Fatalf("the registration after two failures ran without the mandate (%q)", id)
	}
	if got := mandate(); got.Used != 1 || got.UsedMicros != op.Charged.Micros || got.Active(time.Now()) {
		t.Fatalf("after a settled use: %+v", got)
	}
	if n := eventCount(t, e, op.ID, ledger.EventMandateUseReturned); n != 0 {
		t.Fatalf("a settled call gave its use back (%d events)", n)
	}
	if v := opView(t, e.call(webBot, "register_domain", registerArgs("used-up.dev"))); v.Status != "awaiting_approval" {
		t.Fatalf("a call after the mandate was used up: %s (%s)", v.Status, v.Error)
	}
	if regs := e.sb.Registrations(); len(regs) != 1 || regs[0].Domain != "kept-use.dev" {
		t.Fatalf("sandbox registrations %+v, want only kept-use.dev", regs)
	}
}

// TestEstimateSaysWhichMandateCovers: estimate_cost names the mandate a
// call would use, with its uses and amount left, and consumes none of it;
// with no approver able to approve the call (only the agent's owner is
// configured) it would still not block, because no human is asked, and the
// real call then runs without one. A call the mandate does not match, and a
// production deploy (which the policy never lets a mandate cover), are
// reported as waiting for a human as before.
func TestEstimateSaysWhichMandateCovers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) {
		c.Approvals.Wait = 0
		c.Approvers = []ApproverConfig{{Name: "alice", Roles: []string{"approver"}}} // owns web-bot: approves nothing of it
		c.Budgets = []BudgetConfig{{Scope: "global", Window: "day", Limit: "200.00"}}
	}))
	ctx := context.Background()
	usd := func(micros int64) money.Money { return money.Money{Micros: micros, Currency: "USD"} }
	estimate := func(action string, params map[string]any) tools.EstimateResult {
		t.Helper()
		return structured[tools.EstimateResult](t, e.call(webBot, "estimate_cost", map[string]any{"action": action, "params": params}))
	}
	est := estimate("register_domain", map[string]any{"domain": "covered.dev"})
	if !est.WouldBlock || est.Approval.Unavailable == "" || est.Approval.CoveredByMandate != "" {
		t.Fatalf("without a mandate: %+v; want the approval unavailable", est.Approval)
	}

	m, err := e.db.CreateMandate(ctx, ledger.Mandate{Agent: webBot, Action: "register_domain", Pattern: "*.dev",
		MaxPerCall: usd(15_000_000), MaxTotal: usd(40_000_000), Count: 3, CreatedBy: "cli:bob", ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // estimating twice uses nothing
		est = estimate("register_domain", map[string]any{"domain": "covered.dev"})
		a := est.Approval
		if est.WouldBlock || est.BlockReason != "" || !a.Required || a.Unavailable != "" || a.CoveredByMandate != m.ID || a.RemainingUses != 3 ||
			a.MandateRemaining == nil || a.MandateRemaining.Micros != 40_000_000 || a.MandateExpiresAt == nil || !a.MandateExpiresAt.Equal(m.ExpiresAt) ||
			!strings.Contains(a.Why, "covered by standing approval "+m.ID) {
			t.Fatalf("estimate under the mandate: would_block=%v %q %+v", est.WouldBlock, est.BlockReason, a)
		}
	}
	if ms, err := e.db.Mandates(ctx); err != nil || ms[0].Used != 0 || ms[0].UsedMicros != 0 {
		t.Fatalf("an estimate used the mandate: %+v %v", ms, err)
	}
	// Outside the pattern, and a production deploy: a human as before.
	if est := estimate("register_domain", map[string]any{"domain": "covered.com"}); est.Approval.CoveredByMandate != "" || !est.WouldBlock {
		t.Errorf("a .com under a *.dev mandate: %+v", est.Approval)
	}
	if _, err := e.db.CreateMandate(ctx, ledger.Mandate{Agent: webBot, Action: "deploy_worker", Pattern: "web-*",
		MaxPerCall: usd(15_000_000), MaxTotal: usd(60_000_000), Count: 3, CreatedBy: "cli:bob", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	prod := estimate("deploy_worker", map[string]any{"script_name": "web-prod", "module": okModule, "compatibility_date": "2025-01-01", "environment": "production"})
	if prod.Approval.CoveredByMandate != "" || !prod.Approval.Required {
		t.Errorf("a production deploy under a mandate: %+v", prod.Approval)
	}

	// The call the estimate described runs without a human, and the next
	// estimate counts the use.
	v := opView(t, e.call(webBot, "register_domain", registerArgs("covered.dev")))
	if got := e.waitState(v.OperationID, ledger.StateSucceeded); got.ErrorCode != "" {
		t.Fatalf("the covered call: %s %s", got.State, got.Error)
	}
	est = estimate("register_domain", map[string]any{"domain": "covered-too.dev"})
	if est.Approval.CoveredByMandate != m.ID || est.Approval.RemainingUses != 2 || est.Approval.MandateRemaining.Micros != 40_000_000-12_180_000 {
		t.Fatalf("estimate after one use: %+v", est.Approval)
	}
}
