package ledger

import (
	"context"
	"testing"
	"time"
)

// TestSpendWithoutBudgets: spend and holds are readable per scope and per
// group whether or not any budget exists, each operation counted once.
func TestSpendWithoutBudgets(t *testing.T) { t.Parallel(); eachBackend(t, testSpendWithoutBudgets) }

func testSpendWithoutBudgets(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk := newClock(time.Date(2026, 11, 21, 23, 0, 0, 0, time.UTC))
	db := openTest(t, WithClock(clk.Now))

	settle := func(agent, team, amount string) {
		t.Helper()
		op, err := pipelineOp(ctx, db, agent, team, "register_domain", usd(amount))
		if err != nil {
			t.Fatal(err)
		}
		if err := execute(ctx, db, op.ID, true); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Settle(ctx, op.ID, SettleRequest{Actual: usd(amount)}); err != nil {
			t.Fatal(err)
		}
	}
	settle("web-bot", "web", "12.18") // yesterday
	clk.Advance(2 * time.Hour)        // 2026-11-22 01:00
	settle("web-bot", "web", "10.44")
	settle("ops-bot", "ops", "2.00")
	settle("lone-bot", "", "1.00")
	if _, err := pipelineOp(ctx, db, "web-bot", "web", "register_domain", usd("14.18")); err != nil { // held
		t.Fatal(err)
	}

	totals, err := db.SpendTotals(ctx, AgentScope("web-bot"), TeamScope("web"), GlobalScope)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][2]int64{}
	for _, st := range totals {
		got[string(st.Scope)+"/"+string(st.Window)] = [2]int64{st.Spent.Micros, st.Held.Micros}
	}
	for k, want := range map[string][2]int64{
		"agent:web-bot/day": {10_440_000, 14_180_000}, "agent:web-bot/month": {22_620_000, 14_180_000}, "agent:web-bot/total": {22_620_000, 14_180_000},
		"team:web/day": {10_440_000, 14_180_000}, "global/day": {13_440_000, 14_180_000}, "global/total": {25_620_000, 14_180_000},
	} {
		if got[k] != want {
			t.Errorf("%s: spent/held %v, want %v", k, got[k], want)
		}
	}
	if len(totals) != 9 || totals[0].Scope != AgentScope("web-bot") || totals[8].Scope != GlobalScope {
		t.Errorf("totals %+v", totals)
	}

	for _, tc := range []struct {
		by    string
		since time.Time
		want  map[string][3]int64 // spent, held, operations
	}{
		{ByAgent, time.Time{}, map[string][3]int64{
			"agent:web-bot": {22_620_000, 14_180_000, 3}, "agent:ops-bot": {2_000_000, 0, 1}, "agent:lone-bot": {1_000_000, 0, 1},
		}},
		{ByTeam, time.Time{}, map[string][3]int64{"team:web": {22_620_000, 14_180_000, 3}, "team:ops": {2_000_000, 0, 1}}},
		{ByDay, time.Time{}, map[string][3]int64{"2026-11-21": {12_180_000, 0, 1}, "2026-11-22": {13_440_000, 14_180_000, 4}}},
		{ByAgent, clk.Now().Add(-time.Hour), map[string][3]int64{
			"agent:web-bot": {10_440_000, 14_180_000, 2}, "agent:ops-bot": {2_000_000, 0, 1}, "agent:lone-bot": {1_000_000, 0, 1},
		}},
	} {
		lines, err := db.SpendReport(ctx, tc.since, tc.by)
		if err != nil {
			t.Fatal(err)
		}
		if len(lines) != len(tc.want) {
			t.Errorf("by %s since %v: %+v", tc.by, tc.since, lines)
		}
		for _, l := range lines {
			if w := tc.want[l.Key]; [3]int64{l.Spent.Micros, l.Held.Micros, int64(l.Operations)} != w || l.Spent.Currency != "USD" {
				t.Errorf("by %s since %v: %s = %+v, want %v", tc.by, tc.since, l.Key, l, w)
			}
		}
	}
	if _, err := db.SpendReport(ctx, time.Time{}, "month"); err == nil {
		t.Error("a report by month was accepted")
	}
}
