package server

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/tools"
)

// TestRaceForTheTeamBudget is issue 4's race test, through the real
// pipeline (MCP tool call, Cerbos, ledger, approvals, cloudflare-go against
// the sandbox): 200 goroutines across 20 agents of one team race to register
// distinct names whose total is far above the team's budget. Afterwards the
// ledger must add up to the cent: what was held never exceeded the limit,
// nothing that would have fitted was refused, every success is settled and
// registered, everything else is released, and nothing is left in between.
func TestRaceForTheTeamBudget(t *testing.T) {
	t.Parallel()
	const (
		agents   = 20
		perAgent = 10
		limit    = 150_000_000 // 150.00 USD
		team     = "swarm"
	)
	prices := map[string]int64{"dev": 12_180_000, "app": 14_180_000, "com": 10_440_000}
	tlds := []string{"dev", "app", "com"}
	e := newEnv(t,
		withConfig(func(c *Config) {
			c.Approvals.Wait = 0
			for i := range agents {
				c.Agents = append(c.Agents, AgentConfig{Name: fmt.Sprintf("racer-%02d", i), Team: team, Roles: []string{"agent"}, Owner: "alice"})
			}
			c.Budgets = []BudgetConfig{{Scope: "team:" + team, Window: "day", Limit: "150.00"}}
		}),
		// Auto-freeze would turn an agent's later budget blocks into freeze
		// blocks; the outcome is the same (denied, nothing held) but this
		// test is about the budget arithmetic.
		withLedger(ledger.WithAutoFreeze(0, 0)),
	)
	ctx := context.Background()

	// Phase 1: the race to reserve. Some names are ones the registry will
	// reject after approval ("fail-" prefix), so execution failures race too.
	start := time.Now()
	type call struct{ agent, domain string }
	var calls []call
	for i := range agents {
		for j := range perAgent {
			k := i*perAgent + j
			prefix := ""
			if k%9 == 4 {
				prefix = "fail-"
			}
			calls = append(calls, call{fmt.Sprintf("racer-%02d", i), fmt.Sprintf("%sswarm-%02d-%d.%s", prefix, i, j, tlds[k%3])})
		}
	}
	views := make([]tools.OperationView, len(calls))
	var wg sync.WaitGroup
	for n, c := range calls {
		wg.Go(func() {
			views[n] = opView(t, e.call(c.agent, "register_domain", registerArgs(c.domain)))
		})
	}
	wg.Wait()
	t.Logf("200 racing calls answered in %v", time.Since(start))
	// A call follows its Operation at most maxExecutionWait before it
	// answers with the Operation as it stands (how_to_resume says to call
	// get_operation). Under heavy load (-race, a full package run, a shared
	// machine) planning and reserving 200 calls through one PDP can take
	// longer, so a call may legitimately answer "planned", "authorized" or
	// "reserved": such a call is followed here, as a client would, until it
	// rests (awaiting a human, or ended), and classified by that.
	settling := 0
	for n, v := range views {
		if v.Status == "awaiting_approval" || ledger.State(v.Status).Terminal() {
			continue
		}
		settling++
		views[n] = restingView(t, e, v.OperationID)
	}
	t.Logf("%d calls answered before their Operation rested and were followed", settling)

	var pending []tools.OperationView
	var heldQuotes int64
	minBlocked := int64(-1)
	for n, v := range views {
		domain := calls[n].domain
		price := prices[domain[strings.LastIndexByte(domain, '.')+1:]]
		switch {
		case v.Status == "awaiting_approval":
			if v.Quote == nil || v.Quote.Micros != price {
				t.Fatalf("%s quoted %+v, want %d", domain, v.Quote, price)
			}
			pending = append(pending, v)
			heldQuotes += price
		case v.Status == "denied" && v.ErrorCode == "budget_exceeded":
			if minBlocked < 0 || price < minBlocked {
				minBlocked = price
			}
		default:
			t.Fatalf("%s: unexpected outcome %s %s: %s", domain, v.Status, v.ErrorCode, v.Error)
		}
	}
	spent, held := spend(t, e, "team:"+team)
	if spent != 0 || held != heldQuotes || held > limit {
		t.Fatalf("after the race: spent %d held %d; want 0 spent and held = the %d pending quotes (%d) <= %d", spent, held, len(pending), heldQuotes, limit)
	}
	// Holds only grew during the race, so every refusal saw at most the
	// final holds: a refused name must not fit in what is left now, or
	// room was lost.
	if minBlocked < 0 || minBlocked <= limit-held {
		t.Fatalf("refused a %d name with %d of room left (held %d of %d)", minBlocked, limit-held, held, limit)
	}
	if len(e.sb.Registrations()) != 0 {
		t.Fatal("registered before any approval")
	}

	// Phase 2: decide every pending request at once through the CLI
	// approver's path: most approved, every fifth denied.
	for n, v := range pending {
		wg.Go(func() {
			outcome, why := approvals.OutcomeApprove, ""
			if n%5 == 0 {
				outcome, why = approvals.OutcomeDeny, "one launch domain per sprint"
			}
			r := e.pendingApproval(v.OperationID)
			if _, err := e.srv.Approvals().Decide(ctx, approvals.VoteInput{RequestID: r.ID, Approver: "bob", Via: approvals.ViaCLI, Outcome: outcome, Reason: why}); err != nil {
				t.Errorf("%s %s: %v", outcome, r.ID, err)
			}
		})
	}
	wg.Wait()

	// Wait until no operation of the team is anywhere but terminal.
	deadline := time.Now().Add(hangGuard)
	for {
		ops := teamOps(t, e, team)
		open := slices.DeleteFunc(slices.Clone(ops), func(op ledger.Operation) bool { return op.State.Terminal() })
		if len(open) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d operations stuck, e.g. %s in %s", len(open), open[0].ID, open[0].State)
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Logf("all 200 operations terminal after %v", time.Since(start))

	ops := teamOps(t, e, team)
	if len(ops) != len(calls) {
		t.Fatalf("%d operations for %d distinct calls", len(ops), len(calls))
	}
	var charged int64
	var succeeded []string
	counts := map[string]int{}
	for _, op := range ops {
		counts[string(op.State)+"/"+op.ErrorCode]++
		if op.State == ledger.StateSucceeded {
			if op.Charged == nil || op.Charged.Micros != op.Quote.Micros {
				t.Errorf("%s succeeded with charge %+v, quote %s", op.ID, op.Charged, op.Quote)
				continue
			}
			charged += op.Charged.Micros
			succeeded = append(succeeded, strings.TrimPrefix(op.Resource, "domain:"))
			if n := eventCount(t, e, op.ID, ledger.EventBudgetSettled); n != 1 {
				t.Errorf("%s settled %d times", op.ID, n)
			}
			continue
		}
		if op.Charged != nil {
			t.Errorf("%s is %s but charged %+v", op.ID, op.State, op.Charged)
		}
		// Everything that held something released it, exactly once.
		if op.Quote.Micros > 0 {
			if n := eventCount(t, e, op.ID, ledger.EventBudgetReleased); n != 1 {
				t.Errorf("%s (%s/%s) released %d times", op.ID, op.State, op.ErrorCode, n)
			}
		}
	}
	t.Logf("outcomes: %v", counts)
	spent, held = spend(t, e, "team:"+team)
	if held != 0 || spent != charged || spent > limit {
		t.Fatalf("at the end: spent %d held %d, want spent = the charges (%d) <= %d and nothing held", spent, held, charged, limit)
	}
	if counts["succeeded/"] == 0 || counts["denied/denied_by_approver"] == 0 || counts["denied/budget_exceeded"] == 0 {
		t.Fatalf("the race did not exercise every path: %v", counts)
	}

	// The sandbox owns exactly the succeeded names, each bought once.
	var registered []string
	for _, r := range e.sb.Registrations() {
		registered = append(registered, r.Domain)
	}
	slices.Sort(registered)
	slices.Sort(succeeded)
	if !slices.Equal(registered, succeeded) {
		t.Fatalf("sandbox registrations %v, succeeded operations %v", registered, succeeded)
	}
	// One registration request per approved operation, none for the rest.
	if n, approved := sandboxCalls(e, "POST", "/registrar/registrations"), len(pending)-counts["denied/denied_by_approver"]; n != approved {
		t.Fatalf("%d registration requests for %d approved operations (%v)", n, approved, counts)
	}
	for _, tok := range operationTokens(e) {
		{
			t.Errorf("token %s outlived its operation", tok.Name)
		}
	}
	if rep, err := e.db.Verify(ctx); err != nil || !rep.OK {
		t.Fatalf("audit chain: %+v %v", rep, err)
	}
}

// teamOps lists every operation of a team.
func teamOps(t *testing.T, e *testEnv, team string) []ledger.Operation {
	t.Helper()
	var out []ledger.Operation
	cursor := ""
	for {
		ops, next, err := e.db.ListOperations(context.Background(), ledger.OperationQuery{Team: team, Cursor: cursor, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ops...)
		if next == "" {
			return out
		}
		cursor = next
	}
}

// restingView waits until an Operation awaits a human or has ended and
// returns its view (hangGuard is only a guard against a hang).
func restingView(t *testing.T, e *testEnv, id string) tools.OperationView {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for {
		op, err := e.db.Operation(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if op.State == ledger.StateAwaitingApproval || op.State.Terminal() {
			return tools.ViewOf(op)
		}
		if time.Now().After(deadline) {
			t.Fatalf("operation %s still %s", id, op.State)
		}
		time.Sleep(25 * time.Millisecond)
	}
}
