package server

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/tollgatehq/tollgate/ledger"
)

// A client that supports MCP tasks may send register_domain or deploy_worker
// with task params; mcp-go's hybrid mode then runs the ordinary tool handler
// as a task. Two things it leaves to the server:
//
//   - The task runs under the context of the request that created it, so over
//     streamable HTTP it is cancelled as soon as the CreateTaskResult is
//     written (mark3labs/mcp-go#897). A task call is therefore detached from
//     its request here, and ends on tasks/cancel or server shutdown instead.
//   - A handler cannot set a working task's statusMessage. Hooks link the task
//     id to the Operation the call drives, so tasks/get and tasks/list answer
//     what the task waits for ("waiting for a human approver …").
//
// The link relies on mcp-go handing the handler a copy of the tools/call
// request whose Params.Task pointer is the one its hooks see.
//
// Tasks are the agent's, not the session's: mcp-go only scopes a task to its
// session when both the task and the request have one, so a session-less
// (2026-07-28) tasks/list would list every agent's tasks and tasks/get,
// tasks/result or tasks/cancel would work on any. The tools/call hook
// therefore records the agent that created each task, a tasks/* request
// naming another agent's task is refused before mcp-go handles it, and
// tasks/list keeps only the caller's.
type taskWindows struct {
	db  *ledger.DB
	log *slog.Logger

	mu       sync.Mutex
	byParams map[*mcp.TaskParams]*taskWindow
	byTask   map[string]*taskWindow
	owners   map[string]taskOwner // task id → the agent that created it

	// refusals limits how many refused tasks/* requests are audited.
	refusals rateLimit
}

// taskOwner is the agent that created a task, and when.
type taskOwner struct {
	agent   string
	created time.Time
}

// taskOwnerRetention is how long a task's owner is remembered: longer than
// any task lives (mcp-go drops a finished task after its TTL, and a task
// follows its Operation at most the approval expiry). A task whose owner is
// forgotten is refused to everyone: fail closed.
const taskOwnerRetention = 48 * time.Hour

// taskWindow is one task-augmented call: the client's window onto an
// Operation. Its fields are guarded by taskWindows.mu.
type taskWindow struct {
	owner     *taskWindows
	params    *mcp.TaskParams
	taskID    string             // set by the tools/call hook
	opID      string             // set by the pipeline once the Operation exists
	cancel    context.CancelFunc // ends the detached call
	cancelled bool               // tasks/cancel arrived (possibly before the handler started)
	ended     bool               // the handler returned
}

func newTaskWindows(db *ledger.DB, log *slog.Logger) *taskWindows {
	return &taskWindows{db: db, log: log, byParams: map[*mcp.TaskParams]*taskWindow{}, byTask: map[string]*taskWindow{}, owners: map[string]taskOwner{}}
}

// errTaskForbidden is the JSON-RPC error text for another agent's task: it
// says nothing about the task (status, tool, operation, owner).
var errTaskForbidden = errors.New("forbidden: this task was not created by your agent; " +
	"tasks/get, tasks/result and tasks/cancel reach only your own agent's tasks (tasks/list lists them)")

// errTaskUnknown answers a task id nobody here created.
var errTaskUnknown = errors.New("task not found (it ended and expired, the server restarted, or it never existed)")

// guard is the request hook that refuses a tasks/get, tasks/result or
// tasks/cancel naming a task that is not the calling agent's, audited as
// task.refused with both agents. mcp-go answers it as a JSON-RPC error.
func (tw *taskWindows) guard(ctx context.Context, _ any, message any) error {
	raw, ok := message.(json.RawMessage)
	if !ok {
		return nil
	}
	var m struct {
		Method string `json:"method"`
		Params struct {
			TaskID string `json:"taskId"`
		} `json:"params"`
	}
	if json.Unmarshal(raw, &m) != nil {
		return nil // mcp-go answers a malformed message itself
	}
	switch mcp.MCPMethod(m.Method) {
	case mcp.MethodTasksGet, mcp.MethodTasksResult, mcp.MethodTasksCancel:
	default:
		return nil
	}
	caller := ""
	if p, ok := principalFrom(ctx); ok {
		caller = p.Name
	}
	tw.mu.Lock()
	owner, known := tw.owners[m.Params.TaskID]
	tw.mu.Unlock()
	switch {
	case !known:
		return errTaskUnknown
	case owner.agent == caller:
		// Both empty only in-process, where no HTTP principal exists and
		// no other agent can reach the server.
		return nil
	}
	tw.log.Warn("refused a tasks request on another agent's task", "agent", caller, "owner", owner.agent, "task_id", m.Params.TaskID, "method", m.Method)
	if ok, skipped := tw.refusals.allow(time.Now()); ok {
		_ = tw.db.Append(ctx, ledger.NewEvent("task.refused", caller, "", map[string]any{
			"agent": caller, "owner": owner.agent, "task_id": m.Params.TaskID, "method": m.Method, "unaudited_before": skipped,
		}))
	}
	return errTaskForbidden
}

// ownedBy reports whether agent created task id.
func (tw *taskWindows) ownedBy(id, agent string) bool {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	o, ok := tw.owners[id]
	return ok && o.agent == agent
}

// ownLocked records the agent that created a task and forgets owners old
// enough that their tasks are gone.
func (tw *taskWindows) ownLocked(id, agent string, now time.Time) {
	for k, o := range tw.owners {
		if now.Sub(o.created) > taskOwnerRetention {
			delete(tw.owners, k)
		}
	}
	tw.owners[id] = taskOwner{agent: agent, created: now}
}

// windowLocked returns the window of a call, creating it: the hook and the
// handler race to be first.
func (tw *taskWindows) windowLocked(p *mcp.TaskParams) *taskWindow {
	w := tw.byParams[p]
	if w == nil {
		w = &taskWindow{owner: tw, params: p}
		tw.byParams[p] = w
	}
	return w
}

// forgetLocked drops a window once both its task id is known and its handler
// returned; a finished task's status needs no explanation.
func (tw *taskWindows) forgetLocked(w *taskWindow) {
	if w.ended && w.taskID != "" {
		delete(tw.byParams, w.params)
		delete(tw.byTask, w.taskID)
	}
}

// detach is the tool middleware for task calls: the handler runs on a context
// that keeps the request's values (principal, session) but not its
// cancellation, bounded by the server's life and tasks/cancel.
func (tw *taskWindows) detach(life context.Context) mcpserver.ToolHandlerMiddleware {
	return func(next mcpserver.ToolHandlerFunc) mcpserver.ToolHandlerFunc {
		return func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			if req.Params.Task == nil {
				return next(ctx, req)
			}
			ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
			stop := context.AfterFunc(life, cancel)
			tw.mu.Lock()
			w := tw.windowLocked(req.Params.Task)
			w.cancel = cancel
			if w.cancelled {
				cancel()
			}
			tw.mu.Unlock()
			defer func() {
				stop()
				cancel()
				tw.mu.Lock()
				w.ended = true
				tw.forgetLocked(w)
				tw.mu.Unlock()
			}()
			return next(context.WithValue(ctx, taskWindowKey{}, w), req)
		}
	}
}

type taskWindowKey struct{}

// taskWindowFrom returns the task window of a call, nil for a plain call.
func taskWindowFrom(ctx context.Context) *taskWindow {
	w, _ := ctx.Value(taskWindowKey{}).(*taskWindow)
	return w
}

// wasCancelled reports whether tasks/cancel arrived for the call.
func (w *taskWindow) wasCancelled() bool {
	w.owner.mu.Lock()
	defer w.owner.mu.Unlock()
	return w.cancelled
}

// bind records the Operation the task's call drives.
func (w *taskWindow) bind(opID string) {
	w.owner.mu.Lock()
	w.opID = opID
	w.owner.mu.Unlock()
}

// addHooks installs the hooks that link tasks to Operations.
func (tw *taskWindows) addHooks(h *mcpserver.Hooks) {
	h.AddOnRequestInitialization(tw.guard)
	h.AddAfterCallTool(func(ctx context.Context, _ any, req *mcp.CallToolRequest, result any) {
		created, ok := result.(*mcp.CreateTaskResult)
		if !ok || req == nil || req.Params.Task == nil || created == nil {
			return
		}
		agent := ""
		if p, ok := principalFrom(ctx); ok {
			agent = p.Name
		}
		tw.mu.Lock()
		defer tw.mu.Unlock()
		tw.ownLocked(created.Task.TaskId, agent, time.Now())
		w := tw.windowLocked(req.Params.Task)
		w.taskID = created.Task.TaskId
		tw.byTask[w.taskID] = w
		tw.forgetLocked(w)
	})
	h.AddAfterGetTask(func(ctx context.Context, _ any, _ *mcp.GetTaskRequest, result *mcp.GetTaskResult) {
		if result != nil {
			tw.describe(ctx, &result.Task)
		}
	})
	h.AddAfterListTasks(func(ctx context.Context, _ any, _ *mcp.ListTasksRequest, result *mcp.ListTasksResult) {
		if result == nil {
			return
		}
		// Only the caller's own tasks: mcp-go lists every session's to a
		// request without one.
		caller := ""
		if p, ok := principalFrom(ctx); ok {
			caller = p.Name
		}
		mine := result.Tasks[:0]
		for _, task := range result.Tasks {
			if tw.ownedBy(task.TaskId, caller) {
				mine = append(mine, task)
			}
		}
		clear(result.Tasks[len(mine):])
		result.Tasks = mine
		for i := range result.Tasks {
			tw.describe(ctx, &result.Tasks[i])
		}
	})
	h.AddAfterCancelTask(func(_ context.Context, _ any, req *mcp.CancelTaskRequest, _ *mcp.CancelTaskResult) {
		if req == nil {
			return
		}
		tw.mu.Lock()
		defer tw.mu.Unlock()
		if w := tw.byTask[req.Params.TaskId]; w != nil {
			w.cancelled = true
			if w.cancel != nil {
				w.cancel()
			}
		}
	})
}

// describe sets a working task's status message from its Operation.
func (tw *taskWindows) describe(ctx context.Context, task *mcp.Task) {
	if task.Status != mcp.TaskStatusWorking {
		return
	}
	tw.mu.Lock()
	var opID string
	if w := tw.byTask[task.TaskId]; w != nil {
		opID = w.opID
	}
	tw.mu.Unlock()
	if opID == "" {
		return
	}
	op, err := tw.db.Operation(ctx, opID)
	if err != nil {
		return
	}
	task.StatusMessage = describeState(op)
	if op.State == ledger.StateAwaitingApproval || op.State == ledger.StateExecuting {
		task.StatusMessage += "; operation " + op.ID
	}
}

// taskApprovalWait is how long a task call follows its Operation: a task is
// not held open by a waiting client, so it waits for the decision itself,
// up to the approval expiry (which ends the Operation) and a little more.
func taskApprovalWait(expiry time.Duration) time.Duration {
	return expiry + time.Minute
}
