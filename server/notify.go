package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"
)

// What an agent's user should see reaches the agent as MCP notifications:
// progress while a call waits, and notifications/message (the logging
// capability) for policy denials, budget blocks, approvals requested and
// decided, and freezes. The notifier routes both.
//
// Progress is ordered per request on every transport. mcp-go's streamable
// HTTP transport (v1.2.1) keeps one notification channel per session, and
// every open stream of that session — the forwarder of each POST in flight
// and the standalone GET stream — reads from it, so a request's progress is
// split between its own POST stream and whichever other stream's goroutine
// took each message first; clients then see 1, 3, 2, 4. A notification the
// POST's forwarder took just as the handler returned is also dropped. Over
// streamable HTTP, tollgate therefore writes a request's notifications to
// that request's own response (requestStream), from one writer goroutine per
// request, before mcp-go writes the result there. stdio and SSE have a single
// reader per session and keep mcp-go's delivery.

// notifier sends notifications to the sessions and requests of agents.
type notifier struct {
	mcp *mcpserver.MCPServer

	mu sync.Mutex
	// sessions are the live sessions (stdio, SSE, streamable HTTP) by id,
	// with the agent that opened them; logging/setLevel applies to them.
	sessions map[string]Principal
	// calls are tool calls in flight over the stateless protocol
	// (2026-07-28), which have no session to reach outside the request:
	// their log level comes with each request.
	calls map[*inflightCall]struct{}
}

type inflightCall struct {
	ctx   context.Context
	agent string
}

func newNotifier() *notifier {
	return &notifier{sessions: map[string]Principal{}, calls: map[*inflightCall]struct{}{}}
}

// addHooks tracks sessions and the agent that opened each.
func (n *notifier) addHooks(h *mcpserver.Hooks) {
	h.AddOnRegisterSession(func(ctx context.Context, sess mcpserver.ClientSession) {
		if p, ok := principalFrom(ctx); ok {
			n.mu.Lock()
			n.sessions[sess.SessionID()] = p
			n.mu.Unlock()
		}
	})
	h.AddOnUnregisterSession(func(_ context.Context, sess mcpserver.ClientSession) {
		n.mu.Lock()
		delete(n.sessions, sess.SessionID())
		n.mu.Unlock()
	})
}

// track registers a tool call over the stateless protocol, so messages for
// its agent reach it while it runs; the returned func ends that.
func (n *notifier) track(ctx context.Context, agent string) func() {
	info := mcpserver.RequestProtocolInfoFromContext(ctx)
	if info == nil || !info.Modern || info.LogLevel == "" {
		return func() {}
	}
	c := &inflightCall{ctx: ctx, agent: agent}
	n.mu.Lock()
	n.calls[c] = struct{}{}
	n.mu.Unlock()
	return func() {
		n.mu.Lock()
		delete(n.calls, c)
		n.mu.Unlock()
	}
}

// agentMessage is the data of a notifications/message to an agent.
type agentMessage struct {
	Event       string `json:"event"`
	Message     string `json:"message"`
	OperationID string `json:"operation_id,omitempty"`
	Tool        string `json:"tool,omitempty"`
	Code        string `json:"code,omitempty"`
}

// tell sends a log message to every session and in-flight stateless call of
// the agents matched by to, at level (each session's logging/setLevel
// decides whether it wants it).
func (n *notifier) tell(to func(Principal) bool, level mcp.LoggingLevel, logger string, m agentMessage) {
	if n == nil || n.mcp == nil {
		return
	}
	note := mcp.NewLoggingMessageNotification(level, logger, m)
	n.mu.Lock()
	var ids []string
	for id, p := range n.sessions {
		if to(p) {
			ids = append(ids, id)
		}
	}
	var calls []*inflightCall
	for c := range n.calls {
		if to(Principal{Name: c.agent}) {
			calls = append(calls, c)
		}
	}
	n.mu.Unlock()
	for _, id := range ids {
		_ = n.mcp.SendLogMessageToSpecificClient(id, note)
	}
	for _, c := range calls {
		info := mcpserver.RequestProtocolInfoFromContext(c.ctx)
		if info == nil || !level.ShouldSendTo(info.LogLevel) {
			continue
		}
		n.toRequest(c.ctx, note.Method, map[string]any{"level": level, "logger": logger, "data": m})
	}
}

// tellAgent is tell for one agent by name.
func (n *notifier) tellAgent(agent string, level mcp.LoggingLevel, logger string, m agentMessage) {
	n.tell(func(p Principal) bool { return p.Name == agent }, level, logger, m)
}

// toRequest sends a notification that belongs to the request in ctx: on its
// own response stream over streamable HTTP (in order, never on another
// stream), else through mcp-go's session delivery.
func (n *notifier) toRequest(ctx context.Context, method string, params map[string]any) {
	if rs, ok := ctx.Value(requestStreamKey{}).(*requestStream); ok {
		msg := mcp.JSONRPCNotification{JSONRPC: mcp.JSONRPC_VERSION, Notification: mcp.Notification{
			Method: method, Params: mcp.NotificationParams{AdditionalFields: params},
		}}
		if rs.send(ctx, msg) {
			return
		}
	}
	if srv := mcpserver.ServerFromContext(ctx); srv != nil {
		_ = srv.SendNotificationToClient(ctx, method, params)
	}
}

// progress returns the progress reporter of one request: strictly increasing
// progress values, sent in the order reported. Without a progress token it
// does nothing.
func (n *notifier) progress(ctx context.Context, token mcp.ProgressToken) func(string) {
	if token == nil {
		return func(string) {}
	}
	var mu sync.Mutex
	step := 0
	return func(msg string) {
		mu.Lock()
		defer mu.Unlock()
		step++
		n.toRequest(ctx, string(mcp.MethodNotificationProgress), map[string]any{
			"progressToken": token, "progress": step, "message": msg,
		})
	}
}

type requestStreamKey struct{}

// requestStream is the response of one streamable HTTP POST, shared by mcp-go
// (which writes the result and its own notifications through it) and the
// notifier (which queues this request's notifications). One goroutine writes
// the queue in order; every write mcp-go makes first flushes the queue, so
// nothing queued can arrive after the result.
type requestStream struct {
	w       http.ResponseWriter
	flusher http.Flusher

	mu      sync.Mutex
	pending [][]byte
	header  bool // the status line is written
	closed  bool // ServeHTTP returned: nothing more may be written
	writer  bool // the writer goroutine runs
	kick    chan struct{}
	done    chan struct{}
}

// maxPendingEvents bounds what a slow client can make a request queue; past
// it the oldest queued notification is dropped (a later progress value
// supersedes an earlier one).
const maxPendingEvents = 256

// orderedStreams gives every streamable HTTP POST a requestStream.
func orderedStreams(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, ok := w.(http.Flusher)
		if r.Method != http.MethodPost || !ok {
			next.ServeHTTP(w, r)
			return
		}
		rs := &requestStream{w: w, flusher: f, kick: make(chan struct{}, 1), done: make(chan struct{})}
		next.ServeHTTP(rs, r.WithContext(context.WithValue(r.Context(), requestStreamKey{}, rs)))
		rs.mu.Lock()
		rs.closed = true
		rs.mu.Unlock()
		close(rs.done)
	})
}

func (rs *requestStream) Header() http.Header { return rs.w.Header() }

func (rs *requestStream) WriteHeader(code int) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.flushLocked()
	if !rs.header {
		rs.header = true
		rs.w.WriteHeader(code)
	}
}

func (rs *requestStream) Write(p []byte) (int, error) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.flushLocked()
	rs.header = true
	return rs.w.Write(p)
}

func (rs *requestStream) Flush() {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.closed {
		return
	}
	rs.flushLocked()
	rs.flusher.Flush()
}

// Unwrap lets http.ResponseController reach the connection (write deadlines).
func (rs *requestStream) Unwrap() http.ResponseWriter { return rs.w }

// send queues msg as an SSE event of this request. It reports false when the
// request is over (a task call detached from it, say), so the caller can use
// another way.
func (rs *requestStream) send(ctx context.Context, msg mcp.JSONRPCNotification) bool {
	data, err := json.Marshal(msg)
	if err != nil {
		return false
	}
	event := fmt.Appendf(nil, "event: message\ndata: %s\n\n", data)
	rs.mu.Lock()
	if rs.closed {
		rs.mu.Unlock()
		return false
	}
	if !rs.header {
		// The result must follow as an SSE event on this stream too:
		// mcp-go writes it so once the session has sent a notification.
		if s, ok := mcpserver.ClientSessionFromContext(ctx).(mcpserver.SessionWithStreamableHTTPConfig); ok {
			s.UpgradeToSSEWhenReceiveNotification()
		}
	}
	if len(rs.pending) >= maxPendingEvents {
		rs.pending = rs.pending[1:]
	}
	rs.pending = append(rs.pending, event)
	if !rs.writer {
		rs.writer = true
		go rs.run()
	}
	rs.mu.Unlock()
	select {
	case rs.kick <- struct{}{}:
	default:
	}
	return true
}

func (rs *requestStream) run() {
	for {
		select {
		case <-rs.kick:
			rs.Flush()
		case <-rs.done:
			return
		}
	}
}

// flushLocked writes the queued events, upgrading the response to an SSE
// stream first if nothing was written yet.
func (rs *requestStream) flushLocked() {
	if len(rs.pending) == 0 || rs.closed {
		return
	}
	if !rs.header {
		h := rs.w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		h.Set("Connection", "keep-alive")
		rs.w.WriteHeader(http.StatusOK)
		rs.header = true
	}
	for _, ev := range rs.pending {
		if _, err := rs.w.Write(ev); err != nil {
			break
		}
	}
	rs.pending = rs.pending[:0]
	rs.flusher.Flush()
}
