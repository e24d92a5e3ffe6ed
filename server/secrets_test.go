package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/tollgatehq/tollgate/cloudflare/sandbox"
	"github.com/tollgatehq/tollgate/ledger"
)

// tokenCapture sits in front of the sandbox, on the server side of the
// Cloudflare API, and collects every token value that crosses it: each one
// the sandbox mints (from the create-token response) and each one presented
// as a bearer credential.
type tokenCapture struct {
	mu     sync.Mutex
	minted map[string]bool
	bearer map[string]bool
}

func newTokenCapture() *tokenCapture {
	return &tokenCapture{minted: map[string]bool{}, bearer: map[string]bool{}}
}

func (c *tokenCapture) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && tok != "" {
			c.mu.Lock()
			c.bearer[tok] = true
			c.mu.Unlock()
		}
		if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/tokens") {
			next.ServeHTTP(w, r)
			return
		}
		tee := &teeWriter{ResponseWriter: w}
		next.ServeHTTP(tee, r)
		var env struct {
			Result struct {
				Value string `json:"value"`
			} `json:"result"`
		}
		if json.Unmarshal(tee.buf.Bytes(), &env) == nil && env.Result.Value != "" {
			c.mu.Lock()
			c.minted[env.Result.Value] = true
			c.mu.Unlock()
		}
	})
}

// values returns the minted and the presented tokens.
func (c *tokenCapture) values() (minted, presented []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for v := range c.minted {
		minted = append(minted, v)
	}
	for v := range c.bearer {
		presented = append(presented, v)
	}
	return minted, presented
}

type teeWriter struct {
	http.ResponseWriter
	buf bytes.Buffer
}

func (t *teeWriter) Write(b []byte) (int, error) {
	t.buf.Write(b)
	return t.ResponseWriter.Write(b)
}

// bearerClient is an mcp-go streamable HTTP client presenting an agent token.
func bearerClient(t *testing.T, baseURL, token string) *client.Client {
	t.Helper()
	c, err := client.NewStreamableHttpClient(baseURL+"/mcp",
		transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + token}),
		transport.WithHTTPTimeout(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = mcp.LATEST_LEGACY_PROTOCOL_VERSION
	init.Params.ClientInfo = mcp.Implementation{Name: "secrets-scan", Version: "1"}
	if _, err := c.Initialize(context.Background(), init); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestNoSecretReachesLogsAuditResultsOrSlack runs a full flow (a
// registration approved in Slack, a deploy, a failed deploy, a policy
// denial, agent bearer tokens over streamable HTTP, a bad token) and scans
// everything tollgate wrote or said for every secret it handled.
func TestNoSecretReachesLogsAuditResultsOrSlack(t *testing.T) {
	t.Parallel()
	caps := newTokenCapture()
	e, sl := newSlackEnv(t, withSandboxHandler(caps.wrap), withConfig(func(c *Config) {
		c.Approvals.Wait = 0
		c.Auth = "tokens"
	}))
	ctx := context.Background()
	var said []string // every tool result, as text and structured content
	keep := func(res *mcp.CallToolResult) *mcp.CallToolResult {
		t.Helper()
		said = append(said, text(res))
		if res.StructuredContent != nil {
			b, err := json.Marshal(res.StructuredContent)
			if err != nil {
				t.Fatal(err)
			}
			said = append(said, string(b))
		}
		return res
	}

	// Agent credentials for the HTTP transport: one created, one rotated in.
	tok1, err := e.db.CreateAgent(ctx, ledger.Agent{Name: "http-bot", Team: "web", Owner: "erin", Roles: []string{"agent", "deployer"}}, 24*time.Hour, "cli:erin")
	if err != nil {
		t.Fatal(err)
	}
	tok2, err := e.db.RotateAgentToken(ctx, "http-bot", 24*time.Hour, time.Hour, "cli:erin")
	if err != nil {
		t.Fatal(err)
	}

	// 1. A registration over HTTP with the old token (still in its overlap),
	// approved by a signed Slack click.
	c1 := bearerClient(t, sl.url, tok1)
	res, err := callTool(ctx, c1, "register_domain", registerArgs("quiet-secrets.dev"))
	if err != nil {
		t.Fatal(err)
	}
	v := opView(t, keep(res))
	if v.Status != "awaiting_approval" {
		t.Fatalf("register: %+v", v)
	}
	r := e.pendingApproval(v.OperationID)
	sl.rec.waitPost(t, r.ID)
	sl.approve(t, "U0BOB", r.ID)
	e.waitState(v.OperationID, ledger.StateSucceeded)
	sl.rec.waitUpdate(t, "Registered quiet-secrets.dev")

	// 2. A deploy with the new token, then reading everything back.
	c2 := bearerClient(t, sl.url, tok2)
	res, err = callTool(ctx, c2, "deploy_worker", map[string]any{
		"script_name": "web-quiet", "module": okModule, "compatibility_date": "2025-01-01", "environment": "preview", "reason": reason,
	})
	if err != nil {
		t.Fatal(err)
	}
	if dv := opView(t, keep(res)); dv.Status != "succeeded" {
		t.Fatalf("deploy: %+v", dv)
	}
	for _, tool := range []struct {
		name string
		args map[string]any
	}{
		{"get_operation", map[string]any{"operation_id": v.OperationID}},
		{"list_operations", map[string]any{}},
		{"spend_status", map[string]any{}},
		{"check_domain", map[string]any{"domain": "quiet-secrets.dev"}},
		{"estimate_cost", map[string]any{"action": "register_domain", "params": map[string]any{"domain": "another-quiet.dev"}}},
	} {
		res, err := callTool(ctx, c2, tool.name, tool.args)
		if err != nil {
			t.Fatalf("%s: %v", tool.name, err)
		}
		keep(res)
	}

	// 3. A deploy that fails at Cloudflare (the upload answers 500), is
	// reconciled, and ends failed; and a call the policy refuses.
	e.sb.SetFaults(sandbox.Faults{ErrorRate: 1, PathContains: "/workers/scripts/", Method: http.MethodPut})
	res = keep(e.call(webBot, "deploy_worker", map[string]any{
		"script_name": "web-broken", "module": okModule, "compatibility_date": "2025-01-01", "environment": "preview", "reason": reason,
	}))
	failed := e.waitState(opView(t, res).OperationID, ledger.StateFailed)
	e.sb.SetFaults(sandbox.Faults{})
	keep(e.call(webBot, "get_operation", map[string]any{"operation_id": failed.ID}))
	keep(e.call(webBot, "register_domain", registerArgs("not-allowed.xyz")))

	// 4. A forged agent token is refused without being echoed.
	var raw [32]byte
	_, _ = rand.Read(raw[:])
	forged := "tg_" + base64.RawURLEncoding.EncodeToString(raw[:])
	req, _ := http.NewRequest(http.MethodPost, sl.url+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
	req.Header.Set("Authorization", "Bearer "+forged)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("forged token: %d", resp.StatusCode)
	}
	said = append(said, string(body), resp.Header.Get("WWW-Authenticate"))

	// Let background work (token revocation, Slack updates) settle.
	waitNoLiveOperationTokens(t, e)

	// The secrets.
	minted, presented := caps.values()
	if len(minted) < 4 {
		t.Fatalf("only %d minted tokens captured; the scan would prove little", len(minted))
	}
	secrets := map[string]string{
		"sandbox parent token": e.sb.ParentToken(),
		"Slack bot token":      "xoxb-test-token",
		"Slack signing secret": e.secret,
		"agent token":          tok1,
		"rotated agent token":  tok2,
		"forged agent token":   forged,
	}
	for i, v := range minted {
		secrets[fmt.Sprintf("minted Cloudflare token %d", i+1)] = v
	}
	parentSeen := false
	for i, v := range presented {
		if v == e.sb.ParentToken() {
			parentSeen = true
			continue
		}
		secrets[fmt.Sprintf("Cloudflare bearer token %d", i+1)] = v
	}
	if !parentSeen {
		t.Error("the capture never saw the parent token; it is not in front of the sandbox")
	}

	// The haystacks.
	hay := map[string]string{"logs": e.logs.String(), "tool results": strings.Join(said, "\n")}
	var audit strings.Builder
	rows := 0
	if err := e.db.Events(ctx, ledger.EventQuery{}, func(ev ledger.Event) error {
		rows++
		audit.WriteString(ev.Type + " " + ev.Actor + " " + ev.OperationID + " " + string(ev.Data) + "\n")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	hay["audit rows"] = audit.String()
	var slackText strings.Builder
	for _, c := range sl.rec.all() {
		if c.TokenInBody != "" && c.TokenInBody != "xoxb-test-token" {
			t.Errorf("%s carried token %q", c.Method, c.TokenInBody)
		}
		for k, v := range c.Fields {
			slackText.WriteString(c.Method + " " + k + "=" + v + "\n")
		}
	}
	hay["Slack messages"] = slackText.String()
	// Everything persisted: the SQLite file and its WAL, bytes as stored.
	var stored []byte
	for _, suffix := range []string{"", "-wal"} {
		b, err := os.ReadFile(e.cfg.DB + suffix)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		stored = append(stored, b...)
	}
	hay["database file"] = string(stored)

	if rows < 50 || len(said) < 10 || len(sl.rec.all()) < 3 || !strings.Contains(hay["logs"], "approval posted") {
		t.Fatalf("the flow left too little to scan: %d audit rows, %d results, %d Slack calls", rows, len(said), len(sl.rec.all()))
	}
	for what, secret := range secrets {
		if len(secret) < 12 {
			t.Fatalf("%s %q is too short to scan for", what, secret)
		}
		tail := secret[len(secret)-12:] // a partial leak counts too
		for where, h := range hay {
			if strings.Contains(h, secret) || strings.Contains(h, tail) {
				t.Errorf("%s appears in the %s", what, where)
			}
		}
	}
}

// waitNoLiveOperationTokens waits until every token tollgate minted is
// deleted again (revocation runs after each execution).
func waitNoLiveOperationTokens(t *testing.T, e *testEnv) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for {
		live := len(operationTokens(e))
		if live == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d minted tokens still alive", live)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
