package server

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/tools"
)

func TestRegisterWaitsForApprovalThenSettles(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) { c.Approvals.Wait = 0 }))

	res := e.call(webBot, "register_domain", registerArgs("launch-page.dev"))
	if res.IsError {
		t.Fatalf("register: %s", text(res))
	}
	v := opView(t, res)
	if v.Status != "awaiting_approval" || v.ExpiresAt == nil || !strings.Contains(v.HowToResume, "get_operation") {
		t.Fatalf("want awaiting_approval with expiry and how_to_resume, got %+v", v)
	}
	if v.Quote == nil || v.Quote.Display != "12.18 USD" {
		t.Fatalf("quote %+v, want the live registrar price 12.18 USD", v.Quote)
	}
	if n := len(e.sb.Registrations()); n != 0 {
		t.Fatalf("registered before approval: %d", n)
	}
	sts, err := e.db.BudgetStatuses(context.Background(), ledger.TeamScope("web"))
	if err != nil {
		t.Fatal(err)
	}
	_ = sts

	out := e.approve(v.OperationID, "bob")
	if !out.Final {
		t.Fatalf("one approver is the quorum here: %+v", out)
	}
	op := e.waitState(v.OperationID, ledger.StateSucceeded)
	if op.Charged == nil || op.Charged.Micros != 12_180_000 {
		t.Fatalf("charged %+v, want 12.18 USD", op.Charged)
	}
	regs := e.sb.Registrations()
	if len(regs) != 1 || regs[0].Domain != "launch-page.dev" {
		t.Fatalf("sandbox registrations %+v", regs)
	}
	// The result is readable later, with its story.
	got := opView(t, e.call(webBot, "get_operation", map[string]any{"operation_id": v.OperationID, "history": true}))
	if got.Status != "succeeded" || got.Approval == nil || got.Approval.State != "approved" || len(got.History) < 5 {
		t.Fatalf("get_operation %+v", got)
	}
	// No minted token outlives its operation; the chain verifies.
	for _, tok := range operationTokens(e) {
		{
			t.Fatalf("token %s still alive after the operation", tok.Name)
		}
	}
	rep, err := e.db.Verify(context.Background())
	if err != nil || !rep.OK {
		t.Fatalf("audit chain: %+v %v", rep, err)
	}
	requireEvents(t, e, v.OperationID, "operation.created", "policy.decision", "budget.reserved", "approval.requested",
		"approval.decided", "token.minted", "cloudflare.request", "token.revoked", "budget.settled")
}

// requireEvents asserts the operation's audit story contains each type.
func requireEvents(t *testing.T, e *testEnv, opID string, types ...string) {
	t.Helper()
	seen := map[string]bool{}
	if err := e.db.Events(context.Background(), ledger.EventQuery{OperationID: opID}, func(ev ledger.Event) error {
		seen[ev.Type] = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, typ := range types {
		if !seen[typ] {
			t.Errorf("operation %s has no %s audit event (has %v)", opID, typ, seen)
		}
	}
}

func TestPolicyDenyHasNoSideEffect(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	before := len(e.sb.Requests())
	res := e.call(webBot, "register_domain", registerArgs("cheap-landing.xyz"))
	if !res.IsError {
		t.Fatalf("want a refusal, got %s", text(res))
	}
	if !strings.Contains(text(res), "extension .xyz is not on the allowlist: dev, app, com") {
		t.Fatalf("refusal does not carry the policy's reason: %s", text(res))
	}
	v := opView(t, res)
	if v.Status != "denied" || v.ErrorCode != "policy_denied" {
		t.Fatalf("operation %+v", v)
	}
	if after := len(e.sb.Requests()); after != before {
		t.Fatalf("a denied call reached Cloudflare: %d requests", after-before)
	}
	rows := 0
	_ = e.db.Events(context.Background(), ledger.EventQuery{OperationID: v.OperationID}, func(ev ledger.Event) error {
		if ev.Type == "operation.state" && !strings.Contains(string(ev.Data), `"denied"`) && !strings.Contains(string(ev.Data), `"planned"`) {
			t.Errorf("operation moved past denied: %s", ev.Data)
		}
		rows++
		return nil
	})
	if rows == 0 {
		t.Fatal("no audit trail for the denied operation")
	}
}

func TestPreviewDeployRunsWithoutApproval(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	res := e.call(webBot, "deploy_worker", map[string]any{
		"script_name": "web-landing", "module": okModule, "compatibility_date": "2025-01-01",
		"environment": "preview", "reason": reason,
	})
	if res.IsError {
		t.Fatal(text(res))
	}
	v := opView(t, res)
	if v.Status != "succeeded" {
		t.Fatalf("status %s: %s", v.Status, v.Error)
	}
	dr := structured[tools.DeployResult](t, &mcp.CallToolResult{StructuredContent: v.Result})
	if dr.DeployedName != "web-landing-preview" || !strings.HasSuffix(dr.URL, ".workers.dev") || dr.Etag == "" {
		t.Fatalf("deploy result %+v", dr)
	}
	if scripts := e.sb.Scripts(); len(scripts) != 1 || scripts[0].Name != "web-landing-preview" {
		t.Fatalf("sandbox scripts %+v", scripts)
	}
}

func TestWorkerNameOutsideTeamPrefixIsDenied(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	res := e.call(webBot, "deploy_worker", map[string]any{
		"script_name": "ops-dashboard", "module": okModule, "compatibility_date": "2025-01-01",
		"environment": "preview", "reason": reason,
	})
	if !res.IsError || !strings.Contains(text(res), "web-") {
		t.Fatalf("want a deny naming the team prefix, got %s", text(res))
	}
	if len(e.sb.Scripts()) != 0 {
		t.Fatal("deployed despite the deny")
	}
}

func TestConcurrentIdenticalCallsMakeOneRegistration(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) { c.Approvals.Wait = 0 }))
	args := map[string]any{"domain": "race-once.dev", "reason": reason, "idempotency_key": "launch-1"}
	const n = 8
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids[i] = opView(t, e.call(webBot, "register_domain", args)).OperationID
		}()
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] || id == "" {
			t.Fatalf("identical calls produced different operations: %v", ids)
		}
	}
	e.approve(ids[0], "bob")
	e.waitState(ids[0], ledger.StateSucceeded)
	// And again after success: still the same operation, no second charge.
	again := opView(t, e.call(webBot, "register_domain", args))
	if again.OperationID != ids[0] || again.Status != "succeeded" {
		t.Fatalf("retry after success: %+v", again)
	}
	if regs := e.sb.Registrations(); len(regs) != 1 {
		t.Fatalf("%d registrations, want 1", len(regs))
	}
	ops, _, err := e.db.ListOperations(context.Background(), ledger.OperationQuery{Agent: webBot})
	if err != nil || len(ops) != 1 {
		t.Fatalf("%d operations, want 1 (%v)", len(ops), err)
	}
}

func TestSameKeyDifferentArgumentsIsRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) { c.Approvals.Wait = 0 }))
	first := opView(t, e.call(webBot, "register_domain", map[string]any{"domain": "bound-args.dev", "reason": reason, "idempotency_key": "k-1"}))
	res := e.call(webBot, "register_domain", map[string]any{"domain": "bound-args.dev", "years": 3, "reason": reason, "idempotency_key": "k-1"})
	if !res.IsError || !strings.Contains(text(res), "already used for different arguments") {
		t.Fatalf("want an idempotency conflict, got %s", text(res))
	}
	// The pending approval is still bound to the first arguments.
	r := e.pendingApproval(first.OperationID)
	if r.State != approvals.StatePending || !strings.Contains(r.Summary, "1 year") {
		t.Fatalf("approval changed: %+v", r)
	}
}

func TestDenialReleasesTheHold(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) {
		c.Approvals.Wait = 0
		c.Budgets = []BudgetConfig{{Scope: "team:web", Window: "day", Limit: "20.00"}}
	}))
	v := opView(t, e.call(webBot, "register_domain", registerArgs("denied-later.dev")))
	assertHeld(t, e, "team:web", 12_180_000)
	r := e.pendingApproval(v.OperationID)
	if _, err := e.srv.Approvals().Decide(context.Background(), approvals.VoteInput{RequestID: r.ID, Approver: "bob", Via: approvals.ViaCLI, Outcome: approvals.OutcomeDeny, Reason: "we already own a launch domain"}); err != nil {
		t.Fatal(err)
	}
	op := e.waitState(v.OperationID, ledger.StateDenied)
	if op.ErrorCode != "denied_by_approver" || !strings.Contains(op.Error, "we already own a launch domain") {
		t.Fatalf("denial %q: %q", op.ErrorCode, op.Error)
	}
	assertHeld(t, e, "team:web", 0)
	if len(e.sb.Registrations()) != 0 {
		t.Fatal("registered despite the denial")
	}
}

func assertHeld(t *testing.T, e *testEnv, scope string, micros int64) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for {
		sts, err := e.db.BudgetStatuses(context.Background(), ledger.Scope(scope))
		if err != nil {
			t.Fatal(err)
		}
		if len(sts) > 0 && sts[0].Held.Micros == micros {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s held %+v, want %d micros", scope, sts, micros)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPriceRiseAfterApprovalAbortsAndReleases(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) {
		c.Approvals.Wait = 0
		c.Budgets = []BudgetConfig{{Scope: "team:web", Window: "day", Limit: "40.00"}}
	}))
	v := opView(t, e.call(webBot, "register_domain", registerArgs("price-moves.app")))
	if err := e.sb.SetPrice("app", "19.99", "19.99"); err != nil {
		t.Fatal(err)
	}
	e.approve(v.OperationID, "bob")
	op := e.waitState(v.OperationID, ledger.StateFailed)
	if op.ErrorCode != "price_changed" || !strings.Contains(op.Error, "19.99 USD") {
		t.Fatalf("failure %s: %s", op.ErrorCode, op.Error)
	}
	assertHeld(t, e, "team:web", 0)
	if len(e.sb.Registrations()) != 0 {
		t.Fatal("bought at the higher price")
	}
}

func TestBudgetBlockNamesTheBudget(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) {
		c.Approvals.Wait = 0
		c.Budgets = []BudgetConfig{{Scope: "team:web", Window: "day", Limit: "10.00"}}
	}))
	est := structured[tools.EstimateResult](t, e.call(webBot, "estimate_cost", map[string]any{"action": "register_domain", "params": map[string]any{"domain": "over-budget.dev"}}))
	if !est.WouldBlock || len(est.Budgets) == 0 || est.Budgets[0].Fits == nil || *est.Budgets[0].Fits {
		t.Fatalf("estimate should predict the block: %+v", est)
	}
	res := e.call(webBot, "register_domain", registerArgs("over-budget.dev"))
	v := opView(t, res)
	if !res.IsError || v.Status != "denied" || v.ErrorCode != "budget_exceeded" {
		t.Fatalf("want a budget block, got %+v", v)
	}
	for _, want := range []string{"team:web", "10.00 USD", "12.18 USD", "resets"} {
		if !strings.Contains(v.Error, want) {
			t.Errorf("block message %q does not mention %q", v.Error, want)
		}
	}
	if e.registrarRequests() == 0 {
		t.Fatal("the quote should have been fetched live")
	}
	if len(e.sb.Registrations()) != 0 {
		t.Fatal("registered despite the block")
	}
}

func TestProgressNotificationsWhileWaiting(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) { c.Approvals.Wait = 2 * time.Second }))
	var mu sync.Mutex
	var got []string
	c := e.inProcessClient(t)
	c.OnNotification(func(n mcp.JSONRPCNotification) {
		if n.Method == "notifications/progress" {
			mu.Lock()
			got = append(got, fmt.Sprint(n.Params.AdditionalFields["message"]))
			mu.Unlock()
		}
	})
	req := mcp.CallToolRequest{}
	req.Params.Name = "register_domain"
	req.Params.Arguments = registerArgs("progress-demo.dev")
	req.Params.Meta = &mcp.Meta{ProgressToken: "p1"}
	res, err := c.CallTool(e.ctxAs(webBot), req)
	if err != nil {
		t.Fatal(err)
	}
	if v := opView(t, res); v.Status != "awaiting_approval" {
		t.Fatalf("status %s after the wait, want awaiting_approval", v.Status)
	}
	// Notifications may still be on their way when the result is in.
	for deadline := time.Now().Add(hangGuard); ; time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		joined := strings.Join(got, " | ")
		mu.Unlock()
		if strings.Contains(joined, "waiting for a human approver") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("progress notifications %q do not say what the call waits for", joined)
		}
	}
}

// TestListOperationsPagesThroughTheTool pages through list_operations and
// shows only the caller's own operations.
func TestListOperationsPagesThroughTheTool(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) { c.Approvals.Wait = 0 }))
	for _, d := range []string{"page-one.dev", "page-two.dev", "page-three.dev"} {
		e.call(webBot, "register_domain", registerArgs(d))
	}
	e.call(opsBot, "register_domain", registerArgs("not-yours.dev"))
	first := structured[tools.OperationList](t, e.call(webBot, "list_operations", map[string]any{"limit": 2}))
	if len(first.Operations) != 2 || first.NextCursor == "" {
		t.Fatalf("first page %+v", first)
	}
	second := structured[tools.OperationList](t, e.call(webBot, "list_operations", map[string]any{"limit": 2, "cursor": first.NextCursor}))
	if len(second.Operations) != 1 || second.NextCursor != "" {
		t.Fatalf("second page %+v", second)
	}
	seen := map[string]bool{}
	for _, op := range append(first.Operations, second.Operations...) {
		if seen[op.OperationID] || op.Resource == "domain:not-yours.dev" {
			t.Fatalf("duplicate or foreign operation %s %s", op.OperationID, op.Resource)
		}
		seen[op.OperationID] = true
	}
	bad := e.call(webBot, "list_operations", map[string]any{"cursor": "not-a-cursor"})
	if !bad.IsError {
		t.Fatalf("a bad cursor was accepted: %s", text(bad))
	}
	// Another agent's operation is "not found", not "forbidden".
	theirs := structured[tools.OperationList](t, e.call(opsBot, "list_operations", map[string]any{})).Operations[0].OperationID
	res := e.call(webBot, "get_operation", map[string]any{"operation_id": theirs})
	if !res.IsError || !strings.Contains(text(res), "no operation") {
		t.Fatalf("reading another agent's operation: %s", text(res))
	}
}

// TestPriceDependentDenyOnlyReads: a refusal that needs the price (here the
// 50 USD ceiling) costs one read-only quote and nothing else: no
// registration, no token left alive.
func TestPriceDependentDenyOnlyReads(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	res := e.call(webBot, "register_domain", map[string]any{"domain": "pricey.app", "years": 4, "reason": reason})
	v := opView(t, res)
	if v.Status != "denied" || !strings.Contains(v.Error, "above the per-registration ceiling") {
		t.Fatalf("want a price-ceiling deny, got %+v", v)
	}
	for _, r := range e.sb.Requests() {
		if strings.Contains(r.Path, "/registrar/registrations") {
			t.Fatalf("a denied call reached the registration endpoint: %s %s", r.Method, r.Path)
		}
	}
	for _, tok := range operationTokens(e) {
		{
			t.Fatalf("token %s outlived the quote", tok.Name)
		}
	}
	// The price check is in the operation's story; the shared quote token
	// it used was minted (and is revoked) once, outside any operation.
	requireEvents(t, e, v.OperationID, "cloudflare.request", "policy.decision")
}

// TestPriceChecksAreRateLimitedPerAgent: a runaway agent cannot turn price
// checks into an unbounded stream of minted tokens and Cloudflare calls.
func TestPriceChecksAreRateLimitedPerAgent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) { c.QuotesPerMinute = 3 }))
	for i := range 3 {
		if res := e.call(webBot, "check_domain", map[string]any{"domain": fmt.Sprintf("rate-%d.dev", i)}); res.IsError {
			t.Fatalf("check %d within the cap: %s", i, text(res))
		}
	}
	before := len(e.sb.Requests())
	res := e.call(webBot, "check_domain", map[string]any{"domain": "rate-4.dev"})
	if !res.IsError || !strings.Contains(text(res), "at most 3 registrar price checks a minute") {
		t.Fatalf("fourth check: %s", text(res))
	}
	if len(e.sb.Requests()) != before {
		t.Fatal("a refused price check still reached Cloudflare")
	}
	// Another agent has its own allowance.
	if res := e.call(opsBot, "check_domain", map[string]any{"domain": "rate-ops.dev"}); res.IsError {
		t.Fatalf("another agent: %s", text(res))
	}
}
