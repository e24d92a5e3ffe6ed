package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/tollgatehq/tollgate/tools"
)

// The MCP resources tollgate offers, all registered here. Each is read as
// the calling agent through the same pipeline method (and so the same
// Cerbos check and audit event) as the tool that shows the same thing.
const (
	operationsURI = "tollgate://operations"
	spendURI      = "tollgate://spend"
	policiesURI   = "tollgate://policies"
	jsonMIME      = "application/json"
)

// maxSubscriptionsPerSession bounds the followers one session can start.
const maxSubscriptionsPerSession = 64

// addSubscriptionHooks adds the hooks that authorize and serve resource
// subscriptions.
func (s *Server) addSubscriptionHooks(hooks *mcpserver.Hooks) {
	s.subs = &subscriptions{bySession: map[string]map[string]*follower{}}
	hooks.AddOnRequestInitialization(s.authorizeSubscriptions)
	hooks.AddAfterSubscribe(func(ctx context.Context, _ any, req *mcp.SubscribeRequest, _ *mcp.EmptyResult) {
		s.subscribe(ctx, s.pipe.life, req.Params.URI, true)
	})
	hooks.AddAfterUnsubscribe(func(ctx context.Context, _ any, req *mcp.UnsubscribeRequest, _ *mcp.EmptyResult) {
		if sess := mcpserver.ClientSessionFromContext(ctx); sess != nil {
			s.subs.stop(sess.SessionID(), req.Params.URI, nil)
		}
	})
	// The stateless protocol (2026-07-28) subscribes with a
	// subscriptions/listen request that stays open: its followers end with it.
	hooks.AddBeforeSubscriptionsListen(func(ctx context.Context, _ any, req *mcp.SubscriptionsListenRequest) {
		for _, uri := range req.Params.Notifications.ResourceSubscriptions {
			s.subscribe(ctx, ctx, uri, false)
		}
	})
	hooks.AddOnUnregisterSession(func(_ context.Context, sess mcpserver.ClientSession) {
		s.subs.stopSession(sess.SessionID())
	})
}

// addResources adds the resources and the operation template to the MCP
// server.
func (s *Server) addResources() {
	s.mcp.AddResources(
		mcpserver.ServerResource{
			Resource: mcp.NewResource(operationsURI, "operations",
				mcp.WithResourceTitle("Your recent operations"),
				mcp.WithResourceDescription("The 20 operations you started most recently, newest first (what list_operations returns)."),
				mcp.WithMIMEType(jsonMIME)),
			Handler: s.readOperations,
		},
		mcpserver.ServerResource{
			Resource: mcp.NewResource(spendURI, "spend",
				mcp.WithResourceTitle("Your spend, holds, budgets, limits and freezes"),
				mcp.WithResourceDescription("What you spent and hold today and this month, every budget and velocity limit that applies to you, and any freeze (what spend_status returns)."),
				mcp.WithMIMEType(jsonMIME)),
			Handler: s.readSpend,
		},
		mcpserver.ServerResource{
			Resource: mcp.NewResource(policiesURI, "policies",
				mcp.WithResourceTitle("The rules you are subject to"),
				mcp.WithResourceDescription("In words: what tollgate always enforces, the policy's guardrails (extensions, price ceilings, approvals, Worker names and sizes), and your budgets, limits and freezes."),
				mcp.WithMIMEType("text/markdown")),
			Handler: s.readPolicies,
		},
	)
	s.mcp.AddResourceTemplate(
		mcp.NewResourceTemplate(tools.OperationURI("{operation_id}"), "operation",
			mcp.WithTemplateTitle("One of your operations"),
			mcp.WithTemplateDescription("The operation as get_operation returns it. Subscribe to it (resources/subscribe) to be told of every state change instead of polling."),
			mcp.WithTemplateMIMEType(jsonMIME)),
		s.readOperation,
	)
}

func jsonContents(uri string, v any) ([]mcp.ResourceContents, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, err
	}
	return []mcp.ResourceContents{mcp.TextResourceContents{URI: uri, MIMEType: jsonMIME, Text: string(b)}}, nil
}

// operationID is the id in a tollgate://operations/{operation_id} URI.
func operationID(uri string) (string, bool) {
	id, ok := strings.CutPrefix(uri, tools.OperationURI(""))
	return id, ok && strings.HasPrefix(id, "op_") && len(id) <= 64 && !strings.ContainsAny(id, "/?#")
}

func (s *Server) readOperation(ctx context.Context, req mcp.ReadResourceRequest) ([]mcp.ResourceContents, error) {
	id, ok := operationID(req.Params.URI)
	if !ok {
		return nil, fmt.Errorf("%q is not an operation: the URI is %s with an id like op_… from a register_domain or deploy_worker result", req.Params.URI, tools.OperationURI("{operation_id}"))
	}
	v, err := s.pipe.Operation(ctx, id, 0, false)
	if err != nil {
		return nil, err
	}
	return jsonContents(req.Params.URI, v)
}

func (s *Server) readOperations(ctx context.Context, req mcp.ReadResourceRequest) ([]mcp.ResourceContents, error) {
	limit := 20
	list, err := s.pipe.Operations(ctx, tools.ListOperationsArgs{Limit: &limit})
	if err != nil {
		return nil, err
	}
	return jsonContents(req.Params.URI, list)
}

func (s *Server) readSpend(ctx context.Context, req mcp.ReadResourceRequest) ([]mcp.ResourceContents, error) {
	st, err := s.pipe.SpendStatus(ctx)
	if err != nil {
		return nil, err
	}
	return jsonContents(req.Params.URI, st)
}

func (s *Server) readPolicies(ctx context.Context, req mcp.ReadResourceRequest) ([]mcp.ResourceContents, error) {
	pr, ok := principalFrom(ctx)
	if !ok {
		return nil, errors.New("no agent identity on this session; refusing")
	}
	// The budgets, limits and freezes in it are spend_status's, read (and
	// authorized, and audited) the same way.
	st, err := s.pipe.SpendStatus(ctx)
	if err != nil {
		return nil, err
	}
	text := policiesText(pr, s.cfg, s.deps.PolicyDir, st)
	return []mcp.ResourceContents{mcp.TextResourceContents{URI: req.Params.URI, MIMEType: "text/markdown", Text: text}}, nil
}

// subscriptions are the resource followers of legacy sessions, by session
// and URI, so resources/unsubscribe and the end of a session stop them.
type subscriptions struct {
	mu        sync.Mutex
	bySession map[string]map[string]*follower
}

type follower struct{ cancel context.CancelFunc }

// add records a follower; false when the session already follows uri or
// follows as many as it may.
func (ss *subscriptions) add(session, uri string, f *follower) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	m := ss.bySession[session]
	if m == nil {
		m = map[string]*follower{}
		ss.bySession[session] = m
	}
	if _, dup := m[uri]; dup || len(m) >= maxSubscriptionsPerSession {
		return false
	}
	m[uri] = f
	return true
}

func (ss *subscriptions) count(session string) int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return len(ss.bySession[session])
}

// stop stops the session's follower of uri; with only set, only if it is
// still that one (a follower that ended must not stop its successor).
func (ss *subscriptions) stop(session, uri string, only *follower) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if f, ok := ss.bySession[session][uri]; ok && (only == nil || f == only) {
		f.cancel()
		delete(ss.bySession[session], uri)
	}
}

func (ss *subscriptions) stopSession(session string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for _, f := range ss.bySession[session] {
		f.cancel()
	}
	delete(ss.bySession, session)
}

// authorizeSubscriptions refuses, before mcp-go records anything, a
// subscription to what the agent may not read: only operations can be
// subscribed to, each readable by the caller (the same audited check as
// get_operation), at most maxSubscriptionsPerSession per session.
func (s *Server) authorizeSubscriptions(ctx context.Context, _ any, message any) error {
	raw, ok := message.(json.RawMessage)
	if !ok || !strings.Contains(string(raw), "subscri") {
		return nil
	}
	var m struct {
		Method string `json:"method"`
		Params struct {
			URI           string                 `json:"uri"`
			Notifications mcp.SubscriptionFilter `json:"notifications"`
		} `json:"params"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil // mcp-go answers the malformed request itself
	}
	var uris []string
	switch mcp.MCPMethod(m.Method) {
	case mcp.MethodResourcesSubscribe:
		uris = []string{m.Params.URI}
		if sess := mcpserver.ClientSessionFromContext(ctx); sess != nil && s.subs.count(sess.SessionID()) >= maxSubscriptionsPerSession {
			return fmt.Errorf("at most %d subscriptions per session: unsubscribe from operations that have ended", maxSubscriptionsPerSession)
		}
	case mcp.MethodSubscriptionsListen:
		uris = m.Params.Notifications.ResourceSubscriptions
		if len(uris) > maxSubscriptionsPerSession {
			return fmt.Errorf("at most %d resource subscriptions per stream", maxSubscriptionsPerSession)
		}
	default:
		return nil
	}
	for _, uri := range uris {
		id, ok := operationID(uri)
		if !ok {
			return fmt.Errorf("resource not found: %q; only operations can be subscribed to, as %s", uri, tools.OperationURI("{operation_id}"))
		}
		if _, err := s.pipe.Operation(ctx, id, 0, false); err != nil {
			return fmt.Errorf("resource not found: %s: %w", uri, err)
		}
	}
	return nil
}

// subscribe follows the operation behind uri for the session in ctx until
// life ends, sending notifications/resources/updated on every change.
// Legacy sessions are recorded so unsubscribe and the session's end stop
// the follower. It reads the operation before the client hears that it is
// subscribed, so no change after that is missed.
func (s *Server) subscribe(ctx, life context.Context, uri string, legacy bool) {
	sess := mcpserver.ClientSessionFromContext(ctx)
	id, ok := operationID(uri)
	if sess == nil || !ok {
		return
	}
	from, err := s.deps.DB.Operation(ctx, id)
	if err != nil {
		s.log.Warn("subscription not started", "uri", uri, "err", err)
		return
	}
	fctx, cancel := context.WithCancel(life)
	f := &follower{cancel: cancel}
	if legacy && !s.subs.add(sess.SessionID(), uri, f) {
		cancel()
		return
	}
	go func() {
		defer cancel()
		s.pipe.follow(fctx, from, func() { s.resourceUpdated(sess, uri) })
		if legacy {
			s.subs.stop(sess.SessionID(), uri, f) // an ended operation frees its slot
		}
	}()
}

// resourceUpdated tells one session that uri changed.
func (s *Server) resourceUpdated(sess mcpserver.ClientSession, uri string) {
	params := map[string]any{"uri": uri}
	if id := sess.SessionID(); id != "" {
		_ = s.mcp.SendNotificationToSpecificClient(id, string(mcp.MethodNotificationResourceUpdated), params)
		return
	}
	// A subscriptions/listen stream of the stateless protocol has no
	// session id: its stream reads the session's own channel.
	select {
	case sess.NotificationChannel() <- mcp.JSONRPCNotification{JSONRPC: mcp.JSONRPC_VERSION, Notification: mcp.Notification{
		Method: string(mcp.MethodNotificationResourceUpdated), Params: mcp.NotificationParams{AdditionalFields: params},
	}}:
	default:
		s.log.Warn("resource update dropped: the client's stream is full", "uri", uri)
	}
}
