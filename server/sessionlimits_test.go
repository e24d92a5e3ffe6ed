package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tollgatehq/tollgate/approvals"
)

// slInit opens a streamable session and returns its id ("" and the status
// when refused).
func slInit(t *testing.T, base, authorization string) (string, int, string) {
	t.Helper()
	resp := trPost(t, base+"/mcp", authorization, "", trInitBody)
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 8192))
	if resp.StatusCode != http.StatusOK {
		return "", resp.StatusCode, string(b)
	}
	ssDo(t, http.MethodPost, base+"/mcp", authorization, resp.Header.Get("Mcp-Session-Id"), `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	return resp.Header.Get("Mcp-Session-Id"), resp.StatusCode, string(b)
}

// TestSessionCapPerAgent: an agent holds at most http.max_sessions_per_agent
// sessions (streamable and SSE together); one more is a 429 naming the cap
// and the idle expiry; another agent is not affected; ending one frees a slot.
func TestSessionCapPerAgent(t *testing.T) {
	t.Parallel()
	const max = 3
	e, base, tokA, tokB := ssTwoAgents(t, withConfig(func(c *Config) { c.HTTP.MaxSessionsPerAgent = max }))
	var ids []string
	for range max - 1 {
		id, code, body := slInit(t, base, tokA)
		if id == "" {
			t.Fatalf("A's session %d: %d %s", len(ids)+1, code, body)
		}
		ids = append(ids, id)
	}
	resp, endpoint, cancel := trOpenSSE(t, base, tokA)
	defer cancel()
	defer resp.Body.Close()
	if endpoint == "" {
		t.Fatalf("A's SSE session (the third): %s", resp.Status)
	}
	if n := e.srv.sessions.openCount(webBot); n != max {
		t.Fatalf("A holds %d sessions, want %d", n, max)
	}
	if _, code, body := slInit(t, base, tokA); code != http.StatusTooManyRequests ||
		!strings.Contains(body, fmt.Sprintf("%d MCP sessions", max)) || !strings.Contains(body, "session_idle_timeout") || !strings.Contains(body, "max_sessions_per_agent") {
		t.Fatalf("A's session over the cap: %d %s", code, body)
	}
	sseResp, _, sseCancel := trOpenSSE(t, base, tokA)
	sseCancel()
	if sseResp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("A's SSE stream over the cap: %s", sseResp.Status)
	}
	_ = sseResp.Body.Close()
	// A GET /mcp without a session would mint one for its stream.
	get, _ := http.NewRequest(http.MethodGet, base+"/mcp", nil)
	get.Header.Set("Accept", "text/event-stream")
	get.Header.Set("Authorization", tokA)
	get.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	getResp, err := http.DefaultClient.Do(get)
	if err != nil {
		t.Fatal(err)
	}
	_ = getResp.Body.Close()
	if getResp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("A's session-less GET /mcp over the cap: %s", getResp.Status)
	}
	if n := e.srv.sessions.openCount(webBot); n != max {
		t.Fatalf("after three refusals A holds %d sessions, want %d", n, max)
	}
	// A's existing sessions still work; B is not capped by A's sessions.
	if code, body := ssDo(t, http.MethodPost, base+"/mcp", tokA, ids[0], `{"jsonrpc":"2.0","id":7,"method":"ping"}`); code != http.StatusOK {
		t.Fatalf("A's ping in an open session: %d %s", code, body)
	}
	if id, code, body := slInit(t, base, tokB); id == "" {
		t.Fatalf("B's first session: %d %s", code, body)
	}
	// Ending one (DELETE) frees a slot; a refused initialize held none.
	if code, body := ssDo(t, http.MethodDelete, base+"/mcp", tokA, ids[0], ""); code != http.StatusOK {
		t.Fatalf("DELETE: %d %s", code, body)
	}
	if n := e.srv.sessions.openCount(webBot); n != max-1 {
		t.Fatalf("after a DELETE A holds %d sessions, want %d", n, max-1)
	}
	if id, code, body := slInit(t, base, tokA); id == "" {
		t.Fatalf("A's session after a DELETE: %d %s", code, body)
	}
	// Closing the SSE stream frees its slot too.
	cancel()
	deadline := time.Now().Add(hangGuard)
	for e.srv.sessions.openCount(webBot) != max-1 {
		if time.Now().After(deadline) {
			t.Fatalf("A holds %d sessions after closing its SSE stream, want %d", e.srv.sessions.openCount(webBot), max-1)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestIdleSessionsExpire: a streamable session unused for
// http.session_idle_timeout ends (404 after), but never one with a request
// in flight or an open GET stream; an expired session frees its slot.
func TestIdleSessionsExpire(t *testing.T) {
	t.Parallel()
	e, base, tokA, _ := ssTwoAgents(t, withConfig(func(c *Config) {
		c.HTTP.SessionIdleTimeout = time.Hour // the sweeper never fires; the test moves the clock
		c.Approvals.Wait = 0
	}))
	idle, _, _ := slInit(t, base, tokA)
	streaming, _, _ := slInit(t, base, tokA)
	calling, _, _ := slInit(t, base, tokA)
	if idle == "" || streaming == "" || calling == "" {
		t.Fatal("sessions not opened")
	}
	// streaming: an open GET stream.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/mcp", nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", tokA)
	req.Header.Set("Mcp-Session-Id", streaming)
	req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	stream, err := http.DefaultClient.Do(req)
	if err != nil || stream.StatusCode != http.StatusOK {
		t.Fatalf("GET stream: %v %v", stream, err)
	}
	defer stream.Body.Close()
	// calling: a get_operation waiting (up to 50 s) on an approval.
	_, body := ssDo(t, http.MethodPost, base+"/mcp", tokA, idle, fmt.Sprintf(
		`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"register_domain","arguments":{"domain":"idle-sessions.dev","reason":%q}}}`, reason))
	_, opID, _ := strings.Cut(body, `"operation_id":"`)
	opID, _, _ = strings.Cut(opID, `"`)
	if !strings.HasPrefix(opID, "op_") {
		t.Fatalf("register_domain: %s", body)
	}
	r := e.pendingApproval(opID)
	waited := make(chan string, 1)
	go func() {
		_, b := ssDo(t, http.MethodPost, base+"/mcp", tokA, calling,
			fmt.Sprintf(`{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"get_operation","arguments":{"operation_id":%q,"wait_seconds":50}}}`, opID))
		waited <- b
	}()
	deadline := time.Now().Add(hangGuard)
	for !slBusy(e, calling) {
		if time.Now().After(deadline) {
			t.Fatal("get_operation never in flight")
		}
		time.Sleep(10 * time.Millisecond)
	}

	if n := e.srv.expireIdleSessions(time.Now().Add(2 * time.Hour)); n != 1 {
		t.Fatalf("ended %d idle sessions, want 1 (the one with nothing in flight)", n)
	}
	if code, body := ssDo(t, http.MethodPost, base+"/mcp", tokA, idle, `{"jsonrpc":"2.0","id":5,"method":"ping"}`); code != http.StatusNotFound {
		t.Fatalf("the expired session answered %d %s, want 404", code, body)
	}
	if n := e.srv.sessions.openCount(webBot); n != 2 {
		t.Fatalf("A holds %d sessions after one expired, want 2", n)
	}
	if code, body := ssDo(t, http.MethodPost, base+"/mcp", tokA, streaming, `{"jsonrpc":"2.0","id":6,"method":"ping"}`); code != http.StatusOK {
		t.Fatalf("the session with an open GET stream: %d %s", code, body)
	}
	// The call in flight ends normally once decided.
	if _, err := e.srv.Approvals().Decide(context.Background(), approvals.VoteInput{RequestID: r.ID, Approver: "bob", Via: approvals.ViaCLI, Outcome: approvals.OutcomeDeny, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-waited:
		if !strings.Contains(b, "denied") {
			t.Fatalf("get_operation in the busy session: %s", b)
		}
	case <-time.After(hangGuard):
		t.Fatal("get_operation never answered")
	}
	if code, body := ssDo(t, http.MethodPost, base+"/mcp", tokA, calling, `{"jsonrpc":"2.0","id":8,"method":"ping"}`); code != http.StatusOK {
		t.Fatalf("the session that had a call in flight: %d %s", code, body)
	}
	// Once the stream closes and nothing is in flight, both expire too.
	cancel()
	_ = stream.Body.Close()
	deadline = time.Now().Add(hangGuard)
	for slBusy(e, streaming) {
		if time.Now().After(deadline) {
			t.Fatal("the GET stream never ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := e.srv.expireIdleSessions(time.Now().Add(2 * time.Hour)); n != 2 {
		t.Fatalf("ended %d sessions, want the 2 now idle", n)
	}
	if n := e.srv.sessions.openCount(webBot); n != 0 {
		t.Fatalf("A holds %d sessions, want 0", n)
	}
}

// slBusy reports whether a session has a request or stream in it.
func slBusy(e *testEnv, id string) bool {
	e.srv.sessions.mu.Lock()
	defer e.srv.sessions.mu.Unlock()
	s, ok := e.srv.sessions.byID[id]
	return ok && s.busy > 0
}
