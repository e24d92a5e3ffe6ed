package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
)

// HTTP limits (issue 9): what one request, connection or agent may hold.
//
//   - Headers: http.Server's ReadHeaderTimeout and MaxHeaderBytes.
//   - Bodies: every request body must arrive within http.body_read_timeout
//     (a per-request read deadline, cleared once the body is read, so the
//     long-lived responses of GET /mcp, GET /sse, /console/events and a
//     call waiting for a human are not cut); MCP bodies are capped at
//     http.max_body_bytes with a 413 before the rest is read.
//   - Connections: http.Server's IdleTimeout.
//   - Agents: at most http.max_in_flight_per_agent MCP requests at once
//     (429): a POST on /mcp until it is answered, a request posted to
//     /message until its response goes out on the SSE stream (or the stream
//     ends). GET streams are not counted.

// withBodyDeadline bounds the time a request's body may take to arrive.
func (s *Server) withBodyDeadline(next http.Handler) http.Handler {
	timeout := s.cfg.HTTP.BodyReadTimeout
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 || timeout <= 0 {
			next.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		if err := rc.SetReadDeadline(time.Now().Add(timeout)); err != nil {
			// A writer without deadlines (tests' recorders): nothing to bound.
			next.ServeHTTP(w, r)
			return
		}
		r.Body = &deadlineBody{ReadCloser: r.Body, clear: func() { _ = rc.SetReadDeadline(time.Time{}) }}
		next.ServeHTTP(w, r)
	})
}

// deadlineBody clears the connection's read deadline once the body is read:
// after that, net/http's background read only watches for the client going
// away, and a deadline there would cancel a response still being written.
type deadlineBody struct {
	io.ReadCloser
	once  sync.Once
	clear func()
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.once.Do(b.clear)
	}
	return n, err
}

// readMCPBody reads a POST's body whole, at most http.max_body_bytes of it,
// and puts it back as a buffer for mcp-go (which reads it whole anyway). It
// answers 413 before reading when Content-Length is already too large, and
// 408 when the body does not arrive in time.
func (s *Server) readMCPBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	limit := s.cfg.HTTP.maxBody()
	if r.ContentLength > limit {
		s.tooLarge(w, r, limit)
		return nil, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	_ = r.Body.Close()
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			s.tooLarge(w, r, limit)
			return nil, false
		}
		w.Header().Set("Connection", "close")
		httpError(w, http.StatusRequestTimeout, "body_timeout", fmt.Sprintf(
			"the request body did not arrive within %s (http.body_read_timeout, --body-read-timeout): %v",
			s.cfg.HTTP.BodyReadTimeout, err))
		return nil, false
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	return body, true
}

func (s *Server) tooLarge(w http.ResponseWriter, r *http.Request, limit int64) {
	s.log.Info("refused an oversized request body", "limit", limit, "content_length", r.ContentLength, "path", r.URL.Path, "remote", r.RemoteAddr)
	w.Header().Set("Connection", "close")
	httpError(w, http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf(
		"the request body is larger than %d bytes (%.1f MiB), the most this server accepts; "+
			"raise it with --max-body-bytes, TOLLGATE_MAX_BODY_BYTES or http.max_body_bytes in tollgate.yaml",
		limit, float64(limit)/(1<<20)))
}

// inFlight counts each agent's MCP requests being handled.
type inFlight struct {
	mu sync.Mutex
	n  map[string]int64
}

// acquire takes one of agent's slots; false when all max are taken.
func (f *inFlight) acquire(agent string, max int64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == nil {
		f.n = map[string]int64{}
	}
	if max > 0 && f.n[agent] >= max {
		return false
	}
	f.n[agent]++
	return true
}

func (f *inFlight) release(agent string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n[agent]--; f.n[agent] <= 0 {
		delete(f.n, agent)
	}
}

// admit runs an authenticated MCP request: its session ids must be the
// agent's, a POST's body is read within the limits, and the agent's
// in-flight cap is held while it is handled.
func (s *Server) admit(w http.ResponseWriter, r *http.Request, agent string, next http.Handler) {
	if !s.guardSessions(w, r, agent) {
		return
	}
	// A streamable session is busy while a request or GET stream is in it:
	// the idle sweeper leaves it alone.
	if id := r.Header.Get(sessionIDHeader); id != "" && r.URL.Path == "/mcp" {
		if !s.sessions.enter(id, time.Now()) {
			httpError(w, http.StatusNotFound, "session_not_found",
				"no such MCP session (it ended, expired while idle, the server restarted, or it never existed); initialize a new one")
			return
		}
		defer s.sessions.exit(id, time.Now())
	}
	if r.Method != http.MethodPost {
		// GET /sse, and GET /mcp without a session, open a session.
		if r.Method == http.MethodGet && (r.URL.Path == "/sse" || (r.URL.Path == "/mcp" && r.Header.Get(sessionIDHeader) == "")) {
			if r, res, ok := s.reserveSession(w, r, agent); ok {
				defer s.sessions.release(res) // no-op once the session registered
				next.ServeHTTP(w, r)
			}
			return
		}
		// GET streams live as long as the client wants: not counted.
		next.ServeHTTP(w, r)
		return
	}
	body, ok := s.readMCPBody(w, r)
	if !ok || !guardSessionlessCancel(w, r, body) {
		return
	}
	if r.URL.Path == "/mcp" && r.Header.Get(sessionIDHeader) == "" && jsonrpcMethod(body) == string(mcp.MethodInitialize) {
		var res *sessionReservation
		if r, res, ok = s.reserveSession(w, r, agent); !ok {
			return
		}
		defer s.sessions.release(res) // no-op once the session's id was minted
	}
	max := s.cfg.HTTP.MaxInFlightPerAgent
	if !s.inFlight.acquire(agent, max) {
		s.log.Info("refused a request over the agent's in-flight cap", "agent", agent, "cap", max, "path", r.URL.Path)
		w.Header().Set("Retry-After", "1")
		httpError(w, http.StatusTooManyRequests, "too_many_requests", fmt.Sprintf(
			"agent %s already has %d MCP requests in flight, the most allowed at once (http.max_in_flight_per_agent, --max-in-flight); "+
				"wait for one to finish and retry", agent, max))
		return
	}
	release := sync.OnceFunc(func() { s.inFlight.release(agent) })
	owned := true // false once the SSE stream owns the release
	defer func() {
		if owned {
			release()
		}
	}()
	// A request on /message is answered on the session's stream: its slot
	// is held until then (sseInFlight), unless mcp-go refused it.
	if r.URL.Path == "/message" {
		if id, request := jsonrpcID(body); request {
			session := r.URL.Query().Get(sessionIDQuery)
			held := &statusRecorder{ResponseWriter: w}
			s.sseInFlight.hold(session, id, release)
			next.ServeHTTP(held, r)
			if held.status != http.StatusAccepted {
				s.sseInFlight.answered(session, id)
			}
			owned = false
			return
		}
	}
	next.ServeHTTP(w, r)
}

// statusRecorder remembers the status a handler answered.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(p)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// sseInFlight holds an agent's slot for a request posted to /message until
// its response goes out on the session's stream: mcp-go answers the POST 202
// at once and does the work after, so the POST alone would count nothing.
type sseInFlight struct {
	mu      sync.Mutex
	pending map[string]map[string]func() // session id → JSON-RPC id → release
}

// hold records release as the slot of request id in session.
func (p *sseInFlight) hold(session, id string, release func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pending == nil {
		p.pending = map[string]map[string]func(){}
	}
	if p.pending[session] == nil {
		p.pending[session] = map[string]func(){}
	}
	if old := p.pending[session][id]; old != nil {
		old() // a client reusing an id: the earlier one is no longer tracked
	}
	p.pending[session][id] = release
}

// answered releases the slot of request id in session, if held.
func (p *sseInFlight) answered(session, id string) {
	p.mu.Lock()
	release := p.pending[session][id]
	delete(p.pending[session], id)
	p.mu.Unlock()
	if release != nil {
		release()
	}
}

// ended releases every slot of a session whose stream closed.
func (p *sseInFlight) ended(session string) {
	p.mu.Lock()
	held := p.pending[session]
	delete(p.pending, session)
	p.mu.Unlock()
	for _, release := range held {
		release()
	}
}

// jsonrpcMethod is a message's method ("" for a response or garbage).
func jsonrpcMethod(msg []byte) string {
	var m struct {
		Method string `json:"method"`
	}
	_ = json.Unmarshal(msg, &m)
	return m.Method
}

// jsonrpcID is a message's id in one canonical form ("" for none) and
// whether it is a request (has a method).
func jsonrpcID(msg []byte) (id string, request bool) {
	var m struct {
		ID     any    `json:"id"`
		Method string `json:"method"`
	}
	if json.Unmarshal(msg, &m) != nil || m.ID == nil {
		return "", false
	}
	b, _ := json.Marshal(m.ID)
	return string(b), m.Method != ""
}

// watchSSE wraps the GET /sse stream: it learns the session from the
// endpoint event and releases the slot of every response written on it, and
// all of them when the stream ends.
func (s *Server) watchSSE(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &sseWatcher{ResponseWriter: w, pending: &s.sseInFlight}
		next.ServeHTTP(sw, r)
		if sw.session != "" {
			s.sseInFlight.ended(sw.session)
		}
	})
}

type sseWatcher struct {
	http.ResponseWriter
	pending *sseInFlight
	session string
}

// Write sees each event as mcp-go writes it (one Write per event).
func (sw *sseWatcher) Write(p []byte) (int, error) {
	n, err := sw.ResponseWriter.Write(p)
	for line := range strings.SplitSeq(string(p), "\n") {
		data, ok := strings.CutPrefix(strings.TrimRight(line, "\r"), "data: ")
		if !ok {
			continue
		}
		if sw.session == "" {
			if u, perr := url.Parse(data); perr == nil && u.Query().Get(sessionIDQuery) != "" {
				sw.session = u.Query().Get(sessionIDQuery)
			}
			continue
		}
		if id, request := jsonrpcID([]byte(data)); id != "" && !request {
			sw.pending.answered(sw.session, id)
		}
	}
	return n, err
}

func (sw *sseWatcher) Flush() {
	if f, ok := sw.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection.
func (sw *sseWatcher) Unwrap() http.ResponseWriter { return sw.ResponseWriter }
