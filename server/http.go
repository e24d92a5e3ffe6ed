package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	mcpserver "github.com/mark3labs/mcp-go/server"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tollgatehq/tollgate/ledger"
)

// Handler is every HTTP route on the listener:
//
//	/mcp                 streamable HTTP (transport http)
//	/sse, /message       legacy SSE (transports http and sse)
//	/slack/interactions  Slack interactivity (signed)
//	/console/            the approvers' web console (its own sign-in)
//	/healthz             readiness of the PDP, database and Slack
//	/metrics             Prometheus
//
// MCP routes require an agent bearer token unless auth is none; every route
// but Slack's checks Host and Origin against DNS rebinding.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	httpCtx := func(ctx context.Context, r *http.Request) context.Context {
		if p, ok := principalFrom(r.Context()); ok {
			return WithPrincipal(ctx, p)
		}
		return ctx
	}
	if s.cfg.Transport != "sse" {
		streamable := mcpserver.NewStreamableHTTPServer(s.mcp,
			mcpserver.WithEndpointPath("/mcp"),
			mcpserver.WithSessionIdManagerResolver(ownedSessionIDs{s}),
			mcpserver.WithHTTPContextFunc(func(ctx context.Context, r *http.Request) context.Context {
				return markRequestCtx(httpCtx(ctx, r))
			}),
			mcpserver.WithStreamableHTTPLogger(s.log.With("subsystem", "mcp-http")),
			mcpserver.WithHeartbeatInterval(20*time.Second),
		)
		mux.Handle("/mcp", s.authenticate(orderedStreams(streamable)))
		s.streamableMu.Lock()
		s.streamable = streamable
		s.streamableMu.Unlock()
		s.sweepOnce.Do(func() { go s.sweepIdleSessions(s.loops) })
	}
	sse := mcpserver.NewSSEServer(s.mcp,
		mcpserver.WithSSEEndpoint("/sse"),
		mcpserver.WithMessageEndpoint("/message"),
		mcpserver.WithUseFullURLForMessageEndpoint(false),
		mcpserver.WithSSEContextFunc(httpCtx),
		mcpserver.WithKeepAlive(true),
	)
	mux.Handle("/sse", s.authenticate(s.watchSSE(sse.SSEHandler())))
	mux.Handle("/message", s.authenticate(sse.MessageHandler()))
	// The console signs people in with its own links, not agent tokens; the
	// Host and Origin checks below still apply.
	mux.Handle("/console/", s.console.Handler())
	mux.Handle("/console", http.RedirectHandler("/console/", http.StatusMovedPermanently))
	mux.HandleFunc("/healthz", s.healthz)
	mux.Handle("/metrics", promhttp.HandlerFor(s.metrics.registry, promhttp.HandlerOpts{}))

	guarded := s.checkHost(mux)
	root := http.NewServeMux()
	root.Handle("/slack/interactions", s.slack.Handler())
	root.Handle("/", guarded)
	return s.withBodyDeadline(root)
}

// authenticate resolves the principal of an MCP request: the agent whose
// bearer token it carries, or the configured agent when auth is none, and
// admits it (sessions, body, in-flight cap). Content-Length over the body cap
// is refused first, before even the token is looked at. Under auth none a
// request carrying an Authorization header is a 400: its token would not be
// used. A
// missing, malformed, expired, revoked or unknown token is a 401 before any
// MCP processing, all with one text (badTokenText): the caller learns
// nothing about a token it does not hold; the server log and the audit
// event keep the real reason. Then every session id the request carries
// must be the agent's own (guardSessions).
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if limit := s.cfg.HTTP.maxBody(); r.ContentLength > limit {
			s.tooLarge(w, r, limit)
			return
		}
		transport := "http"
		if strings.HasPrefix(r.URL.Path, "/sse") || strings.HasPrefix(r.URL.Path, "/message") {
			transport = "sse"
		}
		if s.cfg.Auth == "none" {
			if r.Header.Get("Authorization") != "" {
				// A client that sends a token expects to act as its agent;
				// going on as the configured one would be a silent surprise.
				httpError(w, http.StatusBadRequest, "auth_not_used", fmt.Sprintf(
					"this server runs without agent tokens (--auth none): every request acts as agent %q, so the Authorization header "+
						"was not used and the request is refused. Send no Authorization header to use it as %q, or run the server with "+
						"tokens: tollgate serve --auth tokens, then tollgate agents create NAME --team TEAM --roles agent", s.cfg.Agent, s.cfg.Agent))
				return
			}
			a, _ := s.cfg.agent(s.cfg.Agent)
			s.admit(w, r.WithContext(WithPrincipal(r.Context(), principalFromConfig(a, transport))), a.Name, next)
			return
		}
		token, ok := bearer(r)
		if !ok {
			s.log.Debug("rejected request without a bearer token", "remote", r.RemoteAddr, "path", r.URL.Path)
			unauthorized(w)
			return
		}
		agent, err := s.deps.DB.Authenticate(r.Context(), token)
		if err != nil {
			reason := "the token is not valid (never issued, or its agent was removed)"
			switch {
			case errors.Is(err, ledger.ErrTokenExpired):
				reason = "the token has expired"
			case errors.Is(err, ledger.ErrTokenRevoked):
				reason = "the token was revoked"
			case errors.Is(err, ledger.ErrTokenMalformed):
				reason = "the token is malformed"
			case !errors.Is(err, ledger.ErrTokenUnknown):
				// Not the token's fault: say so rather than call it bad.
				s.log.Error("checking a bearer token", "err", err, "remote", r.RemoteAddr)
				httpError(w, http.StatusServiceUnavailable, "unavailable", "the server could not check the token right now; try again")
				return
			}
			s.log.Info("rejected bearer token", "reason", reason, "remote", r.RemoteAddr)
			// Refusals are audited, but an unauthenticated client must not be
			// able to grow the chain without bound: past the rate, only the
			// number skipped is recorded with the next audited refusal.
			if ok, skipped := s.rejections.allow(time.Now()); ok {
				_ = s.deps.DB.Append(r.Context(), ledger.NewEvent("auth.rejected", "anonymous", "", map[string]any{
					"reason": reason, "remote": r.RemoteAddr, "path": r.URL.Path, "unaudited_before": skipped,
				}))
			}
			unauthorized(w)
			return
		}
		s.admit(w, r.WithContext(WithPrincipal(r.Context(), principalFromAgent(agent, transport))), agent.Name, next)
	})
}

// rateLimit allows a burst of events per second and counts the rest.
type rateLimit struct {
	mu      sync.Mutex
	second  int64
	n       int
	skipped int
}

const auditedRejectionsPerSecond = 100

func (l *rateLimit) allow(now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if sec := now.Unix(); sec != l.second {
		l.second, l.n = sec, 0
	}
	if l.n >= auditedRejectionsPerSecond {
		l.skipped++
		return false, 0
	}
	l.n++
	skipped := l.skipped
	l.skipped = 0
	return true, skipped
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// badTokenText is the one answer to every request without a usable token.
const badTokenText = "a valid agent bearer token is required: Authorization: Bearer tg_… " +
	"(create one with tollgate agents create, replace an expiring one with tollgate agents rotate)"

func unauthorized(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="tollgate", error="invalid_token", error_description=%q`, badTokenText))
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusUnauthorized)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": "invalid_token", "error_description": badTokenText})
}

// checkHost refuses requests whose Host or Origin is not this server, so a
// web page cannot rebind its name to 127.0.0.1 and drive tollgate.
func (s *Server) checkHost(next http.Handler) http.Handler {
	allowed := s.allowedHosts()
	ok := func(host string) bool {
		h := strings.ToLower(host)
		if hh, _, err := net.SplitHostPort(h); err == nil {
			h = hh
		}
		return slices.Contains(allowed, strings.Trim(h, "[]"))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !ok(r.Host) {
			http.Error(w, fmt.Sprintf("forbidden: Host %q is not this server (add it to allowed_hosts)", r.Host), http.StatusForbidden)
			return
		}
		if o := r.Header.Get("Origin"); o != "" {
			u, err := url.Parse(o)
			if err != nil || !ok(u.Host) {
				http.Error(w, fmt.Sprintf("forbidden: Origin %q is not this server", o), http.StatusForbidden)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) allowedHosts() []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if h, _, err := net.SplitHostPort(s.cfg.Listen); err == nil && h != "" && h != "0.0.0.0" && h != "::" {
		hosts = append(hosts, strings.ToLower(h))
	}
	for _, h := range s.cfg.AllowedHosts {
		hosts = append(hosts, strings.ToLower(h))
	}
	if u, err := url.Parse(s.cfg.Console.PublicURL); err == nil && u.Hostname() != "" {
		hosts = append(hosts, strings.ToLower(u.Hostname()))
	}
	return hosts
}

// healthz reports readiness: 200 when the PDP and the database answer (and
// Slack, when configured), 503 with the failing checks otherwise.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	checks := map[string]string{}
	healthy := true
	record := func(name string, err error) {
		if err != nil {
			checks[name] = "error: " + err.Error()
			healthy = false
			return
		}
		checks[name] = "ok"
	}
	record("database", s.deps.DB.Ping(ctx))
	record("policy_engine", s.deps.Authz.Ready(ctx))
	if s.deps.Slack != nil {
		_, err := s.deps.Slack.AuthTestContext(ctx)
		record("slack", err)
	} else {
		checks["slack"] = "not configured (local approver)"
	}
	status := http.StatusOK
	if !healthy {
		status = http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"ok": healthy, "checks": checks, "version": s.deps.Version})
}

// ListenAndServe serves Handler on addr until ctx ends. A non-loopback
// address is refused unless agent tokens or TLS protect it (Validate).
func (s *Server) ListenAndServe(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: s.cfg.HTTP.ReadHeaderTimeout,
		IdleTimeout:       s.cfg.HTTP.IdleTimeout,
		MaxHeaderBytes:    s.cfg.HTTP.MaxHeaderBytes,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	if s.cfg.TLS.Cert != "" {
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		if s.cfg.TLS.ClientCA != "" {
			pem, err := os.ReadFile(s.cfg.TLS.ClientCA)
			if err != nil {
				return fmt.Errorf("read client CA: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return fmt.Errorf("client CA %s holds no PEM certificate", s.cfg.TLS.ClientCA)
			}
			srv.TLSConfig.ClientCAs = pool
			srv.TLSConfig.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	errc := make(chan error, 1)
	go func() {
		if s.cfg.TLS.Cert != "" {
			errc <- srv.ServeTLS(ln, s.cfg.TLS.Cert, s.cfg.TLS.Key)
			return
		}
		errc <- srv.Serve(ln)
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(shut)
	}
}
