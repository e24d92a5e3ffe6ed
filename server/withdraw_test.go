package server

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/tollgatehq/tollgate/approvals"
	slackchan "github.com/tollgatehq/tollgate/approvals/slack"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/tools"
)

// globalRemaining is the headroom of the built-in global day budget.
func globalRemaining(t *testing.T, e *testEnv) int64 {
	t.Helper()
	sts, err := e.db.BudgetStatuses(context.Background(), ledger.GlobalScope)
	if err != nil || len(sts) != 1 {
		t.Fatalf("global budget: %+v %v", sts, err)
	}
	return sts[0].Remaining.Micros
}

// TestCancelOperationWithdrawsTheApproval: cancel_operation withdraws a
// pending approval: only the agent's own (another agent's reads as not
// found), the hold is released, the Slack message says so, every later vote
// (Slack, CLI) is refused with "withdrawn by the agent", nothing is bought,
// and each step is audited.
func TestCancelOperationWithdrawsTheApproval(t *testing.T) {
	t.Parallel()
	e, sl := newSlackEnv(t, withConfig(func(c *Config) { c.Approvals.Wait = 0 }))
	full := globalRemaining(t, e)
	v := opView(t, e.call(webBot, "register_domain", registerArgs("withdraw-me.dev")))
	r := e.pendingApproval(v.OperationID)
	sl.rec.waitPost(t, r.ID)
	if held := full - globalRemaining(t, e); held <= 0 {
		t.Fatalf("nothing held while awaiting approval (%d)", held)
	}

	other := e.call(opsBot, "cancel_operation", map[string]any{"operation_id": v.OperationID, "reason": "not mine, but let me try"})
	if !other.IsError || !strings.Contains(text(other), "no operation "+v.OperationID+" that you can withdraw") {
		t.Fatalf("another agent withdrew it: %s", text(other))
	}
	res := e.call(webBot, "cancel_operation", map[string]any{"operation_id": v.OperationID, "reason": "the launch moved to another name"})
	if res.IsError { // the withdrawal is what was asked for: a success
		t.Fatalf("cancel_operation: %s", text(res))
	}
	got := structured[tools.OperationView](t, res)
	if got.Status != "cancelled" || got.ErrorCode != "withdrawn" || !strings.Contains(got.Error, "the launch moved to another name") ||
		got.Approval == nil || got.Approval.State != approvals.StateCancelled {
		t.Fatalf("withdrawn operation %+v", got)
	}
	if now := globalRemaining(t, e); now != full {
		t.Errorf("headroom %d after the withdrawal, want %d: the hold is not released", now, full)
	}
	sl.rec.waitUpdate(t, "Withdrawn by the agent", "the launch moved to another name")

	sl.approve(t, "U0BOB", r.ID)
	if got := sl.rec.lastEphemeral(t, "U0BOB"); got != slackchan.ReplyWithdrawn {
		t.Errorf("a Slack click on the withdrawn request: %q", got)
	}
	_, err := e.srv.Approvals().Decide(context.Background(), approvals.VoteInput{RequestID: r.ID, Approver: "bob", Via: approvals.ViaCLI, Outcome: approvals.OutcomeApprove})
	if !errors.Is(err, approvals.ErrWithdrawn) || !strings.Contains(err.Error(), "withdrawn by the agent") {
		t.Errorf("a CLI vote on the withdrawn request: %v", err)
	}
	if op, _ := e.db.Operation(context.Background(), v.OperationID); op.State != ledger.StateCancelled {
		t.Errorf("operation %s after the refused votes", op.State)
	}
	if n := len(e.sb.Registrations()); n != 0 {
		t.Fatalf("%d registrations after a withdrawal", n)
	}
	for typ, want := range map[string]string{
		approvals.EventWithdrawn: r.ID,
		"operation.withdrawn":    "the launch moved to another name",
		"policy.decision":        `"action":"cancel"`,
		approvals.EventRejected:  `"code":"withdrawn"`,
	} {
		if !e.auditHas(typ, want) {
			t.Errorf("no %s event with %s", typ, want)
		}
	}
	again := e.call(webBot, "cancel_operation", map[string]any{"operation_id": v.OperationID, "reason": "the launch moved to another name"})
	if !again.IsError || !strings.Contains(text(again), "already ended (cancelled)") {
		t.Errorf("withdrawing twice: %s", text(again))
	}
}

// TestCancelledTaskWithdrawsTheApproval: tasks/cancel on a task that waits
// for a human withdraws its approval and releases the hold; a later click
// buys nothing (issue 12: it used to charge 12.18 USD).
func TestCancelledTaskWithdrawsTheApproval(t *testing.T) {
	t.Parallel()
	e, sl := newSlackEnv(t, withConfig(func(c *Config) { c.Approvals.Wait = 0 }))
	full := globalRemaining(t, e)
	c := mcpHTTPClient(t, sl.url)
	task := callAsTask(t, c, "register_domain", registerArgs("cancel-window.dev"))
	opID := taskOperation(t, waitTaskMessage(t, c, task.TaskId, "waiting for a human approver"))
	r := e.pendingApproval(opID)

	if _, err := c.CancelTask(context.Background(), mcp.CancelTaskRequest{Params: mcp.CancelTaskParams{TaskId: task.TaskId}}); err != nil {
		t.Fatal(err)
	}
	if st := getTask(t, c, task.TaskId); st.Status != mcp.TaskStatusCancelled {
		t.Fatalf("task after cancel: %+v", st)
	}
	op := e.waitState(opID, ledger.StateCancelled)
	if op.ErrorCode != "withdrawn" || !strings.Contains(op.Error, "cancelled the MCP task") {
		t.Errorf("operation %+v", op)
	}
	if now := globalRemaining(t, e); now != full {
		t.Errorf("headroom %d after the task was cancelled, want %d", now, full)
	}
	sl.approve(t, "U0BOB", r.ID)
	if got := sl.rec.lastEphemeral(t, "U0BOB"); got != slackchan.ReplyWithdrawn {
		t.Errorf("a click after the cancel: %q", got)
	}
	if n := len(e.sb.Registrations()); n != 0 {
		t.Fatalf("%d registrations after the task was cancelled", n)
	}
}

// TestConsoleVoteOnWithdrawnRequest: the console shows a withdrawn request
// as such and refuses an approve POST on it, saying why.
func TestConsoleVoteOnWithdrawnRequest(t *testing.T) {
	t.Parallel()
	e, base := consoleEnv(t, withConfig(func(c *Config) { c.Approvals.Wait = 0 }))
	v := opView(t, e.call(webBot, "register_domain", registerArgs("console-withdrawn.dev")))
	id := e.pendingApproval(v.OperationID).ID
	c := httpSignIn(t, base, e.link(t, "bob", "", 0))
	_, page := get(t, c, base+"/console/approvals/"+id)
	m := csrfField.FindStringSubmatch(page)
	if m == nil {
		t.Fatal("no CSRF token on the page")
	}
	if res := e.call(webBot, "cancel_operation", map[string]any{"operation_id": v.OperationID, "reason": "changed my mind about it"}); !strings.Contains(text(res), `"status": "cancelled"`) {
		t.Fatalf("cancel_operation: %s", text(res))
	}
	req, _ := http.NewRequest(http.MethodPost, base+"/console/approvals/"+id+"/approve", strings.NewReader(url.Values{"csrf": {m[1]}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", base)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict {
		t.Fatalf("approve on a withdrawn request: %d", resp.StatusCode)
	}
	if _, page = get(t, c, base+"/console/approvals/"+id); !strings.Contains(page, "withdrawn by the agent") {
		t.Errorf("the page does not say the request was withdrawn")
	}
	if n := len(e.sb.Registrations()); n != 0 {
		t.Fatalf("%d registrations", n)
	}
}

// TestCancelledRequestWithdrawsTheApproval: over streamable HTTP, a plain
// tools/call that waits for a human, then notifications/cancelled for it on
// the same session: the approval is withdrawn, the hold released, and a
// later approval does nothing. A client that merely disconnects withdraws
// nothing (TestMCPClientGoneBeforeClick).
func TestCancelledRequestWithdrawsTheApproval(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) { c.Approvals.Wait = 5 * time.Minute }))
	base := trServeHTTP(t, e)
	full := globalRemaining(t, e)
	init := trPost(t, base+"/mcp", "", "", trInitBody)
	_ = init.Body.Close()
	sid := init.Header.Get("Mcp-Session-Id")
	n := trPost(t, base+"/mcp", "", sid, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	_ = n.Body.Close()
	done := make(chan string, 1)
	go func() {
		_, body := ssDo(t, http.MethodPost, base+"/mcp", "", sid,
			`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"register_domain","arguments":{"domain":"cancel-request.dev","reason":"a test of cancellation"}}}`)
		done <- body
	}()
	var r approvals.Request
	deadline := time.Now().Add(hangGuard)
	for {
		pending, err := e.srv.Approvals().List(context.Background(), approvals.StatePending)
		if err != nil {
			t.Fatal(err)
		}
		if len(pending) == 1 {
			r = pending[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no pending approval")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, body := ssDo(t, http.MethodPost, base+"/mcp", "", sid,
		`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":7,"reason":"not needed any more"}}`); code != http.StatusAccepted {
		t.Fatalf("notifications/cancelled: %d %s", code, body)
	}
	op := e.waitState(r.OperationID, ledger.StateCancelled)
	if op.ErrorCode != "withdrawn" || !strings.Contains(op.Error, "notifications/cancelled") {
		t.Errorf("operation %+v", op)
	}
	if got, err := e.srv.Approvals().Get(context.Background(), r.ID); err != nil || !got.Withdrawn {
		t.Fatalf("approval %+v %v, want withdrawn", got, err)
	}
	if now := globalRemaining(t, e); now != full {
		t.Errorf("headroom %d after the request was cancelled, want %d", now, full)
	}
	select {
	case <-done:
	case <-time.After(hangGuard):
		t.Fatal("the cancelled call did not end")
	}
	if _, err := e.srv.Approvals().Decide(context.Background(), approvals.VoteInput{RequestID: r.ID, Approver: "bob", Via: approvals.ViaCLI, Outcome: approvals.OutcomeApprove}); !errors.Is(err, approvals.ErrWithdrawn) {
		t.Fatalf("a vote after the cancel: %v", err)
	}
	if n := len(e.sb.Registrations()); n != 0 {
		t.Fatalf("%d registrations after the request was cancelled", n)
	}
}
