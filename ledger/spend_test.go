package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tollgatehq/tollgate/ledger/money"
)

var nov22 = time.Date(2026, 11, 22, 15, 4, 5, 0, time.UTC)

func setBudget(t testing.TB, db *DB, s Scope, w Window, limit string) {
	t.Helper()
	if err := db.SetBudget(context.Background(), Budget{Scope: s, Window: w, Limit: usd(limit)}, "cli:alice"); err != nil {
		t.Fatal(err)
	}
}

func reserveOK(t testing.TB, db *DB, agent, team, action, amount string) Operation {
	t.Helper()
	op, err := pipelineOp(context.Background(), db, agent, team, action, usd(amount))
	if err != nil {
		t.Fatalf("reserve %s for %s: %v", amount, agent, err)
	}
	return op
}

func settleOK(t testing.TB, db *DB, id, actual string) Operation {
	t.Helper()
	ctx := context.Background()
	if err := execute(ctx, db, id, true); err != nil {
		t.Fatal(err)
	}
	op, err := db.Settle(ctx, id, SettleRequest{Actual: usd(actual), Result: json.RawMessage(`{"ok":true}`)})
	if err != nil {
		t.Fatal(err)
	}
	return op
}

func statusOf(t testing.TB, db *DB, s Scope, w Window) BudgetStatus {
	t.Helper()
	st, err := db.BudgetStatuses(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range st {
		if x.Budget.Window == w {
			return x
		}
	}
	t.Fatalf("no status for %s %s in %+v", s, w, st)
	return BudgetStatus{}
}

func TestReserveSettleRelease(t *testing.T) { t.Parallel(); eachBackend(t, testReserveSettleRelease) }

func testReserveSettleRelease(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk := newClock(nov22)
	db := openTest(t, WithClock(clk.Now))
	setBudget(t, db, AgentScope("web-bot"), WindowDay, "20")
	setBudget(t, db, TeamScope("web"), WindowMonth, "100")
	setBudget(t, db, GlobalScope, WindowTotal, "1000")

	op := reserveOK(t, db, "web-bot", "web", "register_domain", "8.57")
	if op.State != StateReserved || op.Quote != usd("8.57") {
		t.Fatalf("reserved op %+v", op)
	}
	for _, s := range []struct {
		scope Scope
		win   Window
		held  string
		rem   string
	}{
		{AgentScope("web-bot"), WindowDay, "8.57", "11.43"},
		{TeamScope("web"), WindowMonth, "8.57", "91.43"},
		{GlobalScope, WindowTotal, "8.57", "991.43"},
	} {
		st := statusOf(t, db, s.scope, s.win)
		if st.Held != usd(s.held) || st.Spent != usd("0") || st.Remaining != usd(s.rem) {
			t.Errorf("%s %s: %+v", s.scope, s.win, st)
		}
	}
	mustInvariants(t, db, true)

	settled := settleOK(t, db, op.ID, "8.00") // charged less than quoted
	if settled.State != StateSucceeded || settled.Charged == nil || *settled.Charged != usd("8") || string(settled.Result) != `{"ok":true}` {
		t.Fatalf("settled op %+v", settled)
	}
	st := statusOf(t, db, AgentScope("web-bot"), WindowDay)
	if st.Spent != usd("8") || st.Held != usd("0") || st.Remaining != usd("12") || st.Period != "2026-11-22" ||
		!st.ResetsAt.Equal(time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("after settle: %+v", st)
	}
	if st := statusOf(t, db, TeamScope("web"), WindowMonth); st.Period != "2026-11" || !st.ResetsAt.Equal(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("month status %+v", st)
	}
	if st := statusOf(t, db, GlobalScope, WindowTotal); st.Period != "total" || st.ResetsAt != nil {
		t.Fatalf("total status %+v", st)
	}

	// A failure releases: nothing spent, nothing held.
	op2 := reserveOK(t, db, "web-bot", "web", "register_domain", "5")
	if st := statusOf(t, db, AgentScope("web-bot"), WindowDay); st.Held != usd("5") {
		t.Fatalf("held %v", st.Held)
	}
	rel, err := db.Release(ctx, op2.ID, StateFailed, "cloudflare_error", "registrar said 500")
	if err != nil || rel.State != StateFailed || rel.Charged != nil {
		t.Fatalf("release: %+v %v", rel, err)
	}
	if st := statusOf(t, db, AgentScope("web-bot"), WindowDay); st.Held != usd("0") || st.Spent != usd("8") {
		t.Fatalf("after release %+v", st)
	}
	// Settling twice (or settling a released op) never charges again.
	if _, err := db.Settle(ctx, op.ID, SettleRequest{Actual: usd("8")}); !errors.Is(err, ErrStateConflict) {
		t.Fatalf("second settle: %v", err)
	}
	if _, err := db.Settle(ctx, op2.ID, SettleRequest{Actual: usd("5")}); !errors.Is(err, ErrStateConflict) {
		t.Fatalf("settle released: %v", err)
	}
	if st := statusOf(t, db, AgentScope("web-bot"), WindowDay); st.Spent != usd("8") {
		t.Fatalf("spent changed: %+v", st)
	}
	mustInvariants(t, db, true)
}

func TestReserveBlockedBudgetMessage(t *testing.T) {
	t.Parallel()
	eachBackend(t, testReserveBlockedBudgetMessage)
}

func testReserveBlockedBudgetMessage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openTest(t, WithClock(newClock(nov22).Now))
	setBudget(t, db, TeamScope("web"), WindowDay, "25")
	settleOK(t, db, reserveOK(t, db, "a1", "web", "register_domain", "20").ID, "20")
	reserveOK(t, db, "a2", "web", "register_domain", "4")

	op, err := pipelineOp(ctx, db, "a3", "web", "register_domain", usd("8.57"))
	var be *BlockedError
	if !errors.As(err, &be) {
		t.Fatalf("err = %v, want *BlockedError", err)
	}
	want := "budget team:web (day) is 25.00 USD with 20.00 USD spent and 4.00 USD held; 8.57 USD does not fit (resets 2026-11-23T00:00:00Z)"
	if be.Error() != want {
		t.Fatalf("message\n got %q\nwant %q", be.Error(), want)
	}
	if be.Kind != BlockBudget || be.Scope != TeamScope("web") || be.Window != WindowDay || be.Limit != usd("25") ||
		be.Spent != usd("20") || be.Held != usd("4") || be.Requested != usd("8.57") || be.AutoFroze {
		t.Fatalf("block %+v", be)
	}
	if op.State != StateDenied || op.ErrorCode != "budget_exceeded" || op.Error != want {
		t.Fatalf("blocked op %+v", op)
	}
	// Exactly what fits still fits (spent + held + amount == limit).
	reserveOK(t, db, "a3", "web", "register_domain", "1")
	if _, err := pipelineOp(ctx, db, "a3", "web", "register_domain", usd("0.000001")); !errors.As(err, &be) {
		t.Fatalf("one micro over: %v", err)
	}
	// The block is recorded, flagged and audited.
	hist, _ := db.History(ctx, op.ID)
	var blocked map[string]any
	for _, e := range hist {
		if e.Type == EventBudgetBlocked {
			_ = json.Unmarshal(e.Data, &blocked)
		}
	}
	if blocked["flagged"] != true || blocked["code"] != "budget_exceeded" || blocked["message"] != want {
		t.Fatalf("budget.blocked data %v", blocked)
	}
	if n := countRows(t, db, `SELECT COUNT(*) FROM blocks WHERE agent = 'a3'`); n != 2 {
		t.Fatalf("%d blocks recorded", n)
	}
	mustInvariants(t, db, true)
}

func TestBudgetSetMidPeriodSeesEarlierSpend(t *testing.T) {
	t.Parallel()
	eachBackend(t, testBudgetSetMidPeriodSeesEarlierSpend)
}

func testBudgetSetMidPeriodSeesEarlierSpend(t *testing.T) {
	t.Parallel()
	db := openTest(t, WithClock(newClock(nov22).Now))
	settleOK(t, db, reserveOK(t, db, "a1", "web", "register_domain", "15").ID, "15")
	setBudget(t, db, AgentScope("a1"), WindowDay, "20")
	if st := statusOf(t, db, AgentScope("a1"), WindowDay); st.Spent != usd("15") || st.Remaining != usd("5") {
		t.Fatalf("status %+v", st)
	}
	if _, err := pipelineOp(context.Background(), db, "a1", "web", "register_domain", usd("6")); err == nil {
		t.Fatal("reserve over a budget set after earlier spending succeeded")
	}
}

func TestWindowsResetAndVelocity(t *testing.T) {
	t.Parallel()
	eachBackend(t, testWindowsResetAndVelocity)
}

func testWindowsResetAndVelocity(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk := newClock(time.Date(2026, 11, 30, 23, 58, 0, 0, time.UTC))
	db := openTest(t, WithClock(clk.Now), WithAutoFreeze(0, 0))
	setBudget(t, db, AgentScope("a"), WindowDay, "10")
	setBudget(t, db, AgentScope("a"), WindowMonth, "15")
	setBudget(t, db, AgentScope("a"), WindowTotal, "25")
	if err := db.SetLimit(ctx, VelocityLimit{Scope: AgentScope("a"), Action: "register_domain", Window: WindowDay, Max: 2}, "cli:alice"); err != nil {
		t.Fatal(err)
	}
	if err := db.SetLimit(ctx, VelocityLimit{Scope: TeamScope("t"), Action: "register_domain", Window: WindowMonth, Max: 3}, "cli:alice"); err != nil {
		t.Fatal(err)
	}

	settleOK(t, db, reserveOK(t, db, "a", "t", "register_domain", "4").ID, "4")
	released := reserveOK(t, db, "a", "t", "register_domain", "1")
	if _, err := db.Release(ctx, released.ID, StateFailed, "cloudflare_error", "x"); err != nil {
		t.Fatal(err)
	}
	reserveOK(t, db, "a", "t", "register_domain", "1") // held; the released one does not count
	ls, err := db.LimitStatuses(ctx, "register_domain", AgentScope("a"))
	if err != nil || len(ls) != 1 || ls[0].Count != 2 || ls[0].Period != "2026-11-30" || !ls[0].ResetsAt.Equal(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("limit status %+v %v", ls, err)
	}
	// Third registration today: velocity block with the reset time.
	_, err = pipelineOp(ctx, db, "a", "t", "register_domain", usd("1"))
	var be *BlockedError
	if !errors.As(err, &be) || be.Kind != BlockVelocity || be.Max != 2 || be.Count != 2 || be.Code() != "velocity_exceeded" {
		t.Fatalf("velocity: %v", err)
	}
	if want := "velocity limit agent:a allows 2 register_domain per day and 2 are already reserved or done (resets 2026-12-01T00:00:00Z)"; be.Error() != want {
		t.Fatalf("message %q", be.Error())
	}
	// Another action is not limited.
	reserveOK(t, db, "a", "t", "deploy_worker", "0")

	// Midnight, and a new month: day and month budgets and the day limit reset, the
	// total does not; the team's month limit (3) now starts over too.
	clk.Set(time.Date(2026, 12, 1, 0, 0, 1, 0, time.UTC))
	if st := statusOf(t, db, AgentScope("a"), WindowDay); st.Spent != usd("0") || st.Held != usd("0") || st.Period != "2026-12-01" {
		t.Fatalf("day after midnight %+v", st)
	}
	if st := statusOf(t, db, AgentScope("a"), WindowMonth); st.Spent != usd("0") || st.Period != "2026-12" ||
		!st.ResetsAt.Equal(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("month after rollover %+v", st)
	}
	if st := statusOf(t, db, AgentScope("a"), WindowTotal); st.Spent != usd("4") || st.Held != usd("1") {
		t.Fatalf("total after rollover %+v", st)
	}
	reserveOK(t, db, "a", "t", "register_domain", "9")
	// total: 4 spent + 1 + 0 + 9 held = 14; day: 9 held; one more of 2 hits the day budget (10).
	_, err = pipelineOp(ctx, db, "a", "t", "register_domain", usd("2"))
	if !errors.As(err, &be) || be.Kind != BlockBudget || be.Window != WindowDay || !be.ResetsAt.Equal(time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("day budget after rollover: %v", err)
	}
	// Total budget: no reset text. (Raise day and month so only the total binds:
	// 4 spent + 1 + 0 + 9 held + 12 > 25.)
	clk.Set(time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC))
	setBudget(t, db, AgentScope("a"), WindowDay, "100")
	setBudget(t, db, AgentScope("a"), WindowMonth, "100")
	_, err = pipelineOp(ctx, db, "a", "t", "deploy_worker", usd("12"))
	if !errors.As(err, &be) || be.Window != WindowTotal || !strings.HasSuffix(be.Error(), "(a total budget never resets)") {
		t.Fatalf("total budget: %v", err)
	}
	mustInvariants(t, db, true)
}

func TestCurrencyMismatch(t *testing.T) { t.Parallel(); eachBackend(t, testCurrencyMismatch) }

func testCurrencyMismatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openTest(t)
	if err := db.SetBudget(ctx, Budget{Scope: GlobalScope, Window: WindowMonth, Limit: money.Money{Micros: 100_000_000, Currency: "EUR"}}, "cli:bob"); err != nil {
		t.Fatal(err)
	}
	op, err := pipelineOp(ctx, db, "a", "t", "register_domain", usd("1"))
	var be *BlockedError
	if !errors.As(err, &be) || be.Kind != BlockCurrency || op.ErrorCode != "currency_mismatch" ||
		!strings.Contains(be.Error(), "is in EUR but the request is 1.00 USD") {
		t.Fatalf("currency: %v %+v", err, op)
	}
	// Settle in a different currency than the quote is refused.
	db2 := openTest(t)
	r := reserveOK(t, db2, "a", "t", "register_domain", "1")
	if err := execute(ctx, db2, r.ID, false); err != nil {
		t.Fatal(err)
	}
	if _, err := db2.Settle(ctx, r.ID, SettleRequest{Actual: money.Money{Micros: 1, Currency: "EUR"}}); err == nil || !strings.Contains(err.Error(), "currency") {
		t.Fatalf("settle in EUR: %v", err)
	}
	mustInvariants(t, db2, true)
}

func TestFreezeAndAutoFreeze(t *testing.T) { t.Parallel(); eachBackend(t, testFreezeAndAutoFreeze) }

func testFreezeAndAutoFreeze(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk := newClock(nov22)
	db := openTest(t, WithClock(clk.Now), WithAutoFreeze(3, 10*time.Minute))

	f, err := db.Freeze(ctx, TeamScope("web"), "incident 42", "cli:alice")
	if err != nil || f.Auto || f.By != "cli:alice" {
		t.Fatalf("freeze: %+v %v", f, err)
	}
	again, err := db.Freeze(ctx, TeamScope("web"), "other reason", "cli:bob")
	if err != nil || again.Reason != "incident 42" {
		t.Fatalf("freeze twice: %+v %v", again, err)
	}
	if _, err := db.Freeze(ctx, TeamScope("web"), " ", "x"); err == nil {
		t.Fatal("freeze without reason accepted")
	}
	if _, err := db.Freeze(ctx, "everyone", "r", "x"); err == nil {
		t.Fatal("bad scope accepted")
	}
	got, err := db.FrozenFor(ctx, "a", "web")
	if err != nil || got == nil || got.Scope != TeamScope("web") {
		t.Fatalf("FrozenFor: %+v %v", got, err)
	}
	if got, _ := db.FrozenFor(ctx, "a", "other"); got != nil {
		t.Fatalf("other team frozen: %+v", got)
	}
	_, err = pipelineOp(ctx, db, "a", "web", "register_domain", usd("1"))
	var be *BlockedError
	if !errors.As(err, &be) || be.Kind != BlockFrozen || be.Freeze == nil || be.Code() != "frozen" || !strings.Contains(be.Error(), "incident 42") {
		t.Fatalf("frozen team: %v", err)
	}
	// Frozen-kind blocks never trip the auto-freeze: the agent is already stopped.
	for range 3 {
		_, _ = pipelineOp(ctx, db, "a", "web", "register_domain", usd("1"))
	}
	if got, _ := db.FrozenFor(ctx, "a", ""); got != nil {
		t.Fatalf("agent auto-frozen by freeze blocks: %+v", got)
	}
	if err := db.Unfreeze(ctx, TeamScope("web"), "cli:alice"); err != nil {
		t.Fatal(err)
	}
	if err := db.Unfreeze(ctx, TeamScope("web"), "cli:alice"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unfreeze twice: %v", err)
	}
	reserveOK(t, db, "a", "web", "register_domain", "1")

	// Global freeze applies to everyone; the most specific freeze is reported.
	if _, err := db.Freeze(ctx, GlobalScope, "all stop", "cli:alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Freeze(ctx, AgentScope("b"), "b misbehaves", "cli:alice"); err != nil {
		t.Fatal(err)
	}
	if got, _ := db.FrozenFor(ctx, "b", "web"); got == nil || got.Scope != AgentScope("b") {
		t.Fatalf("FrozenFor b: %+v", got)
	}
	if got, _ := db.FrozenFor(ctx, "z", "q"); got == nil || got.Scope != GlobalScope {
		t.Fatalf("FrozenFor z: %+v", got)
	}
	fs, err := db.Freezes(ctx)
	if err != nil || len(fs) != 2 {
		t.Fatalf("Freezes: %+v %v", fs, err)
	}
	for _, s := range []Scope{GlobalScope, AgentScope("b")} {
		if err := db.Unfreeze(ctx, s, "cli:alice"); err != nil {
			t.Fatal(err)
		}
	}

	// Auto-freeze: 3 budget blocks within 10 minutes freeze the agent.
	setBudget(t, db, AgentScope("greedy"), WindowDay, "1")
	for i := range 3 {
		clk.Advance(6 * time.Minute)
		_, err := pipelineOp(ctx, db, "greedy", "web", "register_domain", usd("2"))
		if !errors.As(err, &be) || be.Kind != BlockBudget {
			t.Fatalf("block %d: %v", i, err)
		}
		// Blocks 6 minutes apart: never 3 within 10 minutes.
		if be.AutoFroze {
			t.Fatalf("auto-froze at block %d with blocks spread over more than 10m", i)
		}
	}
	clk.Advance(time.Minute)
	_, err = pipelineOp(ctx, db, "greedy", "web", "register_domain", usd("2"))
	if !errors.As(err, &be) || !be.AutoFroze || !strings.Contains(be.Error(), "now frozen") {
		t.Fatalf("auto-freeze block: %v", err)
	}
	got, _ = db.FrozenFor(ctx, "greedy", "web")
	if got == nil || !got.Auto || got.By != ActorSystem || got.Scope != AgentScope("greedy") {
		t.Fatalf("auto freeze %+v", got)
	}
	// Now even an affordable call is refused until a human unfreezes.
	if _, err := pipelineOp(ctx, db, "greedy", "web", "register_domain", usd("0.5")); !errors.As(err, &be) || be.Kind != BlockFrozen {
		t.Fatalf("after auto-freeze: %v", err)
	}
	if n := countEvents(t, db, "freeze.set", func(actor string, data map[string]any) bool { return actor == "system" && data["auto"] == true }); n != 1 {
		t.Fatalf("%d auto freeze.set events", n)
	}
	if err := db.Unfreeze(ctx, AgentScope("greedy"), "cli:alice"); err != nil {
		t.Fatal(err)
	}
	reserveOK(t, db, "greedy", "web", "register_domain", "0.5")
	mustInvariants(t, db, true)
}

// TestAutoFreezeCountsOnlyBlocksAfterUnfreeze: the blocks that froze an agent
// were seen by the human who unfroze it; the next block must not freeze it
// again at once, only as many new blocks as froze it the first time.
func TestAutoFreezeCountsOnlyBlocksAfterUnfreeze(t *testing.T) {
	t.Parallel()
	eachBackend(t, testAutoFreezeCountsOnlyBlocksAfterUnfreeze)
}

func testAutoFreezeCountsOnlyBlocksAfterUnfreeze(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk := newClock(nov22)
	db := openTest(t, WithClock(clk.Now), WithAutoFreeze(3, 10*time.Minute))
	setBudget(t, db, AgentScope("greedy"), WindowDay, "1")
	block := func() *BlockedError {
		t.Helper()
		clk.Advance(time.Second)
		_, err := pipelineOp(ctx, db, "greedy", "web", "register_domain", usd("2"))
		var be *BlockedError
		if !errors.As(err, &be) || be.Kind != BlockBudget {
			t.Fatalf("want a budget block, got %v", err)
		}
		return be
	}
	for range 2 {
		if block().AutoFroze {
			t.Fatal("froze before the third block")
		}
	}
	if !block().AutoFroze {
		t.Fatal("three blocks within 10 minutes did not freeze the agent")
	}
	if err := db.Unfreeze(ctx, AgentScope("greedy"), "cli:alice"); err != nil {
		t.Fatal(err)
	}
	// Still within 10 minutes of the three old blocks.
	for i := range 2 {
		if block().AutoFroze {
			t.Fatalf("block %d after the unfreeze froze the agent again: blocks from before the unfreeze were counted", i+1)
		}
		if f, _ := db.FrozenFor(ctx, "greedy", "web"); f != nil {
			t.Fatalf("frozen after block %d following the unfreeze: %+v", i+1, f)
		}
	}
	if !block().AutoFroze {
		t.Fatal("three new blocks after the unfreeze did not freeze the agent")
	}
	if n := countRows(t, db, `SELECT COUNT(*) FROM freeze_clears WHERE scope = 'agent:greedy'`); n != 1 {
		t.Fatalf("%d unfreeze records", n)
	}
	mustInvariants(t, db, true)
}

func TestCommitmentRecordedOnce(t *testing.T) {
	t.Parallel()
	eachBackend(t, testCommitmentRecordedOnce)
}

func testCommitmentRecordedOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openTest(t, WithClock(newClock(nov22).Now))
	setBudget(t, db, TeamScope("web"), WindowMonth, "20")
	plan := &Commitment{Key: "workers-paid-plan:2026-11", Amount: usd("5")}
	reserve := func(agent string) (Operation, error) {
		op := authorizedOp(t, db, agent, "web")
		return db.Reserve(ctx, ReserveRequest{OperationID: op.ID, Action: "deploy_worker", Amount: usd("5"), Commitment: plan})
	}
	// Two first-of-the-month deploys race: both hold the plan.
	op1, err := reserve("a1")
	if err != nil {
		t.Fatal(err)
	}
	op2, err := reserve("a2")
	if err != nil {
		t.Fatal(err)
	}
	if op1.Commitment == nil || *op1.Commitment != *plan {
		t.Fatalf("commitment not kept: %+v", op1.Commitment)
	}
	if st := statusOf(t, db, TeamScope("web"), WindowMonth); st.Held != usd("10") {
		t.Fatalf("held %v", st.Held)
	}
	if done, err := db.CommitmentRecorded(ctx, plan.Key); err != nil || done {
		t.Fatalf("recorded before settle: %v %v", done, err)
	}
	s1 := settleOK(t, db, op1.ID, "5")
	if done, err := db.CommitmentRecorded(ctx, plan.Key); err != nil || !done {
		t.Fatalf("not recorded after settle: %v %v", done, err)
	}
	s2 := settleOK(t, db, op2.ID, "5")
	if *s1.Charged != usd("5") || *s2.Charged != usd("0") {
		t.Fatalf("charged %v and %v, want 5 and 0", s1.Charged, s2.Charged)
	}
	// Later deploys this month hold nothing for the plan.
	op3, err := reserve("a3")
	if err != nil || op3.Quote != usd("5") {
		t.Fatalf("op3 %+v %v", op3, err)
	}
	if st := statusOf(t, db, TeamScope("web"), WindowMonth); st.Spent != usd("5") || st.Held != usd("0") {
		t.Fatalf("status %+v", st)
	}
	if n := countRows(t, db, `SELECT COUNT(*) FROM commitments`); n != 1 {
		t.Fatalf("%d commitments", n)
	}
	// A commitment larger than the amount, or in another currency, is refused.
	op4 := authorizedOp(t, db, "a4", "web")
	for _, c := range []*Commitment{{Key: "k", Amount: usd("6")}, {Key: "k", Amount: money.Money{Micros: 1, Currency: "EUR"}}, {Key: "", Amount: usd("1")}} {
		if _, err := db.Reserve(ctx, ReserveRequest{OperationID: op4.ID, Amount: usd("5"), Commitment: c}); err == nil {
			t.Errorf("commitment %+v accepted", c)
		}
	}
	mustInvariants(t, db, true)
}

// TestSettleOverQuoteIsFlagged: a charge above the approved amount is
// settled (the money was spent), flagged, and freezes the agent in the same
// transaction.
func TestSettleOverQuoteIsFlagged(t *testing.T) {
	t.Parallel()
	eachBackend(t, testSettleOverQuoteIsFlagged)
}

func testSettleOverQuoteIsFlagged(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openTest(t)
	setBudget(t, db, AgentScope("a"), WindowTotal, "10")
	op := reserveOK(t, db, "a", "t", "register_domain", "8")
	s := settleOK(t, db, op.ID, "12") // the registrar charged more: record the truth
	if *s.Charged != usd("12") {
		t.Fatalf("charged %v", s.Charged)
	}
	var data map[string]any
	_ = db.Events(ctx, EventQuery{OperationID: op.ID, Types: []string{EventBudgetSettled}}, func(e Event) error {
		return json.Unmarshal(e.Data, &data)
	})
	if data["over_quote"] != true || data["flagged"] != true {
		t.Fatalf("settled event %v", data)
	}
	if st := statusOf(t, db, AgentScope("a"), WindowTotal); st.Spent != usd("12") || st.Remaining != usd("0") {
		t.Fatalf("status %+v", st)
	}
	f, err := db.FrozenFor(ctx, "a", "t")
	if err != nil || f == nil || f.Scope != AgentScope("a") || !f.Auto || f.By != ActorSystem ||
		!strings.Contains(f.Reason, "12.00 USD") || !strings.Contains(f.Reason, op.ID) || !strings.Contains(f.Reason, "8.00 USD approved") {
		t.Fatalf("agent not frozen after an over-quote charge: %+v %v", f, err)
	}
	if n := countRows(t, db, `SELECT COUNT(*) FROM audit_events WHERE type = 'freeze.set' AND operation_id = ?`, op.ID); n != 1 {
		t.Fatalf("%d freeze.set events for the operation", n)
	}
	// A charge at or below the quote freezes nobody.
	op2 := reserveOK(t, db, "b", "t", "register_domain", "1")
	settleOK(t, db, op2.ID, "1")
	if f, _ := db.FrozenFor(ctx, "b", "t"); f != nil {
		t.Fatalf("agent b frozen after a charge equal to its quote: %+v", f)
	}
	mustInvariants(t, db, false) // spent exceeds the limit by design here
}

func TestCheckBudgetWritesNothing(t *testing.T) {
	t.Parallel()
	eachBackend(t, testCheckBudgetWritesNothing)
}

func testCheckBudgetWritesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openTest(t, WithClock(newClock(nov22).Now))
	setBudget(t, db, AgentScope("a"), WindowDay, "10")
	setBudget(t, db, GlobalScope, WindowMonth, "50")
	reserveOK(t, db, "a", "t", "register_domain", "4")
	before := countRows(t, db, `SELECT (SELECT COUNT(*) FROM audit_events) + (SELECT COUNT(*) FROM holds) + (SELECT COUNT(*) FROM blocks)`)

	st, blocked, err := db.CheckBudget(ctx, ReserveRequest{Agent: "a", Team: "t", Action: "register_domain", Amount: usd("6")})
	if err != nil || blocked != nil || len(st) != 2 || st[0].Remaining != usd("6") || st[1].Remaining != usd("46") {
		t.Fatalf("fits: %+v %v %v", st, blocked, err)
	}
	_, blocked, err = db.CheckBudget(ctx, ReserveRequest{Agent: "a", Team: "t", Action: "register_domain", Amount: usd("6.01")})
	if err != nil || blocked == nil || blocked.Kind != BlockBudget || blocked.Scope != AgentScope("a") {
		t.Fatalf("does not fit: %v %v", blocked, err)
	}
	// With an operation id, agent and team come from the operation.
	op := authorizedOp(t, db, "a", "t")
	_, blocked, err = db.CheckBudget(ctx, ReserveRequest{OperationID: op.ID, Amount: usd("7")})
	if err != nil || blocked == nil {
		t.Fatalf("by op: %v %v", blocked, err)
	}
	after := countRows(t, db, `SELECT (SELECT COUNT(*) FROM audit_events) + (SELECT COUNT(*) FROM holds) + (SELECT COUNT(*) FROM blocks)`)
	if after != before+2 { // the two events of authorizedOp
		t.Fatalf("CheckBudget wrote: %d -> %d", before, after)
	}
	if _, _, err := db.CheckBudget(ctx, ReserveRequest{Amount: usd("1")}); err == nil {
		t.Fatal("CheckBudget without agent accepted")
	}
}

func TestReserveRequiresAuthorizedAndMatchingAgent(t *testing.T) {
	t.Parallel()
	eachBackend(t, testReserveRequiresAuthorizedAndMatchingAgent)
}

func testReserveRequiresAuthorizedAndMatchingAgent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openTest(t)
	op := newOp(t, db, "a", "t", "register_domain", "x.dev")
	if _, err := db.Reserve(ctx, ReserveRequest{OperationID: op.ID, Amount: usd("1")}); !errors.Is(err, ErrStateConflict) {
		t.Fatalf("reserve planned: %v", err)
	}
	if _, err := db.Transition(ctx, op.ID, StateAuthorized, TransitionOpts{}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Reserve(ctx, ReserveRequest{OperationID: op.ID, Agent: "b", Amount: usd("1")}); err == nil || !strings.Contains(err.Error(), "belongs to agent a") {
		t.Fatalf("agent mismatch: %v", err)
	}
	for _, r := range []ReserveRequest{
		{OperationID: op.ID, Amount: money.Money{Micros: -1, Currency: "USD"}},
		{OperationID: op.ID, Amount: money.Money{Micros: 1, Currency: "usd"}},
		{OperationID: op.ID, Amount: usd("1"), Action: "Drop Table"},
		{OperationID: "op_x", Amount: usd("1")},
	} {
		if _, err := db.Reserve(ctx, r); err == nil {
			t.Errorf("reserve %+v accepted", r)
		}
	}
	r, err := db.Reserve(ctx, ReserveRequest{OperationID: op.ID, Agent: "a", Team: "t", Amount: usd("1")})
	if err != nil || r.State != StateReserved {
		t.Fatalf("reserve: %+v %v", r, err)
	}
	if _, err := db.Reserve(ctx, ReserveRequest{OperationID: op.ID, Amount: usd("1")}); !errors.Is(err, ErrStateConflict) {
		t.Fatalf("double reserve: %v", err)
	}
	// Settle only from executing or in_doubt.
	if _, err := db.Settle(ctx, op.ID, SettleRequest{Actual: usd("1")}); !errors.Is(err, ErrStateConflict) {
		t.Fatalf("settle reserved: %v", err)
	}
	mustInvariants(t, db, true)
}

func TestBudgetAndLimitAdmin(t *testing.T) { t.Parallel(); eachBackend(t, testBudgetAndLimitAdmin) }

func testBudgetAndLimitAdmin(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openTest(t)
	for _, b := range []Budget{
		{Scope: "bogus", Window: WindowDay, Limit: usd("1")},
		{Scope: GlobalScope, Window: "week", Limit: usd("1")},
		{Scope: GlobalScope, Window: WindowDay, Limit: money.Money{Micros: -1, Currency: "USD"}},
		{Scope: GlobalScope, Window: WindowDay, Limit: money.Money{Micros: 1}},
	} {
		if err := db.SetBudget(ctx, b, "x"); err == nil {
			t.Errorf("budget %+v accepted", b)
		}
	}
	setBudget(t, db, GlobalScope, WindowMonth, "100")
	setBudget(t, db, AgentScope("b"), WindowDay, "5")
	setBudget(t, db, TeamScope("t"), WindowTotal, "50")
	setBudget(t, db, AgentScope("a"), WindowMonth, "7")
	setBudget(t, db, AgentScope("a"), WindowDay, "3")
	setBudget(t, db, AgentScope("a"), WindowDay, "4") // replace
	bs, err := db.Budgets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, b := range bs {
		order = append(order, string(b.Scope)+"/"+string(b.Window)+"="+b.Limit.Decimal())
	}
	if got := strings.Join(order, " "); got != "agent:a/day=4.00 agent:a/month=7.00 agent:b/day=5.00 team:t/total=50.00 global/month=100.00" {
		t.Fatalf("budgets %s", got)
	}
	if bs[0].UpdatedBy != "cli:alice" {
		t.Fatalf("updated by %q", bs[0].UpdatedBy)
	}
	if err := db.DeleteBudget(ctx, AgentScope("b"), WindowDay, "cli:bob"); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteBudget(ctx, AgentScope("b"), WindowDay, "cli:bob"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
	if n := countEvents(t, db, "budget.set", func(_ string, data map[string]any) bool {
		prev, _ := data["previous"].(map[string]any)
		return prev != nil && prev["micros"] == float64(3000000)
	}); n != 1 {
		t.Fatal("replacement not audited with the previous limit")
	}
	if n := countRows(t, db, `SELECT COUNT(*) FROM audit_events WHERE type = 'budget.deleted' AND actor = 'cli:bob'`); n != 1 {
		t.Fatal("delete not audited")
	}

	for _, l := range []VelocityLimit{
		{Scope: GlobalScope, Action: "Buy everything", Window: WindowDay, Max: 1}, // which actions exist is the caller's to say; the syntax is the ledger's
		{Scope: GlobalScope, Action: "register_domain", Window: WindowTotal, Max: 1},
		{Scope: GlobalScope, Action: "register_domain", Window: WindowDay, Max: -1},
		{Scope: "agent:", Action: "register_domain", Window: WindowDay, Max: 1},
	} {
		if err := db.SetLimit(ctx, l, "x"); err == nil {
			t.Errorf("limit %+v accepted", l)
		}
	}
	for _, l := range []VelocityLimit{
		{Scope: GlobalScope, Action: "deploy_worker", Window: WindowMonth, Max: 100},
		{Scope: AgentScope("a"), Action: "register_domain", Window: WindowDay, Max: 3},
		{Scope: AgentScope("a"), Action: "register_domain", Window: WindowDay, Max: 0}, // forbid
	} {
		if err := db.SetLimit(ctx, l, "cli:alice"); err != nil {
			t.Fatal(err)
		}
	}
	ls, err := db.Limits(ctx)
	if err != nil || len(ls) != 2 || ls[0].Scope != AgentScope("a") || ls[0].Max != 0 {
		t.Fatalf("limits %+v %v", ls, err)
	}
	if _, err := pipelineOp(ctx, db, "a", "t", "register_domain", usd("0")); err == nil {
		t.Fatal("max 0 did not forbid the action")
	}
	if err := db.DeleteLimit(ctx, AgentScope("a"), "register_domain", WindowDay, "cli:alice"); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteLimit(ctx, AgentScope("a"), "register_domain", WindowDay, "cli:alice"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete limit twice: %v", err)
	}
	all, err := db.LimitStatuses(ctx, "")
	if err != nil || len(all) != 1 || all[0].Limit.Action != "deploy_worker" {
		t.Fatalf("limit statuses %+v %v", all, err)
	}
}

func TestParseScopeAndWindow(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in string
		ok bool
	}{
		{"global", true}, {"agent:web-bot", true}, {"team:web", true}, {"agent:a.b_c-1", true},
		{"", false}, {"Global", false}, {"agent:", false}, {"agent", false}, {"team:a b", false},
		{"org:x", false}, {"agent:a:b", false}, {"agent:-x", false}, {"agent:" + strings.Repeat("x", 65), false},
	} {
		s, err := ParseScope(tt.in)
		if (err == nil) != tt.ok || (tt.ok && string(s) != tt.in) {
			t.Errorf("ParseScope(%q) = %q, %v", tt.in, s, err)
		}
		if err != nil && !strings.Contains(err.Error(), "NAME") && !strings.Contains(err.Error(), "letters") {
			t.Errorf("ParseScope(%q) error does not say what is allowed: %v", tt.in, err)
		}
	}
	for _, w := range []string{"day", "month", "total"} {
		if got, err := ParseWindow(w); err != nil || string(got) != w {
			t.Errorf("ParseWindow(%q) = %q, %v", w, got, err)
		}
	}
	if _, err := ParseWindow("week"); err == nil || !strings.Contains(err.Error(), "day, month or total") {
		t.Errorf("ParseWindow(week) = %v", err)
	}
}

func FuzzParseScope(f *testing.F) {
	for _, s := range []string{"global", "agent:web-bot", "team:web", "agent:", "team:a b", "agent:a:b", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sc, err := ParseScope(s)
		if err != nil {
			return
		}
		if string(sc) != s {
			t.Fatalf("ParseScope(%q) = %q", s, sc)
		}
		if sc != GlobalScope && !strings.HasPrefix(s, "agent:") && !strings.HasPrefix(s, "team:") {
			t.Fatalf("accepted %q", s)
		}
		if strings.Count(s, ":") > 1 || strings.ContainsAny(s, " \t\n") {
			t.Fatalf("accepted %q", s)
		}
	})
}

// TestReservedDataReadsAsAMap: budget.reserved's data, built as structs to
// spare every reservation a map, marshals byte for byte as the map it
// replaced (keys in name order), with and without the optional fields.
func TestReservedDataReadsAsAMap(t *testing.T) {
	t.Parallel()
	st := []BudgetStatus{{Budget: Budget{Scope: "agent:a", Window: WindowDay, Limit: usd("10")}, Period: "2026-11-22", Spent: usd("1"), Held: usd("2")}}
	recorded := true
	for _, full := range []bool{false, true} {
		d := reservedData{Amount: usd("4"), AmountText: "4.00 USD", Held: usd("3"), Action: "register_domain",
			Scopes: applicableScopes("a", "t"), Budgets: statusData(st, usd("3"))}
		m := map[string]any{"amount": usd("4"), "amount_text": "4.00 USD", "held": usd("3"), "action": "register_domain",
			"scopes": applicableScopes("a", "t"), "budgets": []map[string]any{{
				"scope": Scope("agent:a"), "window": WindowDay, "period": "2026-11-22", "limit": usd("10"),
				"spent": usd("1"), "held_before": usd("2"), "remaining_after": int64(4_000_000),
			}}}
		if full {
			c := &Commitment{Key: "workers-paid-plan:2026-11", Amount: usd("1")}
			d.MandateID, d.Commitment, d.CommitmentAlreadyRecorded = "man_x", c, &recorded
			m["mandate_id"], m["commitment"], m["commitment_already_recorded"] = "man_x", c, true
		}
		got, _ := json.Marshal(d)
		want, _ := json.Marshal(m)
		if string(got) != string(want) {
			t.Errorf("full=%v:\n got %s\nwant %s", full, got, want)
		}
	}
}
