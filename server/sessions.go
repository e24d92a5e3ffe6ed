package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/tollgatehq/tollgate/ledger"
)

// MCP session ownership over HTTP.
//
// A session id is not a secret: it appears in Slack messages, the console
// and the audit trail. What keeps agent B out of agent A's session is that
// every id is bound to the agent whose request created it, and every id a
// request carries is checked against the caller before mcp-go sees it:
//
//   - /message routes by the sessionId query parameter, /mcp by the
//     Mcp-Session-Id header; a request may carry both, and several values of
//     each. All of them must be the caller's: one of another agent's is a
//     403 (audited as session.refused, naming both agents), one nobody opened
//     a 404.
//   - Streamable HTTP session ids are minted by ownedSessionIDs at the moment
//     mcp-go generates them, under the creating request's principal, so there
//     is no window between the initialize response and the session's
//     registration in which an id is unowned. SSE sessions are bound by the
//     register hook before the endpoint event is sent.
//   - A notifications/cancelled on /mcp without a session (protocol
//     2026-07-28) is refused: mcp-go keys a session-less request's
//     cancellation by its JSON-RPC id alone, so it would cancel whichever
//     agent's request has that id. On that protocol a client cancels by
//     closing the request's stream.

// sessionIDHeader is the streamable HTTP session header.
const sessionIDHeader = "Mcp-Session-Id"

// sessionIDQuery is the legacy SSE transport's session parameter.
const sessionIDQuery = "sessionId"

// bindSessions records which agent opened each MCP session (SSE sessions and
// GET streams; streamable POST sessions are bound when their id is minted).
func (s *Server) bindSessions(h *mcpserver.Hooks) {
	h.AddOnRegisterSession(func(ctx context.Context, sess mcpserver.ClientSession) {
		if p, ok := principalFrom(ctx); ok && sess.SessionID() != "" {
			res, _ := ctx.Value(sessionReservationKey{}).(*sessionReservation)
			s.sessions.bind(sess.SessionID(), p.Name, res, false, time.Now())
		}
	})
	h.AddOnUnregisterSession(func(_ context.Context, sess mcpserver.ClientSession) {
		s.sessions.drop(sess.SessionID())
	})
}

// sessionOwner returns the agent that opened a session.
func (s *Server) sessionOwner(id string) (string, bool) {
	return s.sessions.owner(id)
}

// ownedSessionIDs is the streamable HTTP server's session id manager: ids are
// random, bound to the agent of the request that created them, and valid
// until terminated or unregistered.
type ownedSessionIDs struct{ s *Server }

var (
	_ mcpserver.SessionIdManagerResolver = ownedSessionIDs{}
	_ mcpserver.SessionIdManager         = agentSessionIDs{}
)

// ResolveSessionIdManager returns a manager that mints ids for the request's
// agent (none for a request without one, such as mcp-go's idle sweeper).
func (o ownedSessionIDs) ResolveSessionIdManager(r *http.Request) mcpserver.SessionIdManager {
	m := agentSessionIDs{s: o.s}
	if r != nil {
		if p, ok := principalFrom(r.Context()); ok {
			m.agent = p.Name
		}
		m.res, _ = r.Context().Value(sessionReservationKey{}).(*sessionReservation)
		// A session minted by a GET lives as long as that stream (mcp-go
		// unregisters it when the stream ends): never swept while idle.
		m.expirable = r.Method != http.MethodGet
	}
	return m
}

// agentSessionIDs mints and checks session ids for one agent.
type agentSessionIDs struct {
	s     *Server
	agent string
	res   *sessionReservation // the slot admit reserved for the new session
	// expirable: the session ends by DELETE or the idle sweep, not with a stream.
	expirable bool
}

// Generate mints a session id owned by the manager's agent.
func (m agentSessionIDs) Generate() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	id := "mcp-session-" + hex.EncodeToString(b)
	if m.agent != "" {
		m.s.sessions.bind(id, m.agent, m.res, m.expirable, time.Now())
	}
	return id
}

// Validate accepts only ids that are bound to an agent; ownership itself is
// checked before the request reaches mcp-go (guardSessions).
func (m agentSessionIDs) Validate(id string) (bool, error) {
	if _, ok := m.s.sessionOwner(id); !ok {
		return false, errors.New("session not found")
	}
	return false, nil
}

// Terminate forgets the id: a request naming it afterwards is a 404.
func (m agentSessionIDs) Terminate(id string) (bool, error) {
	m.s.sessions.drop(id)
	return false, nil
}

// sessionRefusal is why a request's session ids were refused.
type sessionRefusal struct {
	status int
	id     string // the offending id
	owner  string // its owner, for the audit (never told to the caller)
}

// checkSessionIDs checks every session id a request carries against agent.
// Another agent's id wins over an unknown one, so carrying a bogus header
// beside a foreign query parameter cannot turn a 403 into a 404.
func (s *Server) checkSessionIDs(r *http.Request, agent string) *sessionRefusal {
	ids := append(r.Header.Values(sessionIDHeader), r.URL.Query()[sessionIDQuery]...)
	var unknown *sessionRefusal
	for _, id := range ids {
		if id == "" {
			continue
		}
		owner, ok := s.sessionOwner(id)
		switch {
		case !ok:
			if unknown == nil {
				unknown = &sessionRefusal{status: http.StatusNotFound, id: id}
			}
		case owner != agent:
			return &sessionRefusal{status: http.StatusForbidden, id: id, owner: owner}
		}
	}
	return unknown
}

// guardSessions refuses a request whose session ids are not all the calling
// agent's. It runs once the principal is known.
func (s *Server) guardSessions(w http.ResponseWriter, r *http.Request, agent string) bool {
	ref := s.checkSessionIDs(r, agent)
	if ref == nil {
		return true
	}
	if ref.status == http.StatusForbidden {
		s.log.Warn("refused a request on another agent's MCP session",
			"agent", agent, "owner", ref.owner, "session_id", ref.id, "path", r.URL.Path, "remote", r.RemoteAddr)
		if ok, skipped := s.sessionRefusals.allow(time.Now()); ok {
			_ = s.deps.DB.Append(r.Context(), ledger.NewEvent("session.refused", agent, "", map[string]any{
				"agent": agent, "owner": ref.owner, "session_id": ref.id, "path": r.URL.Path,
				"method": r.Method, "remote": r.RemoteAddr, "unaudited_before": skipped,
			}))
		}
		httpError(w, http.StatusForbidden, "session_forbidden",
			"this MCP session was opened by another agent; open your own session (initialize on /mcp, or GET /sse)")
		return false
	}
	httpError(w, http.StatusNotFound, "session_not_found",
		"no such MCP session (it ended, the server restarted, or it never existed); initialize a new one")
	return false
}

// guardSessionlessCancel refuses a notifications/cancelled on /mcp that
// names no session (body is the request's, already read).
func guardSessionlessCancel(w http.ResponseWriter, r *http.Request, body []byte) bool {
	if r.URL.Path != "/mcp" || r.Header.Get(sessionIDHeader) != "" {
		return true
	}
	var msg struct {
		Method string `json:"method"`
	}
	if json.Unmarshal(body, &msg) == nil && msg.Method == "notifications/cancelled" {
		httpError(w, http.StatusBadRequest, "session_required",
			"notifications/cancelled needs an MCP session (Mcp-Session-Id); on protocol 2026-07-28 cancel a request by closing its stream")
		return false
	}
	return true
}

// httpError answers a JSON error outside JSON-RPC: code is stable for
// programs, description says what was wrong and what to do.
func httpError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}
