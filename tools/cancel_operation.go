package tools

import (
	"context"
	"fmt"
	"strings"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/mark3labs/mcp-go/mcp"
)

const cancelOperationName = "cancel_operation"

// CancelOperationArgs are the arguments of cancel_operation.
type CancelOperationArgs struct {
	OperationID string `json:"operation_id" jsonschema:"the operation_id of one of your calls that is waiting for a human approver"`
	Reason      string `json:"reason" jsonschema:"why you withdraw it; shown to the approvers"`
}

// CancelOperation is the cancel_operation tool: the agent withdraws one of
// its own operations while it waits for a human. The pending approval is
// withdrawn (every channel shows it, later votes change nothing), the budget
// hold is released, and the operation ends cancelled. Policy decides who may
// (Cerbos action cancel on the operation: by default only its agent).
func CancelOperation(r Runner) Tool {
	tool := mcp.NewTool(cancelOperationName,
		mcp.WithToolTitle("Withdraw an operation that waits for approval"),
		mcp.WithDescription("Withdraws one of your operations while it waits for a human approver (status awaiting_approval): "+
			"its approval request is withdrawn in Slack, the console and the CLI, so no later click can run it, the amount "+
			"held against your budgets is released, and the operation ends cancelled. Use it when you no longer need what "+
			"you asked for, instead of leaving the approvers a request to decide. An operation already approved, executing "+
			"or finished cannot be withdrawn. Cancelling the MCP request or task that waits for the approval does the same."),
		withInput[CancelOperationArgs](func(p map[string]*jsonschema.Schema) {
			p["operation_id"].Pattern = `^op_[a-z2-7]{26}$`
			p["reason"].MinLength, p["reason"].MaxLength = ptr(minReason), ptr(maxReason)
		}),
		withOutput[OperationView](),
		mcp.WithReadOnlyHintAnnotation(false),
		mcp.WithDestructiveHintAnnotation(false),
		mcp.WithIdempotentHintAnnotation(true),
		mcp.WithOpenWorldHintAnnotation(false),
	)
	return Tool{Tool: tool, Handler: typed(func(ctx context.Context, _ mcp.CallToolRequest, a CancelOperationArgs) (OperationView, error) {
		var errs InputErrors
		if !strings.HasPrefix(a.OperationID, "op_") || len(a.OperationID) > 64 {
			errs = append(errs, inputErr("operation_id", "an id like op_abc… from one of your calls", "%q is not an operation id", truncate(a.OperationID, 70)))
		}
		if e := checkReason(a.Reason, false); e != nil {
			e.Allowed = fmt.Sprintf("%d to %d characters saying why you withdraw it; the approvers read it", minReason, maxReason)
			errs = append(errs, e)
		}
		if len(errs) > 0 {
			return OperationView{}, errs
		}
		return r.CancelOperation(ctx, a.OperationID, a.Reason)
	})}
}
