package server

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
)

// MCP tasks (protocol 2025-11-25, mcp-go hybrid mode): register_domain and
// deploy_worker declare execution.taskSupport "optional". A client that sends
// a task-augmented tools/call gets a task at once; the task stays working
// while a human decides, tasks/get says what it waits for, and tasks/result
// yields the Operation once it is done.

var taskCallID atomic.Int64

// callAsTask sends a task-augmented tools/call (mcp-go's Client.CallTool
// expects a CallToolResult, so the request goes through the transport).
func callAsTask(t *testing.T, c *client.Client, name string, args map[string]any) mcp.Task {
	t.Helper()
	ttl := int64(10 * 60 * 1000)
	resp, err := c.GetTransport().SendRequest(context.Background(), transport.JSONRPCRequest{
		JSONRPC: mcp.JSONRPC_VERSION,
		ID:      mcp.NewRequestId(900000 + taskCallID.Add(1)),
		Method:  string(mcp.MethodToolsCall),
		Params:  mcp.CallToolParams{Name: name, Arguments: args, Task: &mcp.TaskParams{TTL: &ttl}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Error != nil {
		t.Fatalf("task-augmented %s: %d %s", name, resp.Error.Code, resp.Error.Message)
	}
	var created mcp.CreateTaskResult
	if err := json.Unmarshal(resp.Result, &created); err != nil {
		t.Fatalf("CreateTaskResult %s: %v", resp.Result, err)
	}
	if created.Task.TaskId == "" {
		t.Fatalf("no task in %s", resp.Result)
	}
	return created.Task
}

func getTask(t *testing.T, c *client.Client, id string) mcp.Task {
	t.Helper()
	res, err := c.GetTask(context.Background(), mcp.GetTaskRequest{Params: mcp.GetTaskParams{TaskId: id}})
	if err != nil {
		t.Fatalf("tasks/get %s: %v", id, err)
	}
	return res.Task
}

// waitTaskMessage polls tasks/get until the task's status message contains want.
func waitTaskMessage(t *testing.T, c *client.Client, id, want string) mcp.Task {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for {
		task := getTask(t, c, id)
		if task.Status == mcp.TaskStatusWorking && strings.Contains(task.StatusMessage, want) {
			return task
		}
		if task.Status.IsTerminal() || time.Now().After(deadline) {
			t.Fatalf("task %s is %s (%q), want working with %q", id, task.Status, task.StatusMessage, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestToolsDeclareOptionalTaskSupport(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.inProcessClient(t)
	caps := c.GetServerCapabilities()
	if caps.Tasks == nil || caps.Tasks.Requests == nil || caps.Tasks.Requests.Tools == nil || caps.Tasks.Requests.Tools.Call == nil {
		t.Fatalf("server does not offer task-augmented tools/call: %+v", caps.Tasks)
	}
	list, err := c.ListTools(context.Background(), mcp.ListToolsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	support := map[string]mcp.TaskSupport{}
	for _, tool := range list.Tools {
		if tool.Execution != nil {
			support[tool.Name] = tool.Execution.TaskSupport
		}
	}
	for _, name := range []string{"register_domain", "deploy_worker"} {
		if support[name] != mcp.TaskSupportOptional {
			t.Errorf("%s taskSupport %q, want optional", name, support[name])
		}
	}
}

// TestRegisterRunsAsTaskUntilApproved runs over streamable HTTP, where the
// POST that creates the task ends at once: the task must outlive it, and the
// blocking wait (zero here) does not apply to a task.
func TestRegisterRunsAsTaskUntilApproved(t *testing.T) {
	t.Parallel()
	e, sl := newSlackEnv(t, withConfig(func(c *Config) { c.Approvals.Wait = 0 }))
	c := mcpHTTPClient(t, sl.url)

	task := callAsTask(t, c, "register_domain", registerArgs("as-a-task.dev"))
	if task.Status != mcp.TaskStatusWorking {
		t.Fatalf("new task %+v", task)
	}
	got := waitTaskMessage(t, c, task.TaskId, "waiting for a human approver")
	if !strings.Contains(got.StatusMessage, "expires ") {
		t.Errorf("status message %q does not say until when", got.StatusMessage)
	}
	r := e.pendingApproval(taskOperation(t, got))
	sl.rec.waitPost(t, r.ID)
	list, err := c.ListTasks(context.Background(), mcp.ListTasksRequest{})
	if err != nil {
		t.Fatal(err)
	}
	listed := false
	for _, lt := range list.Tasks {
		if lt.TaskId == task.TaskId {
			listed = strings.Contains(lt.StatusMessage, "waiting for a human approver")
		}
	}
	if !listed {
		t.Errorf("tasks/list does not say what the task waits for: %+v", list.Tasks)
	}
	// Still working well after the blocking wait would have returned.
	time.Sleep(300 * time.Millisecond)
	if st := getTask(t, c, task.TaskId); st.Status != mcp.TaskStatusWorking {
		t.Fatalf("task ended before the decision: %+v", st)
	}

	sl.approve(t, "U0BOB", r.ID)
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	res, err := c.TaskResult(ctx, mcp.TaskResultRequest{Params: mcp.TaskResultParams{TaskId: task.TaskId}})
	if err != nil {
		t.Fatalf("tasks/result: %v", err)
	}
	if res.IsError {
		t.Fatalf("task result is an error: %+v", res.Content)
	}
	v := opView(t, &mcp.CallToolResult{StructuredContent: res.StructuredContent})
	if v.Status != "succeeded" || v.Resource != "domain:as-a-task.dev" || len(v.Result) == 0 {
		t.Fatalf("task result %+v", v)
	}
	if st := getTask(t, c, task.TaskId); st.Status != mcp.TaskStatusCompleted {
		t.Errorf("task after the result: %+v", st)
	}
	if regs := e.sb.Registrations(); len(regs) != 1 || regs[0].Domain != "as-a-task.dev" {
		t.Fatalf("registrations %+v", regs)
	}
}

// taskOperation is the operation a working task's status message names.
func taskOperation(t *testing.T, task mcp.Task) string {
	t.Helper()
	_, id, ok := strings.Cut(task.StatusMessage, "; operation ")
	if !ok || !strings.HasPrefix(id, "op_") {
		t.Fatalf("status message %q does not name the operation", task.StatusMessage)
	}
	return id
}
