package server

import (
	"context"
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
type taskWindows struct {
	db *ledger.DB

	mu       sync.Mutex
	byParams map[*mcp.TaskParams]*taskWindow
	byTask   map[string]*taskWindow
}

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

func newTaskWindows(db *ledger.DB) *taskWindows {
	return &taskWindows{db: db, byParams: map[*mcp.TaskParams]*taskWindow{}, byTask: map[string]*taskWindow{}}
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
	h.AddAfterCallTool(func(_ context.Context, _ any, req *mcp.CallToolRequest, result any) {
		created, ok := result.(*mcp.CreateTaskResult)
		if !ok || req == nil || req.Params.Task == nil || created == nil {
			return
		}
		tw.mu.Lock()
		defer tw.mu.Unlock()
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
