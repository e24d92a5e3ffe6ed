package server

import (
	"context"
	"fmt"
	"sync"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/approvals/display"
	"github.com/tollgatehq/tollgate/ledger"
)

// EventElicited records that a waiting call pointed its MCP client at the
// approval's console page.
const EventElicited = "approval.elicited"

// urlElicitation reports whether the client of ctx's MCP session declared
// URL-mode elicitation.
func urlElicitation(ctx context.Context) (mcpserver.ClientSession, bool) {
	session := mcpserver.ClientSessionFromContext(ctx)
	ci, ok := session.(mcpserver.SessionWithClientInfo)
	if !ok {
		return nil, false
	}
	caps := ci.GetClientCapabilities()
	return session, caps.Elicitation != nil && caps.Elicitation.URL != nil
}

// elicitApproval runs beside a mutating call that waits for a human: when
// the call's client declared URL-mode elicitation and the console has an
// address, it sends elicitation/create (mode url) pointing at the approval's
// console page once the request exists, and notifications/elicitation/complete
// when the request is decided. What the client answers is logged and audited
// and never counts as a vote: approving happens in the console, signed in,
// through the approvals core. Clients without URL elicitation see nothing.
// The returned func ends it; call it when the call returns.
func (s *Server) elicitApproval(ctx context.Context, opID string) func() {
	base := s.cfg.ConsoleBase()
	session, ok := urlElicitation(ctx)
	// Protocol 2026-07-28 replaced server-initiated requests with multi
	// round-trip results, which would end the waiting call: such clients see
	// no change, as do clients without URL elicitation.
	if !ok || base == "" || mcp.IsModernProtocol(mcpserver.RequestProtocolVersion(ctx)) {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		sent string // the elicitation id, once sent
	)
	wg.Go(func() {
		req, ok := s.awaitRequest(ctx, opID)
		if !ok {
			return
		}
		url := base + "/console/approvals/" + req.ID
		msg := fmt.Sprintf("tollgate waits for a human approver: %s, at most %s. Approvers review and decide it in the tollgate console (signed in); opening the page approves nothing.",
			display.Text(req.Summary, 200), display.Text(req.AmountText, 40))
		mu.Lock()
		sent = req.ID
		mu.Unlock()
		res, err := s.mcp.RequestURLElicitation(ctx, session, req.ID, url, msg)
		data := map[string]any{"request_id": req.ID, "url": url}
		switch {
		case err != nil && ctx.Err() != nil:
			data["answer"] = "none before the call ended"
		case err != nil:
			data["error"] = err.Error()
		default:
			// accept means the person opened (or agreed to open) the page.
			data["answer"] = string(res.Action)
		}
		s.log.Info("approval page sent to the MCP client", "operation", opID, "request", req.ID, "answer", data["answer"], "error", data["error"])
		if aerr := s.deps.DB.Append(context.WithoutCancel(ctx), ledger.NewEvent(EventElicited, "system", opID, data)); aerr != nil {
			s.log.Error("audit elicitation", "err", aerr)
		}
	})
	return func() {
		mu.Lock()
		id := sent
		mu.Unlock()
		if id != "" {
			if req, err := s.approvals.Get(context.WithoutCancel(ctx), id); err == nil && req.State != approvals.StatePending {
				// On the call's own stream, in order with its progress.
				s.notify.toRequest(context.WithoutCancel(ctx), string(mcp.MethodNotificationElicitationComplete), map[string]any{"elicitationId": id})
			}
		}
		cancel()
		wg.Wait()
	}
}

// awaitRequest waits until operation opID has a pending approval request, and
// gives up when the operation moves on without one or ctx ends.
func (s *Server) awaitRequest(ctx context.Context, opID string) (approvals.Request, bool) {
	wake, stop := s.pipe.changes(opID)
	defer stop()
	for {
		if req, err := s.approvals.ByOperation(ctx, opID); err == nil {
			return req, req.State == approvals.StatePending
		}
		op, err := s.deps.DB.Operation(ctx, opID)
		if err != nil || (op.State != ledger.StatePlanned && op.State != ledger.StateAuthorized &&
			op.State != ledger.StateReserved && op.State != ledger.StateAwaitingApproval) {
			return approvals.Request{}, false
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return approvals.Request{}, false
		}
	}
}
