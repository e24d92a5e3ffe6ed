package server

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
)

// Session limits (issue 9): how many MCP sessions one agent may hold open,
// and when an idle one ends.
//
//   - Every session (streamable HTTP, SSE, stdio) is in one sessionTable,
//     bound to the agent that opened it. A request that would open one (an
//     initialize POST on /mcp without Mcp-Session-Id, a GET /sse) first
//     reserves a slot: past http.max_sessions_per_agent it is a 429 naming
//     the cap. The slot becomes the session when its id is minted (or the
//     SSE session registers) and is given back if none was.
//   - A streamable HTTP session no request has used for
//     http.session_idle_timeout is ended as a DELETE would end it, unless a
//     request is in flight in it or a GET stream of it is open. SSE sessions
//     end with their stream. mcp-go's own WithSessionIdleTTL is not used: it
//     touches a session only when a request starts, so it would end a
//     session in the middle of a call waiting for a human, or under an open
//     GET stream.

// sessionTable is every open MCP session: its agent and whether it is busy.
type sessionTable struct {
	mu   sync.Mutex
	byID map[string]*sessionEntry
	open map[string]int64 // agent → sessions open plus slots reserved
}

type sessionEntry struct {
	agent     string
	expirable bool      // a streamable HTTP session (ended by DELETE)
	busy      int       // requests in flight and GET streams open in it
	last      time.Time // when it was last used
}

// sessionReservation is a slot held for a session about to be opened.
type sessionReservation struct {
	agent string
	used  bool // the session was bound, or the slot given back; guarded by sessionTable.mu
}

type sessionReservationKey struct{}

func (t *sessionTable) initLocked() {
	if t.byID == nil {
		t.byID = map[string]*sessionEntry{}
		t.open = map[string]int64{}
	}
}

// owner returns the agent that opened a session.
func (t *sessionTable) owner(id string) (string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.byID[id]
	if !ok {
		return "", false
	}
	return e.agent, true
}

// reserve takes a slot for a new session of agent; false when it already
// holds max (0: no cap).
func (t *sessionTable) reserve(agent string, max int64) (*sessionReservation, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.initLocked()
	if max > 0 && t.open[agent] >= max {
		return nil, false
	}
	t.open[agent]++
	return &sessionReservation{agent: agent}, true
}

// release gives back a reservation no session was bound to.
func (t *sessionTable) release(r *sessionReservation) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if r.used {
		return
	}
	r.used = true
	t.decLocked(r.agent)
}

func (t *sessionTable) decLocked(agent string) {
	if t.open[agent]--; t.open[agent] <= 0 {
		delete(t.open, agent)
	}
}

// bind records a session of agent, using r's slot when it has one (a
// session already bound stays as it is).
func (t *sessionTable) bind(id, agent string, r *sessionReservation, expirable bool, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.initLocked()
	if _, ok := t.byID[id]; ok {
		return
	}
	if r == nil || r.used || r.agent != agent {
		t.open[agent]++
	} else {
		r.used = true
	}
	t.byID[id] = &sessionEntry{agent: agent, expirable: expirable, last: now}
}

// drop forgets a session (ended, deleted or expired).
func (t *sessionTable) drop(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e, ok := t.byID[id]; ok {
		delete(t.byID, id)
		t.decLocked(e.agent)
	}
}

// enter marks a session busy for a request; false when it is gone.
func (t *sessionTable) enter(id string, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.byID[id]
	if ok {
		e.busy++
		e.last = now
	}
	return ok
}

// exit ends a request entered with enter.
func (t *sessionTable) exit(id string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e, ok := t.byID[id]; ok {
		e.busy--
		e.last = now
	}
}

// openCount is how many sessions agent holds (and slots it reserved).
func (t *sessionTable) openCount(agent string) int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.open[agent]
}

// takeIdle removes and returns the streamable sessions unused since before
// now-ttl with nothing in flight: from here on they are unknown (404).
func (t *sessionTable) takeIdle(now time.Time, ttl time.Duration) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var ids []string
	for id, e := range t.byID {
		if e.expirable && e.busy == 0 && now.Sub(e.last) >= ttl {
			delete(t.byID, id)
			t.decLocked(e.agent)
			ids = append(ids, id)
		}
	}
	return ids
}

// expireIdleSessions ends every streamable session idle at now, as a DELETE
// from its client would (mcp-go drops its state and unregisters it), and
// returns how many it ended.
func (s *Server) expireIdleSessions(now time.Time) int {
	ttl := s.cfg.HTTP.SessionIdleTimeout
	s.streamableMu.Lock()
	h := s.streamable
	s.streamableMu.Unlock()
	if ttl <= 0 || h == nil {
		return 0
	}
	ids := s.sessions.takeIdle(now, ttl)
	for _, id := range ids {
		r, err := http.NewRequestWithContext(s.loops, http.MethodDelete, "/mcp", nil)
		if err != nil {
			continue
		}
		r.Header.Set(sessionIDHeader, id)
		r.Header.Set("Mcp-Protocol-Version", mcp.LATEST_LEGACY_PROTOCOL_VERSION)
		h.ServeHTTP(discardResponse{header: http.Header{}}, r)
		s.log.Info("ended an idle MCP session", "session_id", id, "idle_timeout", ttl)
	}
	return len(ids)
}

// sweepIdleSessions runs expireIdleSessions until ctx ends.
func (s *Server) sweepIdleSessions(ctx context.Context) {
	ttl := s.cfg.HTTP.SessionIdleTimeout
	if ttl <= 0 {
		return
	}
	tick := time.NewTicker(min(max(ttl/4, time.Second), time.Minute))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			s.expireIdleSessions(now)
		}
	}
}

// discardResponse is the response writer of a DELETE the server sends itself.
type discardResponse struct{ header http.Header }

func (d discardResponse) Header() http.Header         { return d.header }
func (d discardResponse) Write(p []byte) (int, error) { return len(p), nil }
func (d discardResponse) WriteHeader(int)             {}

// tooManySessions answers a request that would open a session past the cap.
func (s *Server) tooManySessions(w http.ResponseWriter, r *http.Request, agent string, max int64) {
	s.log.Info("refused a new MCP session over the agent's cap", "agent", agent, "cap", max, "path", r.URL.Path)
	idle := "sessions never expire while idle here (http.session_idle_timeout is 0)"
	if ttl := s.cfg.HTTP.SessionIdleTimeout; ttl > 0 {
		idle = fmt.Sprintf("an idle streamable HTTP session ends after %s unused (http.session_idle_timeout)", ttl)
	}
	w.Header().Set("Retry-After", "60")
	httpError(w, http.StatusTooManyRequests, "too_many_sessions", fmt.Sprintf(
		"agent %s already has %d MCP sessions open, the most allowed (http.max_sessions_per_agent, --max-sessions); "+
			"reuse one, end one you no longer need (DELETE /mcp with its Mcp-Session-Id, or close its /sse stream), or wait: %s",
		agent, max, idle))
}

// reserveSession holds a slot for the session a request opens, on the
// request's context; false (answered 429) when the agent is at the cap.
func (s *Server) reserveSession(w http.ResponseWriter, r *http.Request, agent string) (*http.Request, *sessionReservation, bool) {
	max := s.cfg.HTTP.MaxSessionsPerAgent
	res, ok := s.sessions.reserve(agent, max)
	if !ok {
		s.tooManySessions(w, r, agent, max)
		return r, nil, false
	}
	return r.WithContext(context.WithValue(r.Context(), sessionReservationKey{}, res)), res, true
}
