package ledger

import (
	"context"
	"sync"
	"testing"
)

// TestJournalRidesWithTheNextStateChange: records wait in the call's journal
// and commit in the transaction of the next state change, before its own
// events; a refused state change keeps them; Flush writes the rest in one
// transaction; the chain verifies.
func TestJournalRidesWithTheNextStateChange(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	op := newOp(t, db, "bot", "web", "register_domain", "journal.dev")
	ctx, owned := WithJournal(context.Background())
	if _, again := WithJournal(ctx); !owned || again {
		t.Fatalf("WithJournal: owned %v, again %v", owned, again)
	}
	if err := db.Record(ctx, NewEvent("call.received", "agent:bot", "", nil), NewEvent("policy.decision", "agent:bot", op.ID, nil)); err != nil {
		t.Fatal(err)
	}
	if err := db.Record(ctx, NewEvent("Not A Type", "x", "", nil)); err == nil {
		t.Fatal("Record took an event with a bad type")
	}
	events := func() []string {
		var out []string
		if err := db.Events(context.Background(), EventQuery{}, func(e Event) error { out = append(out, e.Type); return nil }); err != nil {
			t.Fatal(err)
		}
		return out
	}
	n0 := len(events())
	tx0 := db.Store().WriteTransactions()
	// A refused move keeps the records waiting.
	if _, err := db.Transition(ctx, op.ID, StateExecuting, TransitionOpts{From: []State{StateApproved}}); err == nil {
		t.Fatal("an illegal move passed")
	}
	if got := len(events()); got != n0 {
		t.Fatalf("a refused transition wrote %d events", got-n0)
	}
	if _, err := db.Transition(ctx, op.ID, StateAuthorized, TransitionOpts{From: []State{StatePlanned}}); err != nil {
		t.Fatal(err)
	}
	got := events()[n0:]
	want := []string{"call.received", "policy.decision", EventOperationState}
	if len(got) != len(want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("events %v, want %v", got, want)
		}
	}
	if err := db.Record(ctx, NewEvent("call.result", "agent:bot", "", nil)); err != nil {
		t.Fatal(err)
	}
	if err := db.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := db.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := db.Store().WriteTransactions() - tx0; n != 3 {
		t.Fatalf("%d write transactions (refused move, transition, flush), want 3", n)
	}
	if got := events(); got[len(got)-1] != "call.result" {
		t.Fatalf("last event %s", got[len(got)-1])
	}
	// Work that outlives the call with its context records at once.
	if err := db.Record(ctx, NewEvent("token.revoked", "system", "", nil)); err != nil {
		t.Fatal(err)
	}
	if got := events(); got[len(got)-1] != "token.revoked" {
		t.Fatalf("a record after the journal ended waits: last event %s", got[len(got)-1])
	}
	rep, err := db.Verify(context.Background())
	if err != nil || !rep.OK {
		t.Fatalf("verify: %+v %v", rep, err)
	}
}

// TestReserveWithSteps: one transaction authorizes, reserves and moves on to
// executing; a blocked one stops at denied with the authorization recorded.
func TestReserveWithSteps(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openTest(t)
	if err := db.SetBudget(ctx, Budget{Scope: TeamScope("web"), Window: WindowDay, Limit: usd("20")}, "cli:ops"); err != nil {
		t.Fatal(err)
	}
	steps := func(id string) ReserveRequest {
		return ReserveRequest{OperationID: id, Action: "deploy_worker", Amount: usd("15"),
			Authorize: &Step{Opts: TransitionOpts{Actor: "policy"}, Events: []Event{NewEvent("policy.decision", "agent:bot", "", nil)}},
			Then: []Step{
				{To: StateApproved, Opts: TransitionOpts{From: []State{StateReserved}, Actor: "policy"}, Events: []Event{NewEvent("approval.not_required", "policy", "", nil)}},
				{To: StateExecuting, Opts: TransitionOpts{From: []State{StateApproved}}},
			}}
	}
	tx0 := db.Store().WriteTransactions()
	a := newOp(t, db, "bot", "web", "deploy_worker", "a")
	op, err := db.Reserve(ctx, steps(a.ID))
	if err != nil || op.State != StateExecuting {
		t.Fatalf("reserve with steps: %s %v", op.State, err)
	}
	if n := db.Store().WriteTransactions() - tx0; n != 2 {
		t.Fatalf("create + reserve with steps took %d write transactions, want 2", n)
	}
	b := newOp(t, db, "bot", "web", "deploy_worker", "b")
	op, err = db.Reserve(ctx, steps(b.ID))
	if err == nil || op.State != StateDenied {
		t.Fatalf("an over-budget reserve with steps: %s %v", op.State, err)
	}
	hist, err := db.History(ctx, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, e := range hist {
		types = append(types, e.Type)
	}
	if len(types) < 3 || types[1] != EventOperationState || types[2] != "policy.decision" {
		t.Fatalf("history of the blocked one: %v", types)
	}
	mustInvariants(t, db, true)
}

// TestJournalConcurrentCalls: many calls, each with its own journal, record
// and commit at once through the group writer; every record lands once and
// the chain is gap-free.
func TestJournalConcurrentCalls(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	const calls = 50
	var wg sync.WaitGroup
	for range calls {
		wg.Go(func() {
			ctx, _ := WithJournal(context.Background())
			for range 3 {
				if err := db.Record(ctx, NewEvent("call.received", "agent:bot", "", nil)); err != nil {
					t.Error(err)
				}
			}
			if err := db.Flush(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := countRows(t, db, `SELECT COUNT(*) FROM audit_events WHERE type = 'call.received'`); n != 3*calls {
		t.Fatalf("%d records, want %d", n, 3*calls)
	}
	rep, err := db.Verify(context.Background())
	if err != nil || !rep.OK {
		t.Fatalf("verify: %+v %v", rep, err)
	}
}
