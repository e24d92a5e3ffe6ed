package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/cloudflare/sandbox"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/ledger/money"
)

// The execution errors that leave the outcome unknown (a 5xx, or no answer,
// after the request was sent) must end in_doubt and be settled or released
// only once Cloudflare has been asked what happened: never released while
// the money may be spent, never charged twice.

// spend is a scope's day budget figures in micros.
func spend(t *testing.T, e *testEnv, scope string) (spent, held int64) {
	t.Helper()
	sts, err := e.db.BudgetStatuses(context.Background(), ledger.Scope(scope))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sts {
		if s.Budget.Window == ledger.WindowDay {
			return s.Spent.Micros, s.Held.Micros
		}
	}
	t.Fatalf("no day budget for %s: %+v", scope, sts)
	return 0, 0
}

// eventCount counts an operation's audit events of one type.
func eventCount(t *testing.T, e *testEnv, opID, typ string) int {
	t.Helper()
	n := 0
	if err := e.db.Events(context.Background(), ledger.EventQuery{OperationID: opID}, func(ev ledger.Event) error {
		if ev.Type == typ {
			n++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// passedThrough reports whether the operation's history shows the move
// from → to.
func passedThrough(t *testing.T, e *testEnv, opID string, from, to ledger.State) bool {
	t.Helper()
	hist, err := e.db.History(context.Background(), opID)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range hist {
		var d struct{ From, To string }
		if ev.Type == "operation.state" && json.Unmarshal(ev.Data, &d) == nil && d.From == string(from) && d.To == string(to) {
			return true
		}
	}
	return false
}

// sandboxCalls counts the sandbox requests with this method whose path
// contains part.
func sandboxCalls(e *testEnv, method, part string) int {
	n := 0
	for _, r := range e.sb.Requests() {
		if r.Method == method && strings.Contains(r.Path, part) {
			n++
		}
	}
	return n
}

// reconcileAttempted waits until a reconcile session of the operation has
// finished (its inspect token is revoked).
func reconcileAttempted(t *testing.T, e *testEnv, opID string) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for {
		done := false
		_ = e.db.Events(context.Background(), ledger.EventQuery{OperationID: opID}, func(ev ledger.Event) error {
			done = done || (ev.Type == "token.revoked" && strings.Contains(string(ev.Data), `"purpose":"inspect"`))
			return nil
		})
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no reconcile attempt for %s", opID)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

const dayBudget = "100.00"

func withWebBudget() envOption {
	return withConfig(func(c *Config) {
		c.Approvals.Wait = 0
		c.Budgets = []BudgetConfig{{Scope: "team:web", Window: "day", Limit: dayBudget}}
	})
}

func TestRegistrationInDoubtIsReconciled(t *testing.T) {
	t.Parallel()
	const price = 12_180_000 // .dev in the sandbox
	tests := []struct {
		name   string
		faults sandbox.Faults
		// clearThenPoll: the fault also fails the reconcile's own reads, so
		// the first pass leaves the operation in_doubt; the fault is then
		// cleared and the next pass (run here, twice at once) decides it.
		clearThenPoll bool
		want          ledger.State
		registered    bool
	}{
		{"registered, answer lost", sandbox.Faults{FailAfterEffect: true, ErrorRate: 1, PathContains: "registrations", Method: "POST"},
			false, ledger.StateSucceeded, true},
		{"registered, reads fail too until cleared", sandbox.Faults{FailAfterEffect: true, ErrorRate: 1, PathContains: "registrations"},
			true, ledger.StateSucceeded, true},
		{"500 before effect", sandbox.Faults{ErrorRate: 1, PathContains: "registrations", Method: "POST"},
			false, ledger.StateFailed, false},
		{"500 before effect, reads fail too until cleared", sandbox.Faults{ErrorRate: 1, PathContains: "registrations"},
			true, ledger.StateFailed, false},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, withWebBudget())
			domain := []string{"doubt-a.dev", "doubt-b.dev", "doubt-c.dev", "doubt-d.dev"}[i]
			v := opView(t, e.call(webBot, "register_domain", registerArgs(domain)))
			if v.Status != "awaiting_approval" {
				t.Fatalf("status %s: %s", v.Status, v.Error)
			}
			e.sb.SetFaults(tc.faults)
			e.approve(v.OperationID, "bob")

			if tc.clearThenPoll {
				// Reads fail too, so the operation stays in_doubt here; without
				// that fault the immediate reconcile can finish before a poll
				// would see in_doubt (the history check below covers it).
				e.waitState(v.OperationID, ledger.StateInDoubt)
				reconcileAttempted(t, e, v.OperationID)
				// Still unknown: the money stays held, nothing is charged yet.
				if op, _ := e.db.Operation(context.Background(), v.OperationID); op.State != ledger.StateInDoubt {
					t.Fatalf("a failed reconcile moved the operation to %s (%s)", op.State, op.Error)
				}
				if spent, held := spend(t, e, "team:web"); spent != 0 || held != price {
					t.Fatalf("while in_doubt: spent %d held %d, want 0 and %d", spent, held, price)
				}
				e.sb.SetFaults(sandbox.Faults{})
				var wg sync.WaitGroup
				for range 2 {
					wg.Go(func() { e.srv.Pipeline().pollInDoubt(context.Background()) })
				}
				wg.Wait()
			}
			op := e.waitState(v.OperationID, tc.want)
			if !passedThrough(t, e, v.OperationID, ledger.StateExecuting, ledger.StateInDoubt) {
				t.Fatal("the operation did not pass through in_doubt")
			}
			spent, held := spend(t, e, "team:web")
			if held != 0 {
				t.Fatalf("held %d after reconciliation, want 0", held)
			}
			regs := e.sb.Registrations()
			if got := len(regs) == 1 && regs[0].Domain == domain; got != tc.registered || (!tc.registered && len(regs) != 0) {
				t.Fatalf("sandbox registrations %+v, registered want %v", regs, tc.registered)
			}
			if n := sandboxCalls(e, "POST", "/registrar/registrations"); n != 1 {
				t.Fatalf("%d registration POSTs, want exactly 1 (a billable POST is never retried)", n)
			}
			settled := eventCount(t, e, v.OperationID, ledger.EventBudgetSettled)
			released := eventCount(t, e, v.OperationID, ledger.EventBudgetReleased)
			if tc.registered {
				if op.Charged == nil || op.Charged.Micros != price || spent != price || settled != 1 || released != 0 {
					t.Fatalf("charged %+v spent %d settled %d released %d; want one charge of %d", op.Charged, spent, settled, released, price)
				}
				// The detour is history; the success itself carries no error.
				if op.ErrorCode != "" || op.Error != "" {
					t.Fatalf("succeeded with error %s: %s", op.ErrorCode, op.Error)
				}
			} else {
				if op.ErrorCode != "not_executed" || op.Charged != nil || spent != 0 || settled != 0 || released != 1 {
					t.Fatalf("%s %q charged %+v spent %d settled %d released %d; want released, nothing charged", op.ErrorCode, op.Error, op.Charged, spent, settled, released)
				}
			}
			if rep, err := e.db.Verify(context.Background()); err != nil || !rep.OK {
				t.Fatalf("audit chain: %+v %v", rep, err)
			}
		})
	}
}

func TestDeployInDoubtIsReconciled(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		environment string
		deployed    string
		charge      int64 // the Workers plan commitment on the month's first production deploy
	}{
		{"preview", "preview", "web-doubt-preview", 0},
		{"production", "production", "web-doubt", 5_000_000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, withWebBudget())
			e.sb.SetFaults(sandbox.Faults{FailAfterEffect: true, ErrorRate: 1, PathContains: "/workers/scripts/", Method: http.MethodPut})
			res := e.call(webBot, "deploy_worker", map[string]any{
				"script_name": "web-doubt", "module": okModule, "compatibility_date": "2025-01-01",
				"environment": tc.environment, "reason": reason,
			})
			if res.IsError {
				t.Fatal(text(res))
			}
			v := opView(t, res)
			if tc.environment == "production" {
				e.approve(v.OperationID, "bob")
			}
			op := e.waitState(v.OperationID, ledger.StateSucceeded)
			if !passedThrough(t, e, v.OperationID, ledger.StateExecuting, ledger.StateInDoubt) {
				t.Fatal("the deploy did not pass through in_doubt")
			}
			scripts := e.sb.Scripts()
			sum := sha256.Sum256([]byte(okModule))
			if len(scripts) != 1 || scripts[0].Name != tc.deployed || scripts[0].ModuleSHA256 != hex.EncodeToString(sum[:]) {
				t.Fatalf("sandbox scripts %+v", scripts)
			}
			if n := sandboxCalls(e, http.MethodPut, "/workers/scripts/"); n != 1 {
				t.Fatalf("%d uploads, want 1 (a 5xx upload is not retried)", n)
			}
			spent, held := spend(t, e, "team:web")
			if op.Charged == nil || op.Charged.Micros != tc.charge || spent != tc.charge || held != 0 {
				t.Fatalf("charged %+v spent %d held %d, want %d once and nothing held", op.Charged, spent, held, tc.charge)
			}
			if n := eventCount(t, e, v.OperationID, ledger.EventBudgetSettled); n != 1 || op.ErrorCode != "" {
				t.Fatalf("%d settlements (want 1), error code %q", n, op.ErrorCode)
			}
			if !strings.Contains(string(op.Result), tc.deployed) {
				t.Fatalf("result %s does not name the script", op.Result)
			}
		})
	}
}

// TestStartTakesOverOnlyDeadWork pins what start-up does with Operations
// other processes left before anything reached Cloudflare (planned,
// authorized, reserved, and awaiting_approval without its approval request,
// the crash having fallen between the two writes): those of a process that is
// gone (here: no lease at all, tollgate before leases) are failed and
// released at once, however young; those of a process still running (another
// handle on the file holding a lease) are never touched, however old. A
// pipeline of this process is never taken for a leftover either.
func TestStartTakesOverOnlyDeadWork(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk := newManualClock()
	const amount = 12_180_000
	seeded := map[string]string{} // name -> operation id
	seed := func(db *ledger.DB, name string, to ledger.State) {
		args, _ := json.Marshal(map[string]any{"domain": name + ".dev", "years": 1, "auto_renew": false})
		sum := sha256.Sum256(args)
		op, _, err := db.CreateOperation(ctx, ledger.NewOperation{
			Agent: webBot, Team: "web", Tool: "register_domain", Resource: "domain:" + name + ".dev",
			Args: args, ArgsHash: hex.EncodeToString(sum[:]), Reason: reason,
		})
		if err != nil {
			t.Fatal(err)
		}
		if to != ledger.StatePlanned {
			if _, err := db.Transition(ctx, op.ID, ledger.StateAuthorized, ledger.TransitionOpts{From: []ledger.State{ledger.StatePlanned}}); err != nil {
				t.Fatal(err)
			}
		}
		if to == ledger.StateReserved || to == ledger.StateAwaitingApproval {
			if _, err := db.Reserve(ctx, ledger.ReserveRequest{OperationID: op.ID, Action: "register_domain",
				Amount: money.Money{Micros: amount, Currency: "USD"}}); err != nil {
				t.Fatal(err)
			}
		}
		if to == ledger.StateAwaitingApproval {
			exp := clk.Now().Add(30 * time.Minute)
			if _, err := db.Transition(ctx, op.ID, ledger.StateAwaitingApproval, ledger.TransitionOpts{From: []ledger.State{ledger.StateReserved}, ExpiresAt: &exp}); err != nil {
				t.Fatal(err)
			}
		}
		seeded[name] = op.ID
	}
	budget, _ := BudgetConfig{Scope: "team:web", Window: "day", Limit: dayBudget}.Budget()
	var other *ledger.DB
	e := newEnv(t, withClock(clk.Now), withWebBudget(), withBeforeStart(func(db *ledger.DB) {
		if err := db.SetBudget(ctx, budget, "test"); err != nil {
			t.Fatal(err)
		}
		// Left by a process that is gone, a moment before this start...
		for _, st := range []ledger.State{ledger.StatePlanned, ledger.StateAuthorized, ledger.StateReserved, ledger.StateAwaitingApproval} {
			seed(db, "dead-"+string(st), st)
		}
		// ...and in the middle of the work of one that still runs.
		var err error
		if other, err = ledger.Open(ctx, db.Path(), ledger.WithMigrations(approvals.Migrations), ledger.WithClock(clk.Now), ledger.WithAuditKey(testAuditKey)); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = other.Close() })
		if _, err := other.StartLease(ctx); err != nil {
			t.Fatal(err)
		}
		for _, st := range []ledger.State{ledger.StatePlanned, ledger.StateAuthorized, ledger.StateReserved, ledger.StateAwaitingApproval} {
			seed(other, "live-"+string(st), st)
		}
		clk.Advance(10 * time.Second)
	}))
	state := func(name string) ledger.Operation {
		op, err := e.db.Operation(ctx, seeded[name])
		if err != nil {
			t.Fatal(err)
		}
		return op
	}
	for _, st := range []ledger.State{ledger.StatePlanned, ledger.StateAuthorized, ledger.StateReserved} {
		if op := state("dead-" + string(st)); op.State != ledger.StateFailed || op.ErrorCode != "interrupted" {
			t.Errorf("dead-%s is %s (%s) after start, want failed/interrupted", st, op.State, op.ErrorCode)
		}
	}
	if op := state("dead-awaiting_approval"); op.State != ledger.StateFailed || !strings.Contains(op.Error, "no approver was asked") {
		t.Errorf("dead-awaiting_approval: %s %s %q", op.State, op.ErrorCode, op.Error)
	}
	if _, held := spend(t, e, "team:web"); held != 2*amount {
		t.Fatalf("held %d at start, want the live process's two reservations' %d", held, 2*amount)
	}

	// A pipeline of this process, held in planning by a slow registrar.
	release := make(chan struct{})
	var hold sync.Once
	e.sb.OnRequest(func(r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/domain-check") {
			<-release
		}
	})
	defer hold.Do(func() { close(release) })
	type result struct{ status, id string }
	done := make(chan result, 1)
	go func() {
		v := opView(t, e.call(webBot, "register_domain", registerArgs("slow-quote.dev")))
		done <- result{v.Status, v.OperationID}
	}()
	var live string
	deadline := time.Now().Add(hangGuard)
	for live == "" {
		ops, _, err := e.db.ListOperations(ctx, ledger.OperationQuery{States: []ledger.State{ledger.StatePlanned}})
		if err != nil {
			t.Fatal(err)
		}
		for _, op := range ops {
			if op.Resource == "domain:slow-quote.dev" {
				live = op.ID
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the live operation never appeared")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// An hour on, reclaim passes leave every live process's work alone.
	clk.Advance(time.Hour)
	if err := e.srv.Pipeline().reclaim(ctx, true); err != nil {
		t.Fatal(err)
	}
	for _, st := range []ledger.State{ledger.StatePlanned, ledger.StateAuthorized, ledger.StateReserved, ledger.StateAwaitingApproval} {
		if op := state("live-" + string(st)); op.State != st || op.LeaseID != other.Lease().ID() {
			t.Errorf("live-%s is %s under lease %q: a live process's work was touched", st, op.State, op.LeaseID)
		}
	}
	if op, _ := e.db.Operation(ctx, live); op.State != ledger.StatePlanned {
		t.Fatalf("the live pipeline's operation was taken: %s (%s)", op.State, op.Error)
	}
	hold.Do(func() { close(release) })
	got := <-done
	if got.id != live || got.status != "awaiting_approval" {
		t.Fatalf("the live call ended %+v, want awaiting_approval on %s", got, live)
	}

	// The other process stops without ending its lease (a crash): its work
	// is taken over by the next pass.
	crashed := other.Lease().ID()
	if err := other.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Pipeline().reclaim(ctx, false); err != nil {
		t.Fatal(err)
	}
	for _, st := range []ledger.State{ledger.StatePlanned, ledger.StateAuthorized, ledger.StateReserved, ledger.StateAwaitingApproval} {
		op := e.waitState(seeded["live-"+string(st)], ledger.StateFailed)
		if op.ErrorCode != "interrupted" || !strings.Contains(op.Error, "nothing was charged") {
			t.Errorf("live-%s after its process died (lease %s): %s %q", st, crashed, op.ErrorCode, op.Error)
		}
	}
	if _, held := spend(t, e, "team:web"); held != amount {
		t.Fatalf("held %d, want only this process's live call's %d", held, amount)
	}
	// Nothing of this reached Cloudflare, so nothing was registered.
	if n := len(e.sb.Registrations()); n != 0 {
		t.Fatalf("%d registrations", n)
	}
	if rep, err := e.db.Verify(ctx); err != nil || !rep.OK {
		t.Fatalf("audit chain: %+v %v", rep, err)
	}
}

// TestRefusedStatusPollIsInDoubtNotFailed: a registration Cloudflare
// accepted (202) whose status polls are then refused must not be released as
// "rejected": the registration may still complete. It goes in_doubt and is
// settled once reconciliation finds it.
func TestRefusedStatusPollIsInDoubtNotFailed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withWebBudget())
	v := opView(t, e.call(webBot, "register_domain", registerArgs("slow-launch.dev")))
	e.sb.SetFaults(sandbox.Faults{RateLimitRate: 1, PathContains: "registration-status"})
	e.approve(v.OperationID, "bob")
	deadline := time.Now().Add(hangGuard)
	for !passedThrough(t, e, v.OperationID, ledger.StateExecuting, ledger.StateInDoubt) {
		if op, _ := e.db.Operation(context.Background(), v.OperationID); op.State == ledger.StateFailed {
			t.Fatalf("released as %s: %s, although Cloudflare accepted the registration", op.ErrorCode, op.Error)
		}
		if time.Now().After(deadline) {
			t.Fatal("never went in_doubt")
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.sb.SetFaults(sandbox.Faults{})
	deadline = time.Now().Add(hangGuard)
	for {
		e.srv.Pipeline().pollInDoubt(context.Background())
		op, _ := e.db.Operation(context.Background(), v.OperationID)
		if op.State == ledger.StateSucceeded {
			if op.Charged == nil || op.Charged.Micros != 12_180_000 {
				t.Fatalf("charged %+v", op.Charged)
			}
			return
		}
		if op.State.Terminal() || time.Now().After(deadline) {
			t.Fatalf("ended %s (%s: %s), want succeeded once the registration is active", op.State, op.ErrorCode, op.Error)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestWorkersDevFailureAfterUploadStillSettles: the code went live, so the
// deploy is settled as a success with a warning, never released as failed.
func TestWorkersDevFailureAfterUploadStillSettles(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.sb.SetFaults(sandbox.Faults{RateLimitRate: 1, PathContains: "/subdomain", Method: "POST"})
	res := e.call(webBot, "deploy_worker", map[string]any{
		"script_name": "web-partial", "module": okModule, "compatibility_date": "2025-01-01",
		"environment": "preview", "reason": reason,
	})
	v := opView(t, res)
	if v.Status != "succeeded" || !strings.Contains(string(v.Result), "workers.dev URL could not be enabled") {
		t.Fatalf("want a success carrying a warning, got %s %s: %s", v.Status, v.Error, v.Result)
	}
	if scripts := e.sb.Scripts(); len(scripts) != 1 || scripts[0].Name != "web-partial-preview" {
		t.Fatalf("sandbox scripts %+v", scripts)
	}
}
