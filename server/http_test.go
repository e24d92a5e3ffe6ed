package server

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/tollgatehq/tollgate/ledger"
)

// The HTTP listener's security: agent bearer tokens on /mcp, /sse and
// /message, Host/Origin checks against DNS rebinding, /healthz, /metrics,
// and the refusal to serve an open listener without protection.

// trInitBody is a legacy initialize request: it opens a stateful session.
const trInitBody = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw-http","version":"1"}}}`

// trCallBody is a tools/call that would be audited as call.received if it
// reached the MCP server.
const trCallBody = `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"check_domain","arguments":{"domain":"auth-matrix.dev"}}}`

// trPost sends one JSON-RPC message over HTTP as a streamable HTTP client would.
func trPost(t *testing.T, url, authorization, sessionID, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	if sessionID != "" {
		req.Header.Set("Mcp-Session-Id", sessionID)
		req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// trOpenSSE opens the legacy SSE stream and returns the message endpoint the
// server announced, with the stream's cancel func.
func trOpenSSE(t *testing.T, base, authorization string) (resp *http.Response, endpoint string, cancel context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/sse", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		return resp, "", cancel
	}
	sc := bufio.NewScanner(resp.Body)
	event := ""
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "event: "); ok {
			event = v
		}
		if v, ok := strings.CutPrefix(line, "data: "); ok && event == "endpoint" {
			return resp, v, cancel
		}
	}
	cancel()
	t.Fatalf("SSE stream ended without an endpoint event: %v", sc.Err())
	return nil, "", nil
}

// trCountEvents counts audit events of one type.
func trCountEvents(t *testing.T, e *testEnv, typ string) int {
	t.Helper()
	n := 0
	if err := e.db.Events(context.Background(), ledger.EventQuery{}, func(ev ledger.Event) error {
		if ev.Type == typ {
			n++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// trWellFormedToken is a token of the right shape that was never issued.
func trWellFormedToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return "tg_" + base64.RawURLEncoding.EncodeToString(b)
}

func TestHTTPAuthMatrix(t *testing.T) {
	t.Parallel()
	clk := newManualClock()
	e := newEnv(t, withClock(clk.Now), withConfig(func(c *Config) { c.Auth = "tokens" }))
	ctx := context.Background()
	mk := func(name, team string, roles []string, ttl time.Duration) string {
		t.Helper()
		tok, err := e.db.CreateAgent(ctx, ledger.Agent{Name: name, Team: team, Roles: roles, Owner: "alice"}, ttl, "test")
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	good := mk(webBot, "web", []string{"agent", "deployer"}, 24*time.Hour)
	shortLived := mk("brief-bot", "web", []string{"agent"}, time.Hour)
	revoked := mk("gone-bot", "web", []string{"agent"}, 24*time.Hour)
	if err := e.db.RevokeAgent(ctx, "gone-bot", "test"); err != nil {
		t.Fatal(err)
	}
	rotatedOld := mk("rot-bot", "web", []string{"agent"}, 24*time.Hour)
	rotatedNew, err := e.db.RotateAgentToken(ctx, "rot-bot", 24*time.Hour, 10*time.Minute, "test")
	if err != nil {
		t.Fatal(err)
	}
	unknown := trWellFormedToken()
	secrets := []string{good, shortLived, revoked, rotatedOld, rotatedNew, unknown}

	base := trServeHTTP(t, e)

	// A live session on each transport, opened with the good token: a
	// request that carries a bad token must be refused even though it names
	// a session that exists, and must not reach the MCP server.
	initResp := trPost(t, base+"/mcp", "Bearer "+good, "", trInitBody)
	_ = initResp.Body.Close()
	mcpSession := initResp.Header.Get("Mcp-Session-Id")
	if initResp.StatusCode != http.StatusOK || mcpSession == "" {
		t.Fatalf("initialize with a good token: %s, session %q", initResp.Status, mcpSession)
	}
	notified := trPost(t, base+"/mcp", "Bearer "+good, mcpSession, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	_ = notified.Body.Close()
	sseResp, sseEndpoint, sseCancel := trOpenSSE(t, base, "Bearer "+good)
	defer sseCancel()
	defer sseResp.Body.Close()
	if sseEndpoint == "" {
		t.Fatalf("SSE with a good token: %s", sseResp.Status)
	}
	for _, body := range []string{trInitBody, `{"jsonrpc":"2.0","method":"notifications/initialized"}`} {
		r := trPost(t, base+sseEndpoint, "Bearer "+good, "", body)
		_ = r.Body.Close()
	}

	type authCase struct {
		name   string
		header string // Authorization header; empty sends none
		ok     bool
		// code: invalid_request for no token at all (logged at debug, not
		// audited), invalid_token for a bad one, audited with a reason
		// containing desc. The caller gets one answer for both.
		code string
		desc string
		// foreign: a valid token of another agent than the one that opened
		// the sessions, so it may open its own but not drive theirs (403).
		foreign bool
	}
	refused := func(name, header, code, desc string) authCase {
		return authCase{name: name, header: header, code: code, desc: desc}
	}
	allowed := func(name, header string) authCase { return authCase{name: name, header: header, ok: true} }
	other := func(name, header string) authCase {
		return authCase{name: name, header: header, ok: true, foreign: true}
	}

	phases := []struct {
		name    string
		advance time.Duration
		cases   []authCase
	}{
		{"at issue", 0, []authCase{
			refused("no header", "", "invalid_request", "required"),
			refused("scheme only", "Bearer", "invalid_request", "required"),
			refused("basic", "Basic x", "invalid_request", "required"),
			refused("no scheme", "tg_short", "invalid_request", "required"),
			refused("short token", "Bearer tg_short", "invalid_token", "malformed"),
			refused("not a tollgate token", "Bearer "+strings.Repeat("x", 46), "invalid_token", "malformed"),
			refused("unknown", "Bearer "+unknown, "invalid_token", "not valid"),
			refused("revoked", "Bearer "+revoked, "invalid_token", "revoked"),
			allowed("good", "Bearer "+good),
			allowed("lower-case scheme", "bearer "+good),
			other("short-lived before expiry", "Bearer "+shortLived),
			other("rotated old at rotation", "Bearer "+rotatedOld),
			other("rotated new", "Bearer "+rotatedNew),
		}},
		{"within the overlap", 5 * time.Minute, []authCase{
			other("rotated old within overlap", "Bearer "+rotatedOld),
			other("rotated new", "Bearer "+rotatedNew),
		}},
		{"after the overlap and the short ttl", 2 * time.Hour, []authCase{
			refused("expired", "Bearer "+shortLived, "invalid_token", "expired"),
			refused("rotated old after overlap", "Bearer "+rotatedOld, "invalid_token", "expired"),
			refused("revoked stays revoked", "Bearer "+revoked, "invalid_token", "revoked"),
			other("rotated new", "Bearer "+rotatedNew),
			allowed("good", "Bearer "+good),
		}},
	}

	reasons := map[string]bool{} // the real reasons the refused tokens had
	receivedBefore := trCountEvents(t, e, "call.received")
	wantReceived, wantRejected := 0, 0
	for _, ph := range phases {
		clk.Advance(ph.advance)
		for _, tc := range ph.cases {
			t.Run(ph.name+"/"+tc.name, func(t *testing.T) {
				// Each route, with a request that would do real work if it got through.
				type answer struct {
					resp *http.Response
					body []byte
				}
				read := func(r *http.Response) answer {
					defer r.Body.Close()
					b, _ := io.ReadAll(io.LimitReader(r.Body, 4096))
					return answer{r, b}
				}
				requests := []struct {
					route string
					do    func() answer
				}{
					{"POST /mcp initialize", func() answer { return read(trPost(t, base+"/mcp", tc.header, "", trInitBody)) }},
					{"POST /mcp tools/call", func() answer { return read(trPost(t, base+"/mcp", tc.header, mcpSession, trCallBody)) }},
					{"GET /sse", func() answer {
						r, endpoint, cancel := trOpenSSE(t, base, tc.header)
						defer cancel()
						if r.StatusCode == http.StatusOK {
							// A stream: what matters is that it announced its endpoint.
							_ = r.Body.Close()
							return answer{r, []byte(endpoint)}
						}
						return read(r)
					}},
					{"POST /message tools/call", func() answer { return read(trPost(t, base+sseEndpoint, tc.header, "", trCallBody)) }},
				}
				for _, rq := range requests {
					a := rq.do()
					resp, body := a.resp, a.body
					if tc.ok && tc.foreign && strings.HasSuffix(rq.route, "tools/call") {
						if resp.StatusCode != http.StatusForbidden {
							t.Errorf("%s on another agent's session: %s, want 403: %s", rq.route, resp.Status, body)
						}
						continue
					}
					if tc.ok {
						if resp.StatusCode/100 != 2 {
							t.Errorf("%s: %s, want success: %s", rq.route, resp.Status, body)
						}
						continue
					}
					if resp.StatusCode != http.StatusUnauthorized {
						t.Errorf("%s: %s, want 401: %s", rq.route, resp.Status, body)
						continue
					}
					// One text for every bad token: the caller learns nothing
					// about a token it holds but may not use.
					wa := resp.Header.Get("WWW-Authenticate")
					if want := `Bearer realm="tollgate", error="invalid_token", error_description="` + badTokenText + `"`; wa != want {
						t.Errorf("%s: WWW-Authenticate %q, want %q", rq.route, wa, want)
					}
					if tc.code == "invalid_token" {
						reasons[tc.desc] = true
					}
					if sid := resp.Header.Get("Mcp-Session-Id"); sid != "" {
						t.Errorf("%s: a refused request got a session %q", rq.route, sid)
					}
					var payload struct {
						Error       string `json:"error"`
						Description string `json:"error_description"`
					}
					if err := json.Unmarshal(body, &payload); err != nil || payload.Error != "invalid_token" || payload.Description != badTokenText {
						t.Errorf("%s: body %s, want the one JSON error invalid_token (not JSON-RPC)", rq.route, body)
					}
				}
			})
			if tc.ok && !tc.foreign {
				wantReceived += 2 // the tools/call on /mcp and on /message
			} else if tc.code == "invalid_token" {
				wantRejected += 4
			}
		}
	}

	// The SSE transport answers on the stream, so give its calls a moment to land.
	deadline := time.Now().Add(hangGuard)
	for trCountEvents(t, e, "call.received")-receivedBefore < wantReceived && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := trCountEvents(t, e, "call.received") - receivedBefore; got != wantReceived {
		t.Errorf("%d call.received events, want %d: only the accepted requests may reach the MCP server", got, wantReceived)
	}
	if got := trCountEvents(t, e, "auth.rejected"); got != wantRejected {
		t.Errorf("%d auth.rejected audit events, want %d (one per refused token)", got, wantRejected)
	}
	// The audit trail and the log keep the real reason the caller was not told.
	var audited []string
	_ = e.db.Events(ctx, ledger.EventQuery{Types: []string{"auth.rejected"}}, func(ev ledger.Event) error {
		var d struct{ Reason string }
		_ = json.Unmarshal(ev.Data, &d)
		audited = append(audited, d.Reason)
		return nil
	})
	for word := range reasons {
		if !slices.ContainsFunc(audited, func(r string) bool { return strings.Contains(r, word) }) {
			t.Errorf("no auth.rejected event gives the reason %q: %v", word, audited)
		}
		if !strings.Contains(e.logs.String(), word) {
			t.Errorf("the server log does not give the reason %q", word)
		}
	}
	// No token ever reaches the logs or the audit trail.
	var audit strings.Builder
	_ = e.db.Events(ctx, ledger.EventQuery{}, func(ev ledger.Event) error {
		audit.Write(ev.Data)
		return nil
	})
	for _, s := range secrets {
		if strings.Contains(e.logs.String(), s) || strings.Contains(audit.String(), s) {
			t.Fatalf("a bearer token (prefix %s) leaked into the logs or the audit trail", s[:6])
		}
	}
}

// TestHTTPTokenAgentIsThePrincipal drives real mcp-go clients with bearer
// tokens over both HTTP transports: the token's agent, with its roles, is
// who Cerbos sees.
func TestHTTPTokenAgentIsThePrincipal(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) {
		c.Auth = "tokens"
		c.Approvals.Wait = 0
	}))
	ctx := context.Background()
	webTok, err := e.db.CreateAgent(ctx, ledger.Agent{Name: webBot, Team: "web", Roles: []string{"agent", "deployer"}, Owner: "alice"}, time.Hour, "test")
	if err != nil {
		t.Fatal(err)
	}
	opsTok, err := e.db.CreateAgent(ctx, ledger.Agent{Name: opsBot, Team: "ops", Roles: []string{"agent"}, Owner: "erin"}, time.Hour, "test")
	if err != nil {
		t.Fatal(err)
	}
	base := trServeHTTP(t, e)
	connect := func(t *testing.T, tr, token string) (*client.Client, error) {
		h := map[string]string{}
		if token != "" {
			h["Authorization"] = "Bearer " + token
		}
		var c *client.Client
		switch tr {
		case "streamable":
			st, err := transport.NewStreamableHTTP(base+"/mcp", transport.WithHTTPHeaders(h))
			if err != nil {
				return nil, err
			}
			c = client.NewClient(st)
		case "sse":
			st, err := transport.NewSSE(base+"/sse", transport.WithHeaders(h))
			if err != nil {
				return nil, err
			}
			c = client.NewClient(st)
		}
		if err := c.Start(context.Background()); err != nil {
			return nil, err
		}
		t.Cleanup(func() { _ = c.Close() })
		init := mcp.InitializeRequest{}
		init.Params.ClientInfo = mcp.Implementation{Name: "token-test", Version: "1"}
		ictx, cancel := context.WithTimeout(ctx, hangGuard)
		defer cancel()
		if _, err := c.Initialize(ictx, init); err != nil {
			return nil, err
		}
		return c, nil
	}
	deploy := func(t *testing.T, c *client.Client, script string) *mcp.CallToolResult {
		req := mcp.CallToolRequest{}
		req.Params.Name = "deploy_worker"
		req.Params.Arguments = map[string]any{
			"script_name": script, "module": okModule, "compatibility_date": "2025-01-01",
			"environment": "production", "reason": reason,
		}
		res, err := c.CallTool(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	for _, tr := range []string{"streamable", "sse"} {
		t.Run(tr, func(t *testing.T) {
			if _, err := connect(t, tr, ""); err == nil {
				t.Fatal("a client without a token connected")
			}

			ops, err := connect(t, tr, opsTok)
			if err != nil {
				t.Fatal(err)
			}
			res := deploy(t, ops, "ops-dash-"+tr)
			v := opView(t, res)
			if !res.IsError || v.Status != "denied" || !strings.Contains(text(res), "production deploys need the deployer role; ops-bot has agent") {
				t.Fatalf("ops-bot production deploy: %s %+v", text(res), v)
			}
			op, err := e.db.Operation(ctx, v.OperationID)
			if err != nil || op.Agent != opsBot {
				t.Fatalf("operation %s belongs to %q (%v), want %s", v.OperationID, op.Agent, err, opsBot)
			}

			web, err := connect(t, tr, webTok)
			if err != nil {
				t.Fatal(err)
			}
			res = deploy(t, web, "web-prod-"+tr)
			v = opView(t, res)
			if res.IsError || v.Status != "awaiting_approval" {
				t.Fatalf("web-bot production deploy (a deployer): %s %+v", text(res), v)
			}
			if op, err := e.db.Operation(ctx, v.OperationID); err != nil || op.Agent != webBot {
				t.Fatalf("operation %s belongs to %q (%v), want %s", v.OperationID, op.Agent, err, webBot)
			}
		})
	}
	if len(e.sb.Scripts()) != 0 {
		t.Fatalf("production scripts deployed without approval: %+v", e.sb.Scripts())
	}
}

func TestHTTPHostAndOriginChecks(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) {
		c.Auth = "tokens"
		c.AllowedHosts = []string{"tollgate.internal"}
	}))
	base := trServeHTTP(t, e)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(base, "http://"))
	cases := []struct {
		name, path, host, origin string
		want                     int
	}{
		{"loopback ip", "/healthz", "127.0.0.1:" + port, "", http.StatusOK},
		{"localhost", "/healthz", "localhost:" + port, "", http.StatusOK},
		{"localhost without port", "/healthz", "localhost", "", http.StatusOK},
		{"ipv6 loopback", "/healthz", "[::1]:" + port, "", http.StatusOK},
		{"configured name", "/healthz", "tollgate.internal:" + port, "", http.StatusOK},
		{"upper-case localhost", "/healthz", "LOCALHOST:" + port, "", http.StatusOK},
		{"local origin", "/healthz", "127.0.0.1:" + port, "http://localhost:6274", http.StatusOK},
		{"evil host", "/healthz", "evil.example:" + port, "", http.StatusForbidden},
		{"rebound name", "/healthz", "attacker.localhost.evil.example", "", http.StatusForbidden},
		{"evil origin", "/healthz", "127.0.0.1:" + port, "http://evil.example", http.StatusForbidden},
		{"null origin", "/healthz", "127.0.0.1:" + port, "null", http.StatusForbidden},
		// The rebinding check runs before authentication: a page cannot even probe for 401s.
		{"evil host on /mcp", "/mcp", "evil.example", "", http.StatusForbidden},
		{"evil origin on /mcp", "/mcp", "127.0.0.1:" + port, "https://evil.example", http.StatusForbidden},
		{"evil origin on /sse", "/sse", "127.0.0.1:" + port, "https://evil.example", http.StatusForbidden},
		{"evil host on /metrics", "/metrics", "evil.example", "", http.StatusForbidden},
		{"good host on /mcp without a token", "/mcp", "localhost:" + port, "http://localhost", http.StatusUnauthorized},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			method := http.MethodGet
			var body io.Reader
			if tc.path == "/mcp" {
				method, body = http.MethodPost, strings.NewReader(trInitBody)
			}
			req, err := http.NewRequest(method, base+tc.path, body)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = tc.host
			if tc.origin != "" {
				req.Header.Set("Origin", tc.origin)
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			msg, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("Host %q Origin %q → %s (%s), want %d", tc.host, tc.origin, resp.Status, msg, tc.want)
			}
			if tc.want == http.StatusForbidden && !strings.Contains(string(msg), "is not this server") {
				t.Errorf("a 403 should say why: %s", msg)
			}
		})
	}
}

func TestHealthz(t *testing.T) {
	t.Parallel()
	type health struct {
		OK     bool              `json:"ok"`
		Checks map[string]string `json:"checks"`
	}
	get := func(t *testing.T, e *testEnv) (int, health) {
		t.Helper()
		resp, err := http.Get(trServeHTTP(t, e) + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var h health
		if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, h
	}

	t.Run("ready", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		code, h := get(t, e)
		if code != http.StatusOK || !h.OK || h.Checks["database"] != "ok" || h.Checks["policy_engine"] != "ok" || !strings.Contains(h.Checks["slack"], "not configured") {
			t.Fatalf("healthz %d %+v", code, h)
		}
	})
	t.Run("ready with slack", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, withSlack())
		code, h := get(t, e)
		if code != http.StatusOK || !h.OK || h.Checks["slack"] != "ok" {
			t.Fatalf("healthz %d %+v", code, h)
		}
	})
	t.Run("policy engine down", func(t *testing.T) {
		t.Parallel()
		// A unix socket that was listening and is now closed: the PDP died.
		sock := filepath.Join(t.TempDir(), "cerbos.sock")
		ln, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		_ = ln.Close()
		// Every check waits its whole timeout for a PDP that never comes.
		e := newEnv(t, withPDP("unix:"+sock), withAuthzTimeout(2*time.Second))
		code, h := get(t, e)
		if code != http.StatusServiceUnavailable || h.OK || !strings.HasPrefix(h.Checks["policy_engine"], "error:") || h.Checks["database"] != "ok" {
			t.Fatalf("healthz with a dead PDP: %d %+v", code, h)
		}
		// And a tool call fails closed with a reason, rather than hanging or allowing.
		res := e.call(webBot, "check_domain", map[string]any{"domain": "pdp-down.dev"})
		if !res.IsError || !strings.Contains(strings.ToLower(text(res)), "unavailable") {
			t.Fatalf("check_domain with the PDP down: %s", text(res))
		}
	})
}

func TestMetricsExposeEverySeries(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) {
		c.Approvals.Wait = 0
		c.Budgets = []BudgetConfig{{Scope: "team:web", Window: "day", Limit: "100.00"}}
	}))
	if res := e.call(webBot, "check_domain", map[string]any{"domain": "metrics-check.dev"}); res.IsError {
		t.Fatal(text(res))
	}
	if res := e.call(webBot, "deploy_worker", map[string]any{
		"script_name": "web-metrics", "module": okModule, "compatibility_date": "2025-01-01", "environment": "preview", "reason": reason,
	}); res.IsError {
		t.Fatal(text(res))
	}
	if v := opView(t, e.call(webBot, "register_domain", registerArgs("metrics-wait.dev"))); v.Status != "awaiting_approval" {
		t.Fatalf("register: %+v", v)
	}
	if res := e.call(webBot, "register_domain", registerArgs("metrics-deny.xyz")); !res.IsError {
		t.Fatal("a .xyz registration should be refused by policy")
	}

	url := trServeHTTP(t, e) + "/metrics"
	scrape := func() string {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("/metrics: %s", resp.Status)
		}
		raw, _ := io.ReadAll(resp.Body)
		return string(raw)
	}
	// Each series in metrics.go, with a sample the calls above must have produced.
	want := []string{
		`tollgate_tool_calls_total{outcome="ok",tool="check_domain"} 1`,
		`tollgate_tool_calls_total{outcome="ok",tool="deploy_worker"} 1`,
		`tollgate_tool_calls_total{outcome="ok",tool="register_domain"} 1`,
		`tollgate_tool_calls_total{outcome="refused",tool="register_domain"} 1`,
		`tollgate_policy_decision_seconds_count{action="register",allowed="false",kind="domain"} 1`,
		`tollgate_policy_decision_seconds_count{action="register",allowed="true",kind="domain"}`,
		`tollgate_policy_decision_seconds_count{action="deploy",allowed="true",kind="worker_script"}`,
		`tollgate_budget_reserve_seconds_count{outcome="reserved"}`,
		`tollgate_cloudflare_request_seconds_count{method="PUT"`,
		`tollgate_execution_seconds_count{outcome="ok",tool="deploy_worker"} 1`,
		// The pending gauge is refreshed by the background loop (every second).
		`tollgate_pending_approvals 1`,
		// The shared quote token of check_domain's price check; the
		// deploy's own token is gone.
		`tollgate_cloudflare_tokens_alive 1`,
		`tollgate_policy_requests_total `,
		`tollgate_policy_cache_hits_total 0`,
		`tollgate_ledger_write_transactions_total `,
		`tollgate_cloudflare_requests_in_window{token_id="parent"} `,
		`tollgate_cloudflare_rate_limit 1200`,
		`tollgate_cloudflare_requests_refused_total 0`,
		`tollgate_cloudflare_account_tokens `,
		`tollgate_cloudflare_token_cap 500`,
		`tollgate_budget_limit{currency="USD",scope="team:web",window="day"} 100`,
		`tollgate_budget_held{currency="USD",scope="team:web",window="day"} 12.18`,
		`tollgate_budget_spent{currency="USD",scope="team:web",window="day"} 0`,
		`go_goroutines `,
		`process_cpu_seconds_total `,
	}
	var body string
	var missing []string
	for deadline := time.Now().Add(hangGuard); ; {
		body, missing = scrape(), nil
		for _, w := range want {
			if !strings.Contains(body, w) {
				missing = append(missing, w)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, m := range missing {
		t.Errorf("/metrics has no %s", m)
	}
	if len(missing) > 0 {
		t.Logf("/metrics:\n%s", body)
	}
	for _, help := range []string{"tollgate_tool_calls_total", "tollgate_policy_decision_seconds", "tollgate_budget_reserve_seconds",
		"tollgate_cloudflare_request_seconds", "tollgate_execution_seconds", "tollgate_pending_approvals",
		"tollgate_cloudflare_tokens_alive", "tollgate_budget_spent", "tollgate_budget_held", "tollgate_budget_limit"} {
		if !strings.Contains(body, "# HELP "+help+" ") {
			t.Errorf("/metrics has no HELP for %s", help)
		}
	}
}

func TestConfigRefusesAnOpenListenerWithoutProtection(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		transport string
		listen    string
		auth      string
		tls       string // "", "server" (cert only) or "mutual" (with a client CA)
		wantErr   bool
	}{
		{"all interfaces, no auth, no tls", "http", "0.0.0.0:8787", "none", "", true},
		{"lan address, no auth, no tls", "http", "192.168.1.10:8787", "none", "", true},
		{"ipv6 any, no auth, no tls", "sse", "[::]:8787", "none", "", true},
		{"empty host means every interface", "http", ":8787", "none", "", true},
		{"all interfaces with tokens", "http", "0.0.0.0:8787", "tokens", "", false},
		{"all interfaces, server tls only: encrypts, does not authenticate", "http", "0.0.0.0:8787", "none", "server", true},
		{"all interfaces with client certificates", "http", "0.0.0.0:8787", "none", "mutual", false},
		{"loopback, no auth", "http", "127.0.0.1:8787", "none", "", false},
		{"localhost, no auth", "http", "localhost:8787", "none", "", false},
		{"ipv6 loopback, no auth", "http", "[::1]:8787", "none", "", false},
		{"stdio never listens", "stdio", "0.0.0.0:8787", "none", "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := testConfig(t.TempDir())
			cfg.Transport, cfg.Listen, cfg.Auth = tc.transport, tc.listen, tc.auth
			switch tc.tls {
			case "server":
				cfg.TLS = TLSConfig{Cert: "cert.pem", Key: "key.pem"}
			case "mutual":
				cfg.TLS = TLSConfig{Cert: "cert.pem", Key: "key.pem", ClientCA: "clients.pem"}
			}
			err := cfg.Validate()
			if !tc.wantErr {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate accepted an unprotected non-loopback listener")
			}
			for _, want := range []string{tc.listen, "not loopback", "--auth tokens", "--tls-client-ca"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
			// New refuses the same configuration: nothing can serve it.
			if _, err := New(cfg, Deps{}); err == nil || !strings.Contains(err.Error(), "not loopback") {
				t.Errorf("New: %v", err)
			}
		})
	}
	// All problems are reported at once.
	cfg := testConfig(t.TempDir())
	cfg.Listen, cfg.Auth, cfg.Transport = "0.0.0.0:8787", "none", "carrier-pigeon"
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), `transport "carrier-pigeon": use stdio, http or sse`) || !strings.Contains(err.Error(), "not loopback") {
		t.Fatalf("Validate should report both problems: %v", err)
	}
}

// BenchmarkHTTPBearerAuth measures what authentication adds to a request on
// /mcp: a ping on an open session with auth none, with a good token (hash
// lookup in SQLite), and the cost of refusing an unknown and a malformed
// token (each refusal also appends an auth.rejected audit event).
func BenchmarkHTTPBearerAuth(b *testing.B) {
	run := func(b *testing.B, auth string, header func(good string) string, wantStatus int) {
		e := newBenchEnv(b, withConfig(func(c *Config) { c.Auth = auth }))
		good := ""
		if auth == "tokens" {
			var err error
			good, err = e.db.CreateAgent(context.Background(), ledger.Agent{Name: webBot, Team: "web", Roles: []string{"agent"}}, time.Hour, "bench")
			if err != nil {
				b.Fatal(err)
			}
		}
		ts := httptest.NewServer(e.srv.Handler())
		b.Cleanup(ts.Close)
		hc := ts.Client()
		post := func(authorization, sid, body string) int {
			req, _ := http.NewRequest(http.MethodPost, ts.URL+"/mcp", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			if authorization != "" {
				req.Header.Set("Authorization", authorization)
			}
			if sid != "" {
				req.Header.Set("Mcp-Session-Id", sid)
				req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
			}
			resp, err := hc.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			return resp.StatusCode
		}
		// Open a session the measured requests name.
		req, _ := http.NewRequest(http.MethodPost, ts.URL+"/mcp", strings.NewReader(trInitBody))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if good != "" {
			req.Header.Set("Authorization", "Bearer "+good)
		}
		resp, err := hc.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_ = resp.Body.Close()
		sid := resp.Header.Get("Mcp-Session-Id")
		h := header(good)
		const ping = `{"jsonrpc":"2.0","id":9,"method":"ping"}`
		b.ReportAllocs()
		for b.Loop() {
			if got := post(h, sid, ping); got != wantStatus {
				b.Fatalf("status %d, want %d", got, wantStatus)
			}
		}
	}
	b.Run("auth_none", func(b *testing.B) {
		run(b, "none", func(string) string { return "" }, http.StatusOK)
	})
	b.Run("good_token", func(b *testing.B) {
		run(b, "tokens", func(g string) string { return "Bearer " + g }, http.StatusOK)
	})
	b.Run("unknown_token", func(b *testing.B) {
		unknown := trWellFormedToken()
		run(b, "tokens", func(string) string { return "Bearer " + unknown }, http.StatusUnauthorized)
	})
	b.Run("malformed_token", func(b *testing.B) {
		run(b, "tokens", func(string) string { return "Bearer tg_short" }, http.StatusUnauthorized)
	})
}

// TestSessionsAreBoundToTheirAgent: an MCP session opened with one agent's
// token cannot be driven with another agent's token, on either transport.
func TestSessionsAreBoundToTheirAgent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) { c.Auth = "tokens" }))
	ctx := context.Background()
	web, err := e.db.CreateAgent(ctx, ledger.Agent{Name: webBot, Team: "web", Roles: []string{"agent"}}, time.Hour, "test")
	if err != nil {
		t.Fatal(err)
	}
	ops, err := e.db.CreateAgent(ctx, ledger.Agent{Name: opsBot, Team: "ops", Roles: []string{"agent"}}, time.Hour, "test")
	if err != nil {
		t.Fatal(err)
	}
	base := trServeHTTP(t, e)

	init := trPost(t, base+"/mcp", "Bearer "+web, "", trInitBody)
	_ = init.Body.Close()
	sid := init.Header.Get("Mcp-Session-Id")
	if init.StatusCode != http.StatusOK || sid == "" {
		t.Fatalf("initialize: %s %q", init.Status, sid)
	}
	before := trCountEvents(t, e, "call.received")
	hijack := trPost(t, base+"/mcp", "Bearer "+ops, sid, trCallBody)
	_ = hijack.Body.Close()
	if hijack.StatusCode != http.StatusForbidden {
		t.Fatalf("another agent's token on web-bot's session: %s, want 403", hijack.Status)
	}
	own := trPost(t, base+"/mcp", "Bearer "+web, sid, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	_ = own.Body.Close()
	if own.StatusCode >= 300 {
		t.Fatalf("the owner's own session: %s", own.Status)
	}

	sseResp, endpoint, cancel := trOpenSSE(t, base, "Bearer "+web)
	defer cancel()
	defer sseResp.Body.Close()
	r := trPost(t, base+endpoint, "Bearer "+ops, "", trInitBody)
	_ = r.Body.Close()
	if r.StatusCode != http.StatusForbidden {
		t.Fatalf("another agent's token on web-bot's SSE session: %s, want 403", r.Status)
	}
	if got := trCountEvents(t, e, "call.received"); got != before {
		t.Fatalf("a hijacked call reached the MCP server (%d new call.received)", got-before)
	}
}
