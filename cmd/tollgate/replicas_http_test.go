//go:build linux

package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/slack-go/slack/slacktest"

	"github.com/tollgatehq/tollgate/approvals"
	slackchan "github.com/tollgatehq/tollgate/approvals/slack"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/ledger/store/storetest"
	"github.com/tollgatehq/tollgate/tools"
)

// TestHTTPReplicasShareOnePostgres is issue 10's acceptance for replicas
// behind a load balancer: two `tollgate serve --transport http --auth
// tokens` replicas, each on its own loopback port, on one PostgreSQL
// database, with Slack configured alike on both (one signing secret, one
// Slack Web API: slacktest). Six MCP sessions reach them through a
// round-robin reverse proxy that is sticky by Mcp-Session-Id, three on each,
// and race for a team budget of 2.5 × the price of a domain: exactly two
// reservations fit and wait for a human, the four others are refused naming
// the budget. Each waiting call is approved by a signed Slack click
// delivered to the *other* replica's /slack/interactions, and the tools/call
// waiting on the first returns the registration. `get_operation` answers
// from either replica and `tollgate approvals list --db URL` lists what
// waits in both.
func TestHTTPReplicasShareOnePostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two HTTP tollgate replicas, a sandbox, Cerbos and PostgreSQL; skipped with -short")
	}
	t.Parallel()
	const (
		price     = 12_180_000 // .dev in the sandbox
		calls     = 6
		secret    = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
		slackUser = "U0BOB"
		reason    = "HTTP replica test: a launch page bought exactly once per slot"
	)
	slackAPI := &replicaSlack{}
	sl := slacktest.NewTestServer(slackAPI.bind)
	sl.Start()
	t.Cleanup(sl.Stop)

	dsn := storetest.PostgresDSN(t)
	e := newCrashEnvWith(t, crashConfig{agents: []string{"web-bot"}, wait: "3m", budget: "30.45", db: dsn, slackUser: slackUser})
	e.extraEnv = []string{"SLACK_BOT_TOKEN=xoxb-replica-test", "SLACK_SIGNING_SECRET=" + secret,
		"TOLLGATE_SLACK_API_URL=" + sl.GetAPIURL(), "TOLLGATE_SLACK_CHANNEL=C0APPROVALS"}
	out, err := e.plainCLI("agents", "create", "http-bot", "--team", "web", "--roles", "agent,deployer",
		"--owner", "alice", "--attr", "environment=dev,trust_tier=standard", "--ttl", "1h")
	token := regexp.MustCompile(`tg_[A-Za-z0-9_-]+`).FindString(out)
	if err != nil || token == "" {
		t.Fatalf("agents create --db URL: %v\n%s", err, out)
	}

	replicas := []*httpReplica{e.serveHTTP(), e.serveHTTP()}
	lb := newStickyProxy(t, replicas[0].base, replicas[1].base)
	sessions := make([]*serveProc, calls)
	replicaOf := make([]int, calls) // the replica session i is on
	for i := range sessions {
		c := tokenClient(t, lb.URL+"/mcp", token)
		sessions[i] = &serveProc{e: e, c: c}
		replicaOf[i] = lb.backendOf(t, c.GetSessionId())
	}
	if got := lb.sessionsPer(); got[0] != calls/2 || got[1] != calls/2 {
		t.Fatalf("the proxy spread %d sessions as %v, want %d on each replica", calls, got, calls/2)
	}
	onReplica := [2]int{-1, -1} // a session on each replica
	for i, r := range replicaOf {
		onReplica[r] = i
	}

	type outcome struct {
		i   int
		v   tools.OperationView
		err error
	}
	results := make(chan outcome, calls)
	start := make(chan struct{})
	domainOf := func(i int) string { return fmt.Sprintf("http-replica-%d.dev", i) }
	for i, s := range sessions {
		go func() {
			<-start
			v, err := s.call("register_domain", map[string]any{"domain": domainOf(i), "reason": reason})
			results <- outcome{i, v, err}
		}()
	}
	close(start)
	for range calls - 2 {
		select {
		case r := <-results:
			if r.err != nil {
				t.Fatalf("call %d: %v", r.i, r.err)
			}
			if r.v.Status != "denied" || !strings.Contains(r.v.Error, "budget team:web") {
				t.Fatalf("call %d answered %s (%s) before any approval; want denied by the team budget", r.i, r.v.Status, r.v.Error)
			}
		case <-time.After(2 * time.Minute): // a hang guard only
			t.Fatal("the refusals did not all arrive")
		}
	}
	waiting := e.awaitingApproval("two operations awaiting approval", 2)

	// The CLI with nothing but --db lists both, whichever replica holds them.
	reqIDs := map[string]string{}
	for _, op := range waiting {
		reqIDs[op.ID] = e.requestID(op.ID)
	}
	out, err = e.plainCLI("approvals", "list", "--json")
	var listed []approvals.Request
	if err != nil || json.Unmarshal([]byte(out), &listed) != nil {
		t.Fatalf("approvals list --db URL: %v\n%s", err, out)
	}
	for _, op := range waiting {
		found := false
		for _, r := range listed {
			found = found || (r.ID == reqIDs[op.ID] && r.OperationID == op.ID)
		}
		if !found {
			t.Fatalf("approvals list --db URL lacks %s for %s:\n%s", reqIDs[op.ID], op.ID, out)
		}
	}

	// Each waiting call is approved in Slack, the click reaching the other
	// replica; get_operation answers from both replicas meanwhile.
	holderOf := func(op ledger.Operation) int {
		for i := range calls {
			if strings.Contains(op.Resource, domainOf(i)) {
				return replicaOf[i]
			}
		}
		t.Fatalf("operation %s on %q is none of the calls'", op.ID, op.Resource)
		return -1
	}
	for _, op := range waiting {
		holder := holderOf(op)
		for r := range replicas {
			v := sessions[onReplica[r]].callTool("get_operation", map[string]any{"operation_id": op.ID})
			if v.OperationID != op.ID || v.Status != string(ledger.StateAwaitingApproval) {
				t.Fatalf("get_operation %s on replica %d: %+v; want it awaiting approval", op.ID, r, v)
			}
		}
		reqID := reqIDs[op.ID]
		ts := slackAPI.waitPost(t, reqID)
		other := replicas[1-holder]
		if st, body := other.slackClick(t, secret, slackApproveClick(slackUser, reqID, ts)); st != http.StatusOK {
			t.Fatalf("approve click for %s on replica %d: %d %s", reqID, 1-holder, st, body)
		}
	}
	for range 2 {
		select {
		case r := <-results:
			if r.err != nil || r.v.Status != "succeeded" || r.v.Charged == nil || r.v.Charged.Micros != price {
				t.Fatalf("call %d (replica %d): the waiting call ended %+v, %v; want succeeded once Slack approved on the other replica", r.i, replicaOf[r.i], r.v, r.err)
			}
			// Either replica reads the finished operation.
			for s := range replicas {
				if v := sessions[onReplica[s]].callTool("get_operation", map[string]any{"operation_id": r.v.OperationID}); v.Status != "succeeded" {
					t.Fatalf("get_operation %s on replica %d: %s, want succeeded", r.v.OperationID, s, v.Status)
				}
			}
		case <-time.After(2 * time.Minute): // a hang guard only
			t.Fatal("a call waiting in one replica was not resumed by the Slack click on the other")
		}
	}
	if spent, held := e.teamSpend(); spent != 2*price || held != 0 {
		t.Fatalf("spent %d held %d, want exactly two registrations' %d", spent, held, 2*price)
	}
	if n := len(e.sandboxState().Registrations()); n != 2 {
		t.Fatalf("%d registrations at the sandbox, want 2", n)
	}
	for _, id := range reqIDs {
		if n := len(slackAPI.posts(id)); n != 1 {
			t.Errorf("%d approval messages posted to Slack for %s, want one (by the replica holding the call)", n, id)
		}
	}
	// Alerts come from the replica that saw the condition, once: one per
	// refused call (from the replica it was on), none from starting two
	// replicas (their start-up checks, the quorum one included, only log).
	alerts := slackAPI.alerts()
	for _, a := range alerts {
		if !strings.HasPrefix(a, ":no_entry: Blocked register_domain for agent http-bot") {
			t.Errorf("unexpected Slack alert: %q", a)
		}
	}
	if len(alerts) != calls-2 {
		t.Errorf("%d Slack alerts, want one per refused call (%d): %q", len(alerts), calls-2, alerts)
	}
	for _, r := range replicas {
		r.stop()
	}
	e.checkLedgerMatchesSandbox()
}

// httpReplica is one `tollgate serve --transport http --auth tokens` child
// on its own loopback port.
type httpReplica struct {
	base string // http://127.0.0.1:PORT
	pid  int
	stop func() // SIGTERM, then a clean exit is required; idempotent
	kill func() // SIGKILL: no shutdown code runs; stop is then a no-op
}

// listenRE finds the bound address in serve's connect help.
var listenRE = regexp.MustCompile(`streamable HTTP\s+(http://127\.0\.0\.1:\d+)/mcp`)

// serveHTTP starts a replica on a free loopback port, with extra flags, and
// reads its address from the connect help in its log. At cleanup it is sent
// SIGTERM and must exit cleanly (unless it was killed).
func (e *crashEnv) serveHTTP(flags ...string) *httpReplica {
	t := e.t
	t.Helper()
	e.mu.Lock()
	e.serves++
	name := fmt.Sprintf("serve-http-%d", e.serves)
	e.mu.Unlock()
	cmd, logf := e.child(name, append([]string{"serve", "--transport", "http", "--listen", "127.0.0.1:0", "--auth", "tokens"}, flags...)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	var killed atomic.Bool
	stop := sync.OnceFunc(func() {
		if killed.Load() {
			return
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-waited:
			if err != nil {
				t.Errorf("%s did not exit cleanly on SIGTERM: %v", name, err)
			}
		case <-time.After(2 * time.Minute): // a hang guard only
			_ = cmd.Process.Kill()
			t.Errorf("%s ignored SIGTERM", name)
		}
		_ = logf.Close()
	})
	t.Cleanup(stop)
	kill := func() {
		killed.Store(true)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatalf("kill %s: %v", name, err)
		}
		select {
		case <-waited: // reaped: its connections are closed
		case <-time.After(2 * time.Minute): // a hang guard only
			t.Fatalf("%s survived SIGKILL", name)
		}
		_ = logf.Close()
	}
	deadline := time.Now().Add(2 * time.Minute) // a hang guard only
	for {
		b, _ := os.ReadFile(filepath.Join(e.dir, name+".log"))
		if m := listenRE.FindSubmatch(b); m != nil {
			return &httpReplica{base: string(m[1]), pid: cmd.Process.Pid, stop: stop, kill: kill}
		}
		select {
		case err := <-waited:
			t.Fatalf("%s exited before listening: %v", name, err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s printed no listen address", name)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// slackClick posts a Slack interaction to the replica as Slack does: the
// form-encoded payload, signed (v0) with the app's signing secret over the
// timestamp and the raw body.
func (r *httpReplica) slackClick(t *testing.T, secret string, payload any) (int, string) {
	t.Helper()
	js, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	body := url.Values{"payload": {string(js)}}.Encode()
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte("v0:" + ts + ":" + body))
	req, err := http.NewRequest(http.MethodPost, r.base+"/slack/interactions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Slack-Request-Timestamp", ts)
	req.Header.Set("X-Slack-Signature", "v0="+hex.EncodeToString(mac.Sum(nil)))
	c := &http.Client{Timeout: 60 * time.Second} // a hang guard only
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// slackApproveClick is the block_actions payload of a click on Approve in
// the approval message posted at ts.
func slackApproveClick(userID, requestID, ts string) map[string]any {
	user := map[string]any{"id": userID, "username": strings.ToLower(userID), "name": strings.ToLower(userID), "team_id": "T0TOLLGATE"}
	return map[string]any{
		"type":       "block_actions",
		"user":       user,
		"api_app_id": "A0TOLLGATE",
		"token":      "verification-token-unused",
		"container":  map[string]any{"type": "message", "message_ts": ts, "channel_id": "C0APPROVALS", "is_ephemeral": false},
		"trigger_id": "13345224609.738474920." + strconv.FormatInt(time.Now().UnixNano(), 10),
		"team":       map[string]any{"id": "T0TOLLGATE", "domain": "tollgate"},
		"channel":    map[string]any{"id": "C0APPROVALS", "name": "approvals"},
		"message":    map[string]any{"type": "message", "user": "U0BOT", "ts": ts, "bot_id": "B0BOT", "text": "Approval needed"},
		"state":      map[string]any{"values": map[string]any{}},
		"actions": []any{map[string]any{
			"action_id": slackchan.ActionIDApprove,
			"block_id":  slackchan.BlockActions,
			"text":      map[string]any{"type": "plain_text", "text": "Approve", "emoji": true},
			"value":     requestID,
			"type":      "button",
			"action_ts": strconv.FormatInt(time.Now().Unix(), 10) + ".000001",
		}},
		"response_url": "https://hooks.slack.com/actions/T0TOLLGATE/1/abc",
	}
}

// replicaSlack is the Slack Web API both replicas call (slacktest, with
// handlers recording the methods tollgate uses).
type replicaSlack struct {
	mu    sync.Mutex
	calls []map[string]string // form fields, "method" added
	ts    atomic.Int64
}

func (s *replicaSlack) bind(c slacktest.Customize) {
	for _, m := range []string{"chat.postMessage", "chat.update", "chat.postEphemeral"} {
		c.Handle("/"+m, func(w http.ResponseWriter, r *http.Request) {
			_ = r.ParseForm()
			f := map[string]string{"method": m}
			for k := range r.PostForm {
				f[k] = r.PostForm.Get(k)
			}
			if m == "chat.postMessage" {
				f["reply_ts"] = fmt.Sprintf("1790000000.%06d", s.ts.Add(1))
			}
			s.mu.Lock()
			s.calls = append(s.calls, f)
			s.mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			switch m {
			case "chat.postMessage":
				_ = json.NewEncoder(w).Encode(map[string]any{"ok": true, "channel": f["channel"], "ts": f["reply_ts"]})
			case "chat.update":
				_ = json.NewEncoder(w).Encode(map[string]any{"ok": true, "channel": f["channel"], "ts": f["ts"]})
			default:
				_ = json.NewEncoder(w).Encode(map[string]any{"ok": true, "message_ts": "1790000000.999999"})
			}
		})
	}
}

// posts are the approval messages posted for requestID (alerts, such as a
// quorum that cannot be met, are posted too, without blocks).
func (s *replicaSlack) posts(requestID string) []map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]string
	for _, c := range s.calls {
		if c["method"] == "chat.postMessage" && strings.Contains(c["blocks"], requestID) {
			out = append(out, c)
		}
	}
	return out
}

// alerts are the texts of the plain messages posted (alerts carry no blocks).
func (s *replicaSlack) alerts() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, c := range s.calls {
		if c["method"] == "chat.postMessage" && c["blocks"] == "" {
			out = append(out, c["text"])
		}
	}
	return out
}

// waitPost waits for the approval message naming requestID and returns the
// ts Slack gave it.
func (s *replicaSlack) waitPost(t *testing.T, requestID string) string {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute) // a hang guard only
	for {
		if p := s.posts(requestID); len(p) > 0 {
			return p[0]["reply_ts"]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no approval message for %s posted to Slack", requestID)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stickyProxy is a load balancer in front of the replicas: a request
// without Mcp-Session-Id (an initialize) goes to the next replica in turn,
// and every request of a session to the replica that created it.
type stickyProxy struct {
	*httptest.Server
	backends []*url.URL
	next     atomic.Int64
	mu       sync.Mutex
	sessions map[string]int
}

func newStickyProxy(t *testing.T, bases ...string) *stickyProxy {
	t.Helper()
	p := &stickyProxy{sessions: map[string]int{}}
	for _, b := range bases {
		u, err := url.Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		p.backends = append(p.backends, u)
	}
	p.Server = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.Close)
	return p
}

func (p *stickyProxy) serve(w http.ResponseWriter, r *http.Request) {
	i := -1
	if id := r.Header.Get("Mcp-Session-Id"); id != "" {
		p.mu.Lock()
		if b, ok := p.sessions[id]; ok {
			i = b
		}
		p.mu.Unlock()
	}
	if i < 0 {
		i = int(p.next.Add(1)-1) % len(p.backends)
	}
	rp := &httputil.ReverseProxy{
		Rewrite:       func(pr *httputil.ProxyRequest) { pr.SetURL(p.backends[i]) },
		FlushInterval: -1, // SSE streams through as it comes
		ModifyResponse: func(resp *http.Response) error {
			if id := resp.Header.Get("Mcp-Session-Id"); id != "" {
				p.mu.Lock()
				p.sessions[id] = i
				p.mu.Unlock()
			}
			return nil
		},
	}
	rp.ServeHTTP(w, r)
}

// backendOf is the replica holding an MCP session.
func (p *stickyProxy) backendOf(t *testing.T, sessionID string) int {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	b, ok := p.sessions[sessionID]
	if !ok {
		t.Fatalf("the proxy saw no session %q", sessionID)
	}
	return b
}

// sessionsPer is how many MCP sessions each replica holds.
func (p *stickyProxy) sessionsPer() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]int, len(p.backends))
	for _, b := range p.sessions {
		out[b]++
	}
	return out
}

// tokenClient is an initialised streamable HTTP MCP client presenting an
// agent token.
func tokenClient(t *testing.T, endpoint, token string) *client.Client {
	t.Helper()
	c, err := client.NewStreamableHttpClient(endpoint,
		transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + token}),
		transport.WithHTTPTimeout(3*time.Minute)) // a hang guard only: calls wait for a human
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = mcp.LATEST_LEGACY_PROTOCOL_VERSION
	init.Params.ClientInfo = mcp.Implementation{Name: "tollgate-replica-test", Version: "1"}
	if _, err := c.Initialize(ctx, init); err != nil {
		t.Fatal(err)
	}
	return c
}
