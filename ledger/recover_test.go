package ledger

import (
	"context"
	"slices"
	"testing"
	"time"
)

func ids(ops []Operation) []string {
	out := make([]string, len(ops))
	for i, o := range ops {
		out[i] = o.ID
	}
	slices.Sort(out)
	return out
}

func sorted(s ...string) []string {
	slices.Sort(s)
	return s
}

func TestRecover(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk := newClock(nov22)
	db := openTest(t, WithClock(clk.Now))
	setBudget(t, db, TeamScope("t"), WindowDay, "100")

	planned := newOp(t, db, "a", "t", "register_domain", "p.dev")
	authorized := authorizedOp(t, db, "a", "t")
	reserved := reserveOK(t, db, "a", "t", ActionRegisterDomain, "1")
	awaiting := reserveOK(t, db, "a", "t", ActionRegisterDomain, "2")
	if _, err := db.Transition(ctx, awaiting.ID, StateAwaitingApproval, TransitionOpts{}); err != nil {
		t.Fatal(err)
	}
	approved := reserveOK(t, db, "a", "t", ActionRegisterDomain, "3")
	for _, s := range []State{StateAwaitingApproval, StateApproved} {
		if _, err := db.Transition(ctx, approved.ID, s, TransitionOpts{}); err != nil {
			t.Fatal(err)
		}
	}
	executing := reserveOK(t, db, "a", "t", ActionRegisterDomain, "4")
	if err := execute(ctx, db, executing.ID, false); err != nil {
		t.Fatal(err)
	}
	inDoubt := reserveOK(t, db, "a", "t", ActionRegisterDomain, "5")
	if err := execute(ctx, db, inDoubt.ID, false); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Transition(ctx, inDoubt.ID, StateInDoubt, TransitionOpts{}); err != nil {
		t.Fatal(err)
	}
	clk.Advance(20 * time.Minute)
	fresh := reserveOK(t, db, "a", "t", ActionRegisterDomain, "6") // younger than staleAfter

	rep, err := db.Recover(ctx, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ids(rep.Released), sorted(planned.ID, authorized.ID, reserved.ID); !slices.Equal(got, want) {
		t.Fatalf("released %v, want %v", got, want)
	}
	for _, op := range rep.Released {
		if op.State != StateFailed || op.ErrorCode != "interrupted" || op.Error == "" {
			t.Fatalf("released op %+v", op)
		}
	}
	if got, want := ids(rep.InDoubt), sorted(executing.ID, inDoubt.ID); !slices.Equal(got, want) {
		t.Fatalf("in_doubt %v, want %v", got, want)
	}
	if got := ids(rep.Approved); !slices.Equal(got, []string{approved.ID}) {
		t.Fatalf("approved %v", got)
	}
	for id, want := range map[string]State{awaiting.ID: StateAwaitingApproval, fresh.ID: StateReserved, executing.ID: StateInDoubt} {
		if s := mustState(ctx, db, id); s != want {
			t.Errorf("%s is %s, want %s", id, s, want)
		}
	}
	// Holds: released for the three, kept for the rest (2+3+4+5+6 = 20).
	if st := statusOf(t, db, TeamScope("t"), WindowDay); st.Held != usd("20") || st.Spent != usd("0") {
		t.Fatalf("status %+v", st)
	}
	mustInvariants(t, db, true)

	// The server reconciles: one really happened, one did not.
	if _, err := db.Settle(ctx, executing.ID, SettleRequest{Actual: usd("4")}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Release(ctx, inDoubt.ID, StateFailed, "cloudflare_error", "registration not found at Cloudflare"); err != nil {
		t.Fatal(err)
	}
	// Recovering again changes nothing.
	rep, err = db.Recover(ctx, 10*time.Minute)
	if err != nil || len(rep.Released) != 0 || len(rep.InDoubt) != 0 || len(rep.Approved) != 1 {
		t.Fatalf("second recover %+v %v", rep, err)
	}
	if st := statusOf(t, db, TeamScope("t"), WindowDay); st.Held != usd("11") || st.Spent != usd("4") {
		t.Fatalf("status %+v", st)
	}
	if n := countRows(t, db, `SELECT COUNT(*) FROM audit_events WHERE type = 'operation.state' AND json_extract(data, '$.to') = 'in_doubt' AND actor = 'system'`); n != 2 {
		t.Fatalf("%d in_doubt events", n)
	}
	if _, err := db.Recover(ctx, -time.Second); err == nil {
		t.Fatal("negative staleAfter accepted")
	}
	mustInvariants(t, db, true)
}
