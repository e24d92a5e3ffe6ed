package server

import (
	"context"
	"strings"
	"testing"

	"github.com/tollgatehq/tollgate/ledger"
)

// TestFreshInstallHasADailyBudget: the embedded defaults hold spending to
// 50 USD a day, start-up says so, a limit changed with the CLI survives a
// restart on the defaults, and spend_status shows spend and holds with or
// without budgets.
func TestFreshInstallHasADailyBudget(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, withConfig(func(c *Config) { c.Approvals.Wait = 0 }))
	sts, err := e.db.BudgetStatuses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(sts) != 1 || sts[0].Budget.Scope != ledger.GlobalScope || sts[0].Budget.Window != ledger.WindowDay || sts[0].Budget.Limit.String() != "50.00 USD" {
		t.Fatalf("budgets of a fresh install: %+v", sts)
	}
	if logs := e.logs.String(); !strings.Contains(logs, `msg="budget in force" scope=global window=day limit="50.00 USD"`) {
		t.Errorf("start-up does not print the budget in force:\n%s", logs)
	}

	// A change made with the CLI is not undone by the next start.
	raised, _ := BudgetConfig{Scope: "global", Window: "day", Limit: "80.00"}.Budget()
	if err := e.db.SetBudget(ctx, raised, "cli:carol"); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.applyConfig(ctx); err != nil {
		t.Fatal(err)
	}
	if sts, _ := e.db.BudgetStatuses(ctx); len(sts) != 1 || sts[0].Budget.Limit.String() != "80.00 USD" {
		t.Fatalf("the default budget overwrote the one set with the CLI: %+v", sts)
	}

	// Spend and holds show with no budget at all.
	if err := e.db.DeleteBudget(ctx, ledger.GlobalScope, ledger.WindowDay, "cli:carol"); err != nil {
		t.Fatal(err)
	}
	if v := opView(t, e.call(webBot, "deploy_worker", map[string]any{
		"script_name": "web-spend", "module": okModule, "environment": "production", "reason": reason,
	})); v.Status != "awaiting_approval" {
		t.Fatalf("production deploy %+v", v)
	}
	st := structured[struct {
		Budgets []any `json:"budgets"`
		Spend   []struct {
			Scope, Window string
			Held          struct{ Display string }
		} `json:"spend"`
	}](t, e.call(webBot, "spend_status", map[string]any{}))
	if len(st.Budgets) != 0 {
		t.Errorf("budgets %+v", st.Budgets)
	}
	held := map[string]string{}
	for _, sp := range st.Spend {
		held[sp.Scope+"/"+sp.Window] = sp.Held.Display
	}
	for _, k := range []string{"agent:web-bot/day", "team:web/month", "global/total"} {
		if held[k] != "5.00 USD" {
			t.Errorf("%s holds %q, want the Workers plan's 5.00 USD (spend %+v)", k, held[k], st.Spend)
		}
	}
}
