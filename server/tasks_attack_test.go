package server

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/ledger"
)

// TestAttackTasksOfAnotherAgent: agent A starts a task-augmented
// register_domain that waits for a human. Agent B, with its own token, knows
// A's task id (ids are not secrets). mcp-go scopes tasks only when both the
// task and the request carry a session, so before the fix a session-less
// tasks/list listed A's task and tasks/get, tasks/result and tasks/cancel
// worked on it. Now B sees nothing of A's, every tasks/* call on A's task is
// refused and audited with both agents named, and A's task and approval are
// untouched.
func TestAttackTasksOfAnotherAgent(t *testing.T) {
	t.Parallel()
	e, base, tokA, tokB := ssTwoAgents(t, withConfig(func(c *Config) { c.Approvals.Wait = 0 }))
	cA := bearerClient(t, base, strings.TrimPrefix(tokA, "Bearer "))
	task := callAsTask(t, cA, "register_domain", registerArgs("tasks-of-a.dev"))
	opID := taskOperation(t, waitTaskMessage(t, cA, task.TaskId, "waiting for a human approver"))
	r := e.pendingApproval(opID)

	initB := trPost(t, base+"/mcp", tokB, "", trInitBody)
	_ = initB.Body.Close()
	sidB := initB.Header.Get("Mcp-Session-Id")
	if sidB == "" {
		t.Fatalf("B's initialize: %s", initB.Status)
	}
	body := func(id int, method, sessionID string) string {
		params := map[string]any{}
		if method != "tasks/list" {
			params["taskId"] = task.TaskId
		}
		if sessionID == ssModern {
			params["_meta"] = map[string]any{"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": map[string]any{}, "io.modelcontextprotocol/clientInfo": map[string]any{"name": "raw-http", "version": "1"}}
		}
		b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "method": method, "params": params})
		return string(b)
	}
	leaks := []string{task.TaskId, opID, "tasks-of-a", "register_domain", webBot, "alice", "waiting"}
	id := 100
	for _, session := range []string{ssModern, sidB} {
		id++
		code, got := taDo(t, base, tokB, session, "tasks/list", body(id, "tasks/list", session))
		if session == ssModern && code == http.StatusNotFound && strings.Contains(got, "removed in protocol version 2026-07-28") {
			// mcp-go has no tasks/list on this protocol: nothing to list.
		} else if code != http.StatusOK || !strings.Contains(got, `"tasks"`) {
			t.Fatalf("B's tasks/list (session %s): %d %s", session, code, got)
		}
		for _, l := range leaks {
			if strings.Contains(got, l) {
				t.Errorf("B's tasks/list (session %s) shows %q of A's task: %s", session, l, got)
			}
		}
		for _, method := range []string{"tasks/get", "tasks/result", "tasks/cancel"} {
			id++
			code, got := taDo(t, base, tokB, session, method, body(id, method, session))
			if (code != http.StatusOK && code != http.StatusBadRequest) || !strings.Contains(got, `"error"`) || !strings.Contains(got, "not created by your agent") {
				t.Errorf("B's %s on A's task (session %s): %d %s, want a JSON-RPC error refusing it", method, session, code, got)
			}
			for _, l := range leaks[1:] {
				if strings.Contains(got, l) {
					t.Errorf("B's %s (session %s) tells %q: %s", method, session, l, got)
				}
			}
		}
	}

	// Every refusal audited as task.refused, B the caller and A the owner.
	var refused []string
	err := e.db.Events(context.Background(), ledger.EventQuery{Types: []string{"task.refused"}}, func(ev ledger.Event) error {
		var d struct {
			Agent, Owner, Method string
			TaskID               string `json:"task_id"`
		}
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			return err
		}
		if ev.Actor != opsBot || d.Agent != opsBot || d.Owner != webBot || d.TaskID != task.TaskId {
			t.Errorf("task.refused actor %q data %+v, want caller %s, owner %s, task %s", ev.Actor, d, opsBot, webBot, task.TaskId)
		}
		refused = append(refused, d.Method)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(refused) != 6 {
		t.Fatalf("%d task.refused events (%v), want 6: get, result, cancel, each session-less (2026-07-28) and in B's own session", len(refused), refused)
	}

	// A's task still waits, A still sees it (session-less too), and the
	// approval was not withdrawn.
	if st := getTask(t, cA, task.TaskId); st.Status != mcp.TaskStatusWorking {
		t.Fatalf("A's task after the attack: %+v", st)
	}
	code, got := taDo(t, base, tokA, ssModern, "tasks/get", body(1, "tasks/get", ssModern))
	if code != http.StatusOK || !strings.Contains(got, task.TaskId) || !strings.Contains(got, "waiting for a human approver") {
		t.Errorf("A's own session-less tasks/get: %d %s", code, got)
	}
	list, err := cA.ListTasks(context.Background(), mcp.ListTasksRequest{})
	if err != nil || len(list.Tasks) != 1 || list.Tasks[0].TaskId != task.TaskId {
		t.Errorf("A's own tasks/list: %+v %v", list, err)
	}
	if cur, err := e.srv.Approvals().ByOperation(context.Background(), opID); err != nil || cur.ID != r.ID || cur.State != approvals.StatePending {
		t.Fatalf("A's approval after the attack: %+v %v", cur, err)
	}
	if op, err := e.db.Operation(context.Background(), opID); err != nil || op.State != ledger.StateAwaitingApproval {
		t.Fatalf("A's operation after the attack: %+v %v", op, err)
	}
}

// taDo posts one JSON-RPC request to /mcp, in sessionID's session or, for
// ssModern, session-less on protocol 2026-07-28 (with its Mcp-Method header).
func taDo(t *testing.T, base, authorization, sessionID, method, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/mcp", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", authorization)
	if sessionID == ssModern {
		req.Header.Set("Mcp-Protocol-Version", "2026-07-28")
		req.Header.Set("Mcp-Method", method)
	} else if sessionID != "" {
		req.Header.Set("Mcp-Session-Id", sessionID)
		req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, string(b)
}
