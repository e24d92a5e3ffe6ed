package server

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgatehq/tollgate/approvals"
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
