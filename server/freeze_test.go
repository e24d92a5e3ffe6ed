package server

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tollgatehq/tollgate/approvals"
	slackchan "github.com/tollgatehq/tollgate/approvals/slack"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/ledger/money"
	"github.com/tollgatehq/tollgate/tools"
)

// The kill switch through the whole server: Freeze (the CLI's and the Slack
// button's path) cancels pending approvals and releases their holds; a frozen
// principal's mutating calls are refused before anything reaches Cloudflare,
// while read-only tools keep working; unfreezing restores service.

func TestFreezeDuringPendingApprovalCancelsAndReleases(t *testing.T) {
	t.Parallel()
	e, sl := newSlackEnv(t, withConfig(func(c *Config) {
		c.Approvals.Wait = 0
		c.Budgets = []BudgetConfig{{Scope: "team:web", Window: "day", Limit: "100.00"}}
	}))
	v, r := requestRegistration(t, e, registerArgs("freeze-me.dev"))
	sl.rec.waitPost(t, r.ID)
	assertHeld(t, e, "team:web", 12_180_000)

	cancelled, err := Freeze(context.Background(), e.db, e.srv.Approvals(), ledger.AgentScope(webBot), "runaway purchases", "cli:erin")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cancelled, []string{v.OperationID}) {
		t.Fatalf("cancelled %v, want [%s]", cancelled, v.OperationID)
	}
	op := e.waitState(v.OperationID, ledger.StateCancelled)
	if op.ErrorCode != "frozen" || !strings.Contains(op.Error, "runaway purchases") {
		t.Fatalf("cancellation %s: %s", op.ErrorCode, op.Error)
	}
	assertHeld(t, e, "team:web", 0)
	got, err := e.srv.Approvals().Get(context.Background(), r.ID)
	if err != nil || got.State != approvals.StateCancelled {
		t.Fatalf("approval %+v %v", got.State, err)
	}
	sl.rec.waitUpdate(t, "*Cancelled*", "runaway purchases")

	// A click that arrives afterwards changes nothing.
	sl.approve(t, "U0BOB", r.ID)
	if rep := sl.rec.lastEphemeral(t, "U0BOB"); rep != slackchan.ReplyCancelled {
		t.Errorf("late click reply %q", rep)
	}
	if n := len(e.sb.Registrations()); n != 0 {
		t.Fatalf("registered after the freeze: %d", n)
	}
	if vw := opView(t, e.call(webBot, "get_operation", map[string]any{"operation_id": v.OperationID})); vw.Status != "cancelled" || vw.ErrorCode != "frozen" {
		t.Fatalf("get_operation %+v", vw)
	}
	requireEvents(t, e, v.OperationID, "approval.cancelled", "budget.released")
	if len(auditEvents(t, e, "freeze.set")) != 1 {
		t.Error("the freeze is not audited")
	}
}

func TestFrozenAgentIsRefusedAtOnceButCanRead(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) { c.Approvals.Wait = 0 }))
	ctx := context.Background()
	if _, err := Freeze(ctx, e.db, e.srv.Approvals(), ledger.AgentScope(webBot), "incident 42", "cli:erin"); err != nil {
		t.Fatal(err)
	}
	deploy := map[string]any{
		"script_name": "web-landing", "module": okModule, "compatibility_date": "2025-01-01",
		"environment": "preview", "reason": reason,
	}
	for _, tc := range []struct {
		tool string
		args map[string]any
	}{
		{"register_domain", registerArgs("frozen-out.dev")},
		{"deploy_worker", deploy},
	} {
		before := len(e.sb.Requests())
		res := e.call(webBot, tc.tool, tc.args)
		v := opView(t, res)
		if !res.IsError || v.Status != "denied" || v.ErrorCode != "frozen" || !strings.Contains(v.Error, "incident 42") {
			t.Errorf("%s while frozen: %+v", tc.tool, v)
		}
		// "At once": no token minted, no quote, nothing at Cloudflare.
		if after := len(e.sb.Requests()); after != before {
			t.Errorf("%s while frozen made %d Cloudflare requests", tc.tool, after-before)
		}
	}
	if len(e.sb.Registrations()) != 0 || len(e.sb.Scripts()) != 0 {
		t.Fatal("a frozen agent changed something at Cloudflare")
	}

	// Read-only tools keep working.
	if res := e.call(webBot, "check_domain", map[string]any{"domain": "frozen-out.dev"}); res.IsError {
		t.Errorf("check_domain while frozen: %s", text(res))
	}
	est := e.call(webBot, "estimate_cost", map[string]any{"action": "register_domain", "params": map[string]any{"domain": "frozen-out.dev"}})
	if est.IsError {
		t.Fatalf("estimate_cost while frozen: %s", text(est))
	}
	if er := structured[tools.EstimateResult](t, est); !er.WouldBlock || !strings.Contains(er.BlockReason, "frozen") {
		t.Errorf("estimate does not predict the freeze: %+v", er)
	}
	if res := e.call(webBot, "list_operations", map[string]any{}); res.IsError || len(structured[tools.OperationList](t, res).Operations) != 2 {
		t.Errorf("list_operations while frozen: %s", text(res))
	}
	st := structured[tools.SpendStatusResult](t, e.call(webBot, "spend_status", map[string]any{}))
	if len(st.Frozen) != 1 || st.Frozen[0].Scope != "agent:web-bot" || st.Frozen[0].Reason != "incident 42" || st.Frozen[0].By != "cli:erin" {
		t.Fatalf("spend_status frozen %+v", st.Frozen)
	}

	// Another agent is not affected.
	if v := opView(t, e.call(opsBot, "register_domain", registerArgs("ops-status.dev"))); v.Status != "awaiting_approval" {
		t.Errorf("ops-bot: %+v", v)
	}

	// Unfreeze restores.
	if err := e.db.Unfreeze(ctx, ledger.AgentScope(webBot), "cli:erin"); err != nil {
		t.Fatal(err)
	}
	if v := opView(t, e.call(webBot, "register_domain", registerArgs("thawed.dev"))); v.Status != "awaiting_approval" {
		t.Fatalf("after unfreeze: %+v", v)
	}
	if st := structured[tools.SpendStatusResult](t, e.call(webBot, "spend_status", map[string]any{})); len(st.Frozen) != 0 {
		t.Errorf("spend_status after unfreeze %+v", st.Frozen)
	}
	if len(auditEvents(t, e, "freeze.cleared")) != 1 {
		t.Error("the unfreeze is not audited")
	}
}

// TestTeamAndGlobalFreeze: a team freeze stops that team's agents and
// cancels their pending approvals only; a global one stops everyone.
func TestTeamAndGlobalFreeze(t *testing.T) {
	t.Parallel()
	tests := []struct {
		scope     ledger.Scope
		stopsWeb  bool
		stopsOps  bool
		wantCount int
	}{
		{scope: ledger.TeamScope("web"), stopsWeb: true, stopsOps: false, wantCount: 1},
		{scope: ledger.TeamScope("ops"), stopsWeb: false, stopsOps: true, wantCount: 1},
		{scope: ledger.GlobalScope, stopsWeb: true, stopsOps: true, wantCount: 2},
	}
	for _, tc := range tests {
		t.Run(string(tc.scope), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, withConfig(func(c *Config) { c.Approvals.Wait = 0 }))
			ctx := context.Background()
			web := opView(t, e.call(webBot, "register_domain", registerArgs("web-pending.dev")))
			ops := opView(t, e.call(opsBot, "register_domain", registerArgs("ops-pending.dev")))
			for _, id := range []string{web.OperationID, ops.OperationID} {
				e.waitState(id, ledger.StateAwaitingApproval)
				e.pendingApproval(id)
			}

			cancelled, err := Freeze(ctx, e.db, e.srv.Approvals(), tc.scope, "quarterly audit", "cli:carol")
			if err != nil {
				t.Fatal(err)
			}
			if len(cancelled) != tc.wantCount {
				t.Fatalf("cancelled %v, want %d", cancelled, tc.wantCount)
			}
			check := func(id string, stopped bool) {
				t.Helper()
				want := ledger.StateAwaitingApproval
				if stopped {
					want = ledger.StateCancelled
				}
				e.waitState(id, want)
				r := e.pendingApproval(id)
				if stopped != (r.State == approvals.StateCancelled) {
					t.Errorf("approval of %s is %s", id, r.State)
				}
			}
			check(web.OperationID, tc.stopsWeb)
			check(ops.OperationID, tc.stopsOps)

			newCall := func(agent, domain string, stopped bool) {
				t.Helper()
				v := opView(t, e.call(agent, "register_domain", registerArgs(domain)))
				if stopped != (v.ErrorCode == "frozen") {
					t.Errorf("%s after freeze of %s: %s %s", agent, tc.scope, v.Status, v.ErrorCode)
				}
			}
			newCall(webBot, "web-next.dev", tc.stopsWeb)
			newCall(opsBot, "ops-next.dev", tc.stopsOps)

			if err := e.db.Unfreeze(ctx, tc.scope, "cli:carol"); err != nil {
				t.Fatal(err)
			}
			newCall(webBot, "web-after.dev", false)
			newCall(opsBot, "ops-after.dev", false)
		})
	}
}

// TestSlackFreezeButton: the Freeze agent button does what the CLI does.
func TestSlackFreezeButton(t *testing.T) {
	t.Parallel()
	e, sl := newSlackEnv(t, withConfig(func(c *Config) {
		c.Approvals.Wait = 0
		c.Budgets = []BudgetConfig{{Scope: "team:web", Window: "day", Limit: "100.00"}}
	}))
	v, r := requestRegistration(t, e, registerArgs("button-freeze.dev"))
	sl.rec.waitPost(t, r.ID)

	// Someone who is not an approver cannot freeze.
	if rep := sl.click(t, slackBlockAction("U0EVE", slackchan.ActionIDFreeze, r.ID)); rep.Status != 200 {
		t.Fatalf("freeze click by a non-approver: %d", rep.Status)
	}
	if got := sl.rec.lastEphemeral(t, "U0EVE"); got != slackchan.ReplyNotApprover {
		t.Errorf("non-approver freeze reply %q", got)
	}
	if fs, _ := e.db.Freezes(context.Background()); len(fs) != 0 {
		t.Fatalf("a non-approver froze %+v", fs)
	}

	if rep := sl.click(t, slackBlockAction("U0BOB", slackchan.ActionIDFreeze, r.ID)); rep.Status != 200 {
		t.Fatalf("freeze click: %d %s", rep.Status, rep.Body)
	}
	if got := sl.rec.lastEphemeral(t, "U0BOB"); !strings.HasPrefix(got, "Agent `web-bot` is frozen") {
		t.Errorf("freeze reply %q", got)
	}
	op := e.waitState(v.OperationID, ledger.StateCancelled)
	if op.ErrorCode != "frozen" {
		t.Errorf("operation %s: %s", op.ErrorCode, op.Error)
	}
	assertHeld(t, e, "team:web", 0)
	sl.rec.waitUpdate(t, "*Cancelled*")
	fs, err := e.db.Freezes(context.Background())
	if err != nil || len(fs) != 1 || fs[0].Scope != ledger.AgentScope(webBot) || fs[0].By != "slack:bob" {
		t.Fatalf("freezes %+v %v", fs, err)
	}
	if len(auditEvents(t, e, approvals.EventFreezeRequested)) != 1 {
		t.Error("the freeze click is not audited")
	}
	// The button freezes the agent, not just the request.
	if v := opView(t, e.call(webBot, "register_domain", registerArgs("after-button.dev"))); v.ErrorCode != "frozen" {
		t.Errorf("after the freeze button: %+v", v)
	}
	st := structured[tools.SpendStatusResult](t, e.call(webBot, "spend_status", map[string]any{}))
	if len(st.Frozen) != 1 || !strings.Contains(st.Frozen[0].Reason, "bob") {
		t.Errorf("spend_status %+v", st.Frozen)
	}
	if n := len(e.sb.Registrations()); n != 0 {
		t.Fatalf("registered: %d", n)
	}
}

// TestAutoFreezeCancelsPendingApprovals: repeated budget blocks freeze the
// agent, and like a manual freeze that cancels its pending approvals and
// releases their holds.
func TestAutoFreezeCancelsPendingApprovals(t *testing.T) {
	t.Parallel()
	e := newEnv(t,
		withLedger(ledger.WithAutoFreeze(2, 10*time.Minute)),
		withConfig(func(c *Config) {
			c.Approvals.Wait = 0
			c.Budgets = []BudgetConfig{{Scope: "team:web", Window: "day", Limit: "15.00"}}
		}))
	pending := opView(t, e.call(webBot, "register_domain", registerArgs("first-fits.dev")))
	if pending.Status != "awaiting_approval" {
		t.Fatalf("first call: %+v", pending)
	}
	for _, d := range []string{"second-blocked.dev", "third-blocked.dev"} {
		if v := opView(t, e.call(webBot, "register_domain", registerArgs(d))); v.ErrorCode != "budget_exceeded" {
			t.Fatalf("%s: %+v, want a budget block", d, v)
		}
	}
	op := e.waitState(pending.OperationID, ledger.StateCancelled)
	if op.ErrorCode != "frozen" {
		t.Fatalf("pending operation ended %s (%s), want cancelled by the freeze", op.State, op.ErrorCode)
	}
	assertHeld(t, e, "team:web", 0)
	r := e.pendingApproval(pending.OperationID)
	if r.State != "cancelled" {
		t.Fatalf("approval %s, want cancelled", r.State)
	}
	fz, err := e.db.FrozenFor(context.Background(), webBot, "web")
	if err != nil || fz == nil || !fz.Auto {
		t.Fatalf("want an automatic freeze of web-bot, got %+v %v", fz, err)
	}
}

// TestOverChargeFreezesAndAlerts: the registrar charges more than the amount
// a human approved. The money was spent, so the real charge is settled and
// audited; the agent is frozen, its other pending operation cancelled, and
// Slack and the log say so.
func TestOverChargeFreezesAndAlerts(t *testing.T) {
	t.Parallel()
	e, sl := newSlackEnv(t, withConfig(func(c *Config) {
		c.Approvals.Wait = 0
		c.Budgets = []BudgetConfig{{Scope: "team:web", Window: "day", Limit: "100.00"}}
	}))
	ctx := context.Background()
	if err := e.sb.SetSurcharge("1.25"); err != nil {
		t.Fatal(err)
	}
	v, req := requestRegistration(t, e, registerArgs("overcharged.dev"))
	other, _ := requestRegistration(t, e, registerArgs("still-waiting.dev"))
	sl.approve(t, "U0BOB", req.ID)

	op := e.waitState(v.OperationID, ledger.StateSucceeded)
	want, err := op.Quote.Add(money.Money{Micros: 1_250_000, Currency: op.Quote.Currency})
	if err != nil {
		t.Fatal(err)
	}
	if op.Charged == nil || *op.Charged != want {
		t.Fatalf("charged %v, want the real charge %s (quote %s + 1.25)", op.Charged, want, op.Quote)
	}
	st, err := e.db.BudgetStatuses(ctx, ledger.TeamScope("web"))
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 1 || st[0].Spent != want {
		t.Fatalf("budget %+v, want %s spent", st, want)
	}
	fz, err := e.db.FrozenFor(ctx, webBot, "web")
	if err != nil || fz == nil || fz.Scope != ledger.AgentScope(webBot) || !strings.Contains(fz.Reason, v.OperationID) {
		t.Fatalf("want web-bot frozen for %s, got %+v %v", v.OperationID, fz, err)
	}
	// Cancelled by the freeze: either directly (code frozen) or through its
	// approval request, which the freeze cancels first.
	if o := e.waitState(other.OperationID, ledger.StateCancelled); !strings.Contains(o.Error, "frozen") {
		t.Fatalf("the agent's other pending operation ended %s (%s: %s), want cancelled by the freeze", o.State, o.ErrorCode, o.Error)
	}
	assertHeld(t, e, "team:web", 0)

	msg := sl.rec.waitFor(t, "chat.postMessage", "the over-charge alert", func(c slackAPICall) bool {
		return strings.Contains(c.Fields["text"], "above the") && strings.Contains(c.Fields["text"], v.OperationID)
	})
	for _, w := range []string{want.String(), op.Quote.String(), "frozen", "tollgate unfreeze --agent " + webBot} {
		if !strings.Contains(msg.Fields["text"], w) {
			t.Errorf("alert lacks %q: %s", w, msg.Fields["text"])
		}
	}
	if !strings.Contains(e.logs.String(), "charged above the approved amount") {
		t.Errorf("no error log line for the over-charge:\n%s", e.logs.String())
	}
	settled := auditEvents(t, e, ledger.EventBudgetSettled)
	if len(settled) != 1 || settled[0]["over_quote"] != true || settled[0]["flagged"] != true {
		t.Fatalf("budget.settled %+v", settled)
	}
	var froze bool
	for _, f := range auditEvents(t, e, ledger.EventFreezeSet) {
		froze = froze || f["_operation"] == v.OperationID
	}
	if !froze {
		t.Fatal("no freeze.set event for the over-charged operation")
	}
	if rep, err := e.db.Verify(ctx); err != nil || !rep.OK {
		t.Fatalf("audit: %+v %v", rep, err)
	}
}
