package ledger

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgatehq/tollgate/ledger/money"
)

func TestCreateOperationRecordsEverything(t *testing.T) {
	t.Parallel()
	eachBackend(t, testCreateOperationRecordsEverything)
}

func testCreateOperationRecordsEverything(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk := newClock(time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC))
	db := openTest(t, WithClock(clk.Now))
	module := []byte("export default { fetch() { return new Response('hi') } }")
	n := NewOperation{
		Agent: "web-bot", Team: "web", Tool: "deploy_worker", Resource: "worker_script:web-app",
		Args:     json.RawMessage(`{ "script_name": "web-app", "environment": "preview" }`),
		ArgsHash: hashOf("deploy web-app"), Reason: "ship the landing page", IdempotencyKey: "deploy-1",
		Client: ClientInfo{Name: "claude-code", Version: "1.2", SessionID: "s1", Transport: "http"},
		Blob:   module,
	}
	op, created, err := db.CreateOperation(ctx, n, NewEvent("call.received", "agent:web-bot", "", map[string]any{"tool": "deploy_worker"}))
	if err != nil || !created {
		t.Fatalf("CreateOperation: %v created=%v", err, created)
	}
	if len(op.ID) != 29 || !strings.HasPrefix(op.ID, "op_") || checkOperationID(op.ID) != nil {
		t.Fatalf("bad id %q", op.ID)
	}
	if op.State != StatePlanned || op.KeyDerived || op.IdempotencyKey != "deploy-1" || op.Client != n.Client ||
		!op.CreatedAt.Equal(clk.Now()) || op.Quote != (money.Money{}) || op.Charged != nil {
		t.Fatalf("unexpected operation %+v", op)
	}
	if string(op.Args) != `{"script_name":"web-app","environment":"preview"}` {
		t.Fatalf("args not compacted: %s", op.Args)
	}
	if op.BlobSHA256 != hashOf(string(module)) {
		t.Fatalf("blob sha = %q", op.BlobSHA256)
	}
	got, err := db.Blob(ctx, op.BlobSHA256)
	if err != nil || !bytes.Equal(got, module) {
		t.Fatalf("Blob = %q, %v", got, err)
	}
	if _, err := db.Blob(ctx, hashOf("nope")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Blob(missing) = %v", err)
	}
	if _, err := db.Blob(ctx, "../etc"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Blob(malformed) = %v", err)
	}
	read, err := db.Operation(ctx, op.ID)
	if err != nil || read.ID != op.ID || read.Reason != n.Reason {
		t.Fatalf("Operation = %+v, %v", read, err)
	}
	hist, err := db.History(ctx, op.ID)
	if err != nil || len(hist) != 2 || hist[0].Type != EventOperationCreated || hist[1].Type != "call.received" || hist[1].OperationID != op.ID {
		t.Fatalf("History = %+v, %v", hist, err)
	}
	if _, err := db.Operation(ctx, "op_aaaaaaaaaaaaaaaaaaaaaaaaaa"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing op: %v", err)
	}
	if _, err := db.Operation(ctx, "'; DROP TABLE operations; --"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "malformed") {
		t.Fatalf("malformed id: %v", err)
	}
}

func TestCreateOperationRejectsBadInput(t *testing.T) {
	t.Parallel()
	eachBackend(t, testCreateOperationRejectsBadInput)
}

func testCreateOperationRejectsBadInput(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	good := NewOperation{Agent: "a", Team: "t", Tool: "register_domain", ArgsHash: hashOf("x"), Args: json.RawMessage(`{}`)}
	tests := []struct {
		name string
		mod  func(*NewOperation)
		want string
	}{
		{"no agent", func(n *NewOperation) { n.Agent = "" }, "agent name"},
		{"agent with colon", func(n *NewOperation) { n.Agent = "a:b" }, "agent name"},
		{"team with space", func(n *NewOperation) { n.Team = "a b" }, "team name"},
		{"no tool", func(n *NewOperation) { n.Tool = "" }, "tool"},
		{"short hash", func(n *NewOperation) { n.ArgsHash = "abc" }, "args hash"},
		{"upper hash", func(n *NewOperation) { n.ArgsHash = strings.ToUpper(hashOf("x")) }, "args hash"},
		{"bad json", func(n *NewOperation) { n.Args = json.RawMessage(`{`) }, "JSON"},
		{"reserved key", func(n *NewOperation) { n.IdempotencyKey = "auto:123" }, "reserved"},
		{"key with space", func(n *NewOperation) { n.IdempotencyKey = "a b" }, "idempotency key"},
		{"long key", func(n *NewOperation) { n.IdempotencyKey = strings.Repeat("k", 201) }, "idempotency key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			n := good
			tt.mod(&n)
			if _, _, err := db.CreateOperation(context.Background(), n); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want containing %q", err, tt.want)
			}
		})
	}
	if n := countRows(t, db, `SELECT COUNT(*) FROM operations`); n != 0 {
		t.Fatalf("%d operations written by rejected calls", n)
	}
}

func TestIdempotencyRace(t *testing.T) { t.Parallel(); eachBackend(t, testIdempotencyRace) }

func testIdempotencyRace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openTest(t)
	n := NewOperation{Agent: "web-bot", Team: "web", Tool: "register_domain", Args: json.RawMessage(`{"domain":"a.dev"}`),
		ArgsHash: hashOf("a.dev"), Reason: "race", IdempotencyKey: "same-key"}
	const callers = 50
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		ids     = map[string]int{}
		created int
	)
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			op, c, err := db.CreateOperation(ctx, n)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			ids[op.ID]++
			if c {
				created++
			}
		}()
	}
	wg.Wait()
	if len(ids) != 1 || created != 1 {
		t.Fatalf("%d distinct operations, %d created; want 1 and 1", len(ids), created)
	}
	if c := countRows(t, db, `SELECT COUNT(*) FROM audit_events WHERE type = ?`, EventOperationCreated); c != 1 {
		t.Fatalf("%d operation.created events", c)
	}

	// Different arguments under the same key never rebind it.
	n2 := n
	n2.ArgsHash = hashOf("b.dev")
	if _, _, err := db.CreateOperation(ctx, n2); !errors.Is(err, ErrIdempotencyConflict) {
		t.Fatalf("different args: %v", err)
	}
	n3 := n
	n3.Tool = "deploy_worker"
	if _, _, err := db.CreateOperation(ctx, n3); !errors.Is(err, ErrIdempotencyConflict) {
		t.Fatalf("different tool: %v", err)
	}
	// The same key for another agent is another operation.
	n4 := n
	n4.Agent = "other-bot"
	if _, c, err := db.CreateOperation(ctx, n4); err != nil || !c {
		t.Fatalf("other agent: created=%v err=%v", c, err)
	}
	// A finished operation is still returned for its key, not re-run.
	var id string
	for k := range ids {
		id = k
	}
	if _, err := db.Transition(ctx, id, StateDenied, TransitionOpts{ErrorCode: "policy_denied", Error: "no"}); err != nil {
		t.Fatal(err)
	}
	op, c, err := db.CreateOperation(ctx, n)
	if err != nil || c || op.ID != id || op.State != StateDenied {
		t.Fatalf("after deny: %+v created=%v err=%v", op, c, err)
	}
}

func TestDerivedKeyWindow(t *testing.T) { t.Parallel(); eachBackend(t, testDerivedKeyWindow) }

func testDerivedKeyWindow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk := newClock(time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC))
	db := openTest(t, WithClock(clk.Now), WithDerivedKeyWindow(10*time.Minute))
	n := NewOperation{Agent: "web-bot", Team: "web", Tool: "register_domain", Args: json.RawMessage(`{"domain":"a.dev"}`), ArgsHash: hashOf("a.dev")}

	first, c, err := db.CreateOperation(ctx, n)
	if err != nil || !c || !first.KeyDerived {
		t.Fatalf("first: %+v %v %v", first, c, err)
	}
	wantKey := "auto:" + n.ArgsHash[:16] + ":" + "1795341600"
	if first.IdempotencyKey != wantKey {
		t.Fatalf("derived key %q, want %q", first.IdempotencyKey, wantKey)
	}
	// A retry within the window is the same operation.
	clk.Advance(9 * time.Minute)
	again, c, err := db.CreateOperation(ctx, n)
	if err != nil || c || again.ID != first.ID {
		t.Fatalf("retry in window: %s created=%v err=%v", again.ID, c, err)
	}
	// Other tool or other args: other operations.
	other := n
	other.ArgsHash = hashOf("b.dev")
	if op, c, _ := db.CreateOperation(ctx, other); !c || op.ID == first.ID {
		t.Fatal("different args reused the operation")
	}
	// After the window, a new operation.
	clk.Advance(2 * time.Minute)
	later, c, err := db.CreateOperation(ctx, n)
	if err != nil || !c || later.ID == first.ID {
		t.Fatalf("after window: %s created=%v err=%v", later.ID, c, err)
	}
	// A refused operation is not reused: the retry must be able to try again, even
	// within the same second (the key gets a suffix instead of colliding).
	if _, err := db.Transition(ctx, later.ID, StateDenied, TransitionOpts{ErrorCode: "policy_denied"}); err != nil {
		t.Fatal(err)
	}
	retry, c, err := db.CreateOperation(ctx, n)
	if err != nil || !c || retry.ID == later.ID || retry.IdempotencyKey != later.IdempotencyKey+":2" {
		t.Fatalf("retry after deny: %+v created=%v err=%v", retry, c, err)
	}
	// A succeeded one within the window is returned (no second registration).
	for _, s := range []State{StateAuthorized} {
		if _, err := db.Transition(ctx, retry.ID, s, TransitionOpts{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Reserve(ctx, ReserveRequest{OperationID: retry.ID, Action: "register_domain", Amount: usd("8.57")}); err != nil {
		t.Fatal(err)
	}
	if err := execute(ctx, db, retry.ID, false); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Settle(ctx, retry.ID, SettleRequest{Actual: usd("8.57")}); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Minute)
	same, c, err := db.CreateOperation(ctx, n)
	if err != nil || c || same.ID != retry.ID || same.State != StateSucceeded {
		t.Fatalf("retry after success: %+v created=%v err=%v", same, c, err)
	}
}

func TestTransitions(t *testing.T) { t.Parallel(); eachBackend(t, testTransitions) }

func testTransitions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openTest(t)
	op := newOp(t, db, "a", "t", "register_domain", "x.dev")

	// Unexpected current state: conflict naming the actual state.
	_, err := db.Transition(ctx, op.ID, StateAuthorized, TransitionOpts{From: []State{StateReserved}})
	var sc *StateConflictError
	if !errors.Is(err, ErrStateConflict) || !errors.As(err, &sc) || sc.Actual != StatePlanned {
		t.Fatalf("From mismatch: %v", err)
	}
	// Illegal move.
	if _, err := db.Transition(ctx, op.ID, StateSucceeded, TransitionOpts{}); !errors.Is(err, ErrStateConflict) || !strings.Contains(err.Error(), "not a legal move") {
		t.Fatalf("illegal move: %v", err)
	}
	// reserved only through Reserve.
	a, err := db.Transition(ctx, op.ID, StateAuthorized, TransitionOpts{Actor: "cerbos"})
	if err != nil || a.State != StateAuthorized {
		t.Fatal(err)
	}
	if _, err := db.Transition(ctx, op.ID, StateReserved, TransitionOpts{}); !errors.Is(err, ErrStateConflict) || !strings.Contains(err.Error(), "Reserve") {
		t.Fatalf("to reserved: %v", err)
	}
	if _, err := db.Transition(ctx, op.ID, "bogus", TransitionOpts{}); err == nil || !strings.Contains(err.Error(), "unknown state") {
		t.Fatalf("unknown state: %v", err)
	}
	if _, err := db.Reserve(ctx, ReserveRequest{OperationID: op.ID, Amount: usd("1")}); err != nil {
		t.Fatal(err)
	}
	// Terminal moves with holds go through Settle/Release.
	if _, err := db.Transition(ctx, op.ID, StateFailed, TransitionOpts{}); !errors.Is(err, ErrStateConflict) || !strings.Contains(err.Error(), "Release") {
		t.Fatalf("fail with holds: %v", err)
	}
	exp := time.Date(2026, 11, 22, 11, 0, 0, 0, time.UTC)
	w, err := db.Transition(ctx, op.ID, StateAwaitingApproval, TransitionOpts{ExpiresAt: &exp, Result: json.RawMessage(`{"pending": true}`)},
		NewEvent("approval.requested", "system", "", map[string]any{"channel": "C1"}))
	if err != nil || w.ExpiresAt == nil || !w.ExpiresAt.Equal(exp) || string(w.Result) != `{"pending":true}` {
		t.Fatalf("awaiting: %+v %v", w, err)
	}
	// The expiry timer races an approval: ReleaseFrom only expires a pending op.
	if _, err := db.ReleaseFrom(ctx, op.ID, []State{StateApproved}, StateFailed, "x", "y"); !errors.Is(err, ErrStateConflict) {
		t.Fatalf("ReleaseFrom wrong state: %v", err)
	}
	r, err := db.ReleaseFrom(ctx, op.ID, []State{StateAwaitingApproval}, StateExpired, "expired", "nobody approved within 30m")
	if err != nil || r.State != StateExpired || r.ErrorCode != "expired" || r.Error != "nobody approved within 30m" {
		t.Fatalf("release: %+v %v", r, err)
	}
	// Terminal: nothing moves it, not even Release.
	if _, err := db.Release(ctx, op.ID, StateFailed, "x", "y"); !errors.Is(err, ErrStateConflict) || !strings.Contains(err.Error(), "terminal") {
		t.Fatalf("release terminal: %v", err)
	}
	if _, err := db.Release(ctx, op.ID, StateSucceeded, "x", "y"); err == nil {
		t.Fatal("release to succeeded accepted")
	}
	hist, err := db.History(ctx, op.ID)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, e := range hist {
		types = append(types, e.Type)
	}
	want := "operation.created operation.state operation.state budget.reserved operation.state approval.requested operation.state budget.released"
	if strings.Join(types, " ") != want {
		t.Fatalf("history %v\nwant     %s", types, want)
	}
	var last map[string]any
	_ = json.Unmarshal(hist[len(hist)-2].Data, &last)
	if last["from"] != "awaiting_approval" || last["to"] != "expired" || last["code"] != "expired" {
		t.Fatalf("state event data %v", last)
	}
	if hist[1].Actor != "cerbos" {
		t.Fatalf("actor %q", hist[1].Actor)
	}
	mustInvariants(t, db, true)
}

func TestStateMachineTable(t *testing.T) {
	t.Parallel()
	all := []State{StatePlanned, StateAuthorized, StateReserved, StateAwaitingApproval, StateApproved, StateExecuting,
		StateSucceeded, StateFailed, StateDenied, StateExpired, StateInDoubt, StateCancelled}
	for _, s := range all {
		if !s.Valid() {
			t.Errorf("%s not valid", s)
		}
		if s.Terminal() != (len(transitions[s]) == 0) {
			t.Errorf("%s: Terminal() = %v but has %d moves", s, s.Terminal(), len(transitions[s]))
		}
		// Every non-terminal state can fail, so Release always has a way out.
		if !s.Terminal() && !CanMove(s, StateFailed) {
			t.Errorf("%s cannot move to failed", s)
		}
	}
	if State("nope").Valid() {
		t.Error("unknown state valid")
	}
	if CanMove(StateExecuting, StateCancelled) || CanMove(StatePlanned, StateExecuting) || CanMove(StateInDoubt, StateCancelled) {
		t.Error("unsafe move allowed")
	}
}

func TestListOperations(t *testing.T) { t.Parallel(); eachBackend(t, testListOperations) }

func testListOperations(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openTest(t)
	var mine []string
	for i := range 45 {
		agent := "a1"
		if i%3 == 0 {
			agent = "a2"
		}
		op := newOp(t, db, agent, "t", "register_domain", newID("", 8)+".dev")
		if agent == "a1" {
			mine = append(mine, op.ID)
		}
	}
	// Page through a1's operations newest first.
	var got []string
	cursor := ""
	pages := 0
	for {
		ops, next, err := db.ListOperations(ctx, OperationQuery{Agent: "a1", Cursor: cursor, Limit: 7})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, o := range ops {
			if o.Agent != "a1" {
				t.Fatalf("foreign op %s", o.Agent)
			}
			got = append(got, o.ID)
		}
		if next == "" {
			break
		}
		cursor = next
	}
	if len(got) != len(mine) || pages != 5 {
		t.Fatalf("got %d ops in %d pages, want %d in 5", len(got), pages, len(mine))
	}
	for i := range got {
		if got[i] != mine[len(mine)-1-i] {
			t.Fatalf("order differs at %d", i)
		}
	}
	// Default limit 20; state filter; team filter.
	ops, next, err := db.ListOperations(ctx, OperationQuery{})
	if err != nil || len(ops) != 20 || next == "" {
		t.Fatalf("default page: %d %q %v", len(ops), next, err)
	}
	if _, err := db.Transition(ctx, mine[0], StateDenied, TransitionOpts{}); err != nil {
		t.Fatal(err)
	}
	ops, next, err = db.ListOperations(ctx, OperationQuery{States: []State{StateDenied}, Team: "t"})
	if err != nil || len(ops) != 1 || ops[0].ID != mine[0] || next != "" {
		t.Fatalf("state filter: %v %q %v", ops, next, err)
	}
	for _, q := range []OperationQuery{{Limit: 101}, {Limit: -1}, {States: []State{"nope"}}, {Cursor: "garbage"}, {Cursor: "c1.LTE"}} {
		if _, _, err := db.ListOperations(ctx, q); err == nil {
			t.Errorf("query %+v accepted", q)
		}
	}
}

func FuzzDecodeCursor(f *testing.F) {
	for _, s := range []string{encodeCursor(1), encodeCursor(1 << 40), "", "c1.", "c1.LTE", "c1.MDE", "c1.!!", "c2.MQ", strings.Repeat("c1.", 20)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		seq, err := decodeCursor(s)
		if err != nil {
			if !strings.Contains(err.Error(), "next_cursor") {
				t.Fatalf("error does not say what to pass: %v", err)
			}
			return
		}
		if seq <= 0 || encodeCursor(seq) != s {
			t.Fatalf("accepted %q as %d (re-encodes to %q)", s, seq, encodeCursor(seq))
		}
	})
}
