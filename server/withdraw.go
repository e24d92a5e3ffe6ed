package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/tools"
)

// CancelOperation implements tools.Runner: cancel_operation. The policy
// decides who may (action cancel on the operation; by default its agent
// alone); an operation the caller may not touch reads as not found.
func (p *Pipeline) CancelOperation(ctx context.Context, id, reason string) (tools.OperationView, error) {
	pr, ci, err := p.caller(ctx)
	if err != nil {
		return tools.OperationView{}, err
	}
	notFound := &tools.ToolError{Code: "not_found", Message: fmt.Sprintf("no operation %s that you can withdraw", id)}
	op, err := p.db.Operation(ctx, id)
	if errors.Is(err, ledger.ErrNotFound) {
		return tools.OperationView{}, notFound
	}
	if err != nil {
		return tools.OperationView{}, fmt.Errorf("read operation: %w", err)
	}
	res := operationResource(op)
	d := p.decide(ctx, p.principal(pr, ci), res, "cancel")
	if err := p.db.Append(ctx, decisionEvent(pr.actor(), op.ID, res, "cancel", d)); err != nil {
		return tools.OperationView{}, &tools.ToolError{Code: "audit_unavailable", Message: "audit trail unavailable; refusing"}
	}
	if !d.Allowed {
		if d.Unavailable || op.Agent == pr.Name {
			return tools.OperationView{}, tools.PolicyDenied("cancel", res, d)
		}
		return tools.OperationView{}, notFound
	}
	if err := p.withdraw(ctx, op, reason, pr.actor()); err != nil {
		return tools.OperationView{}, err
	}
	op, err = p.db.Operation(ctx, id)
	if err != nil {
		return tools.OperationView{}, fmt.Errorf("read operation: %w", err)
	}
	return p.view(ctx, op), nil
}

// withdraw ends an operation that waits for a human because its agent no
// longer wants it: the approval is withdrawn first (so no vote can land
// after), then the operation is cancelled and its hold released, each step
// audited. An operation that left awaiting_approval (approved meanwhile,
// executing, finished) is not touched, and the error says why.
func (p *Pipeline) withdraw(ctx context.Context, op ledger.Operation, reason, actor string) error {
	refuse := func(format string, args ...any) error {
		return &tools.ToolError{Code: "not_withdrawable", Message: fmt.Sprintf(format, args...)}
	}
	if op.State != ledger.StateAwaitingApproval {
		if op.State.Terminal() {
			return refuse("operation %s already ended (%s); there is nothing to withdraw", op.ID, op.State)
		}
		return refuse("operation %s is %s: only an operation waiting for a human approver (awaiting_approval) can be withdrawn", op.ID, op.State)
	}
	req, err := p.approvals.ByOperation(ctx, op.ID)
	if err != nil {
		return fmt.Errorf("read approval of %s: %w", op.ID, err)
	}
	switch err := p.approvals.Withdraw(ctx, req.ID, reason, actor); {
	case err == nil:
	case errors.Is(err, approvals.ErrAlreadyDecided):
		return refuse("operation %s was already decided by an approver (%s); it can no longer be withdrawn", op.ID, req.State)
	case errors.Is(err, approvals.ErrExpired), errors.Is(err, approvals.ErrCancelled):
		// It ended on its own; the operation follows (onDecided, the freeze).
		return refuse("the approval of operation %s already ended: %v", op.ID, err)
	default:
		return fmt.Errorf("withdraw approval %s: %w", req.ID, err)
	}
	msg := "withdrawn by the agent: " + reason
	_, err = p.db.ReleaseFrom(ctx, op.ID, []ledger.State{ledger.StateAwaitingApproval}, ledger.StateCancelled, "withdrawn", msg,
		ledger.NewEvent("operation.withdrawn", actor, op.ID, map[string]any{"approval_id": req.ID, "reason": reason}))
	p.watch.notify(op.ID)
	if err != nil && !errors.Is(err, ledger.ErrStateConflict) {
		return fmt.Errorf("release %s: %w", op.ID, err)
	}
	if got, gerr := p.approvals.Get(ctx, req.ID); gerr == nil {
		p.term.decided(got)
	}
	p.log.Info("operation withdrawn by its agent", "operation", op.ID, "approval", req.ID, "by", actor)
	return nil
}

// requestCtxKey holds the context the streamable HTTP transport handed to
// mcp-go for one request, before mcp-go wrapped it in the cancel that
// notifications/cancelled fires.
type requestCtxKey struct{}

// markRequestCtx records ctx as the request's outer context (the streamable
// HTTP transport's context func).
func markRequestCtx(ctx context.Context) context.Context {
	return context.WithValue(ctx, requestCtxKey{}, ctx)
}

// explicitlyCancelled reports whether a call's ctx ended because the client
// sent notifications/cancelled for it: mcp-go cancels the call's own
// context then, and nothing above it. A disconnect or a shutdown cancels the
// outer (the HTTP request's) context, which cancels the call's
// synchronously, so the outer is already done when the call sees it. A
// deadline is never a cancel. Only the streamable HTTP transport marks its
// requests: over stdio, mcp-go ends every call with a cancel below the
// context tollgate can mark when input ends, and over SSE the call's context
// is not the POST's, so there a cancel and a disconnect look the same and
// nothing is withdrawn (cancel_operation and tasks/cancel still withdraw).
func explicitlyCancelled(ctx context.Context) bool {
	outer, ok := ctx.Value(requestCtxKey{}).(context.Context)
	return ok && ctx.Err() != nil && errors.Is(context.Cause(ctx), context.Canceled) && outer.Err() == nil
}
