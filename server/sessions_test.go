package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/ledger"
)

// Attacks on MCP session ownership over HTTP (issue 9): a session id is not
// a secret, so agent B knowing agent A's must not let B drive, watch, end or
// cancel anything in it.

// ssTwoAgents serves an env with token auth and returns the tokens of A
// (web-bot, the victim) and B (ops-bot, the attacker).
func ssTwoAgents(t *testing.T, opts ...envOption) (e *testEnv, base, tokA, tokB string) {
	t.Helper()
	opts = append([]envOption{withConfig(func(c *Config) { c.Auth = "tokens" })}, opts...)
	e = newEnv(t, opts...)
	ctx := context.Background()
	var err error
	if tokA, err = e.db.CreateAgent(ctx, ledger.Agent{Name: webBot, Team: "web", Roles: []string{"agent", "deployer"}, Owner: "alice"}, time.Hour, "test"); err != nil {
		t.Fatal(err)
	}
	if tokB, err = e.db.CreateAgent(ctx, ledger.Agent{Name: opsBot, Team: "ops", Roles: []string{"agent"}, Owner: "erin"}, time.Hour, "test"); err != nil {
		t.Fatal(err)
	}
	return e, trServeHTTP(t, e), "Bearer " + tokA, "Bearer " + tokB
}

// ssStream collects the data lines of an SSE stream as they arrive.
type ssStream struct {
	mu    sync.Mutex
	lines []string
	done  chan struct{}
}

func ssCollect(body io.Reader) *ssStream {
	s := &ssStream{done: make(chan struct{})}
	go func() {
		defer close(s.done)
		sc := bufio.NewScanner(body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				s.mu.Lock()
				s.lines = append(s.lines, v)
				s.mu.Unlock()
			}
		}
	}()
	return s
}

// waitFor waits until a message with this JSON-RPC id arrived and returns it.
func (s *ssStream) waitFor(t *testing.T, id int) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if m, ok := s.find(id); ok {
			return m
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no message with id %d on the stream; got %v", id, s.all())
	return ""
}

func (s *ssStream) find(id int) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.lines {
		var m struct {
			ID json.RawMessage `json:"id"`
		}
		if json.Unmarshal([]byte(l), &m) == nil && string(m.ID) == fmt.Sprint(id) {
			return l, true
		}
	}
	return "", false
}

func (s *ssStream) all() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lines...)
}

// ssModern, as ssDo's session, sends a session-less 2026-07-28 request.
const ssModern = "(modern)"

// ssDo sends one request and returns its status and (bounded) body.
func ssDo(t *testing.T, method, url, authorization, sessionID, body string) (int, string) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	switch {
	case sessionID == ssModern:
		// Protocol 2026-07-28: no session; the version in header and body.
		req.Header.Set("Mcp-Protocol-Version", "2026-07-28")
	case sessionID != "":
		req.Header.Set("Mcp-Session-Id", sessionID)
		req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 8192))
	return resp.StatusCode, string(b)
}

// ssRefusals returns the session.refused audit events as (agent, owner) pairs.
func ssRefusals(t *testing.T, e *testEnv) [][2]string {
	t.Helper()
	var out [][2]string
	err := e.db.Events(context.Background(), ledger.EventQuery{Types: []string{"session.refused"}}, func(ev ledger.Event) error {
		var d struct{ Agent, Owner string }
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			return err
		}
		if ev.Actor != d.Agent {
			t.Errorf("session.refused actor %q, data agent %q: the actor is the caller", ev.Actor, d.Agent)
		}
		out = append(out, [2]string{d.Agent, d.Owner})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// ssRequireRefusals checks that n refusals were audited, each naming B as the
// caller and A as the owner.
func ssRequireRefusals(t *testing.T, e *testEnv, n int) {
	t.Helper()
	got := ssRefusals(t, e)
	if len(got) != n {
		t.Fatalf("%d session.refused audit events, want %d: %v", len(got), n, got)
	}
	for _, g := range got {
		if g != [2]string{opsBot, webBot} {
			t.Errorf("session.refused names %v, want caller %s and owner %s", g, opsBot, webBot)
		}
	}
}

// ssRequireNoLeak checks that a refusal tells the caller nothing about the owner.
func ssRequireNoLeak(t *testing.T, what, body string) {
	t.Helper()
	if strings.Contains(body, webBot) || strings.Contains(body, "alice") {
		t.Errorf("%s: the refusal names the session's owner: %s", what, body)
	}
}

// TestAttackSSESessionDrivenByAnotherAgent is issue 9's attack: B posts to
// A's /message?sessionId=S_A with a made-up Mcp-Session-Id header beside it.
// Before the fix the header was checked (unknown, so "fine") and mcp-go
// routed by the query: B's call ran in A's session and answered on A's
// stream.
func TestAttackSSESessionDrivenByAnotherAgent(t *testing.T) {
	t.Parallel()
	e, base, tokA, tokB := ssTwoAgents(t)
	resp, endpoint, cancel := trOpenSSE(t, base, tokA)
	defer cancel()
	defer resp.Body.Close()
	if endpoint == "" {
		t.Fatalf("A's SSE stream: %s", resp.Status)
	}
	stream := ssCollect(resp.Body)
	if code, body := ssDo(t, http.MethodPost, base+endpoint, tokA, "", trInitBody); code != http.StatusAccepted {
		t.Fatalf("A's initialize: %d %s", code, body)
	}
	stream.waitFor(t, 1)
	ssDo(t, http.MethodPost, base+endpoint, tokA, "", `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	received := trCountEvents(t, e, "call.received")

	const hijack = `{"jsonrpc":"2.0","id":666,"method":"tools/call","params":{"name":"check_domain","arguments":{"domain":"hijacked.dev"}}}`
	cases := []struct {
		name, url, header string
		want              int
	}{
		{"the attack: A's query, a made-up header", base + endpoint, "mcp-session-00000000000000000000000000000000", http.StatusForbidden},
		{"A's query alone", base + endpoint, "", http.StatusForbidden},
		{"A's query, A's id in the header too", base + endpoint, strings.TrimPrefix(endpoint, "/message?sessionId="), http.StatusForbidden},
		{"a session nobody opened", base + "/message?sessionId=00000000-0000-0000-0000-000000000000", "", http.StatusNotFound},
		{"A's id twice in the query after an unknown one", base + "/message?sessionId=nope&" + strings.TrimPrefix(endpoint, "/message?"), "", http.StatusForbidden},
	}
	forbidden := 0
	for _, tc := range cases {
		code, body := ssDo(t, http.MethodPost, tc.url, tokB, tc.header, hijack)
		if code != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, code, body, tc.want)
		}
		ssRequireNoLeak(t, tc.name, body)
		if tc.want == http.StatusForbidden {
			forbidden++
		}
	}

	// A's own ping is answered on A's stream; by then B's call would have been too.
	if code, body := ssDo(t, http.MethodPost, base+endpoint, tokA, "", `{"jsonrpc":"2.0","id":777,"method":"ping"}`); code != http.StatusAccepted {
		t.Fatalf("A's ping: %d %s", code, body)
	}
	stream.waitFor(t, 777)
	if m, ok := stream.find(666); ok {
		t.Fatalf("B's call was answered on A's stream: %s", m)
	}
	for _, l := range stream.all() {
		if strings.Contains(l, "hijacked.dev") {
			t.Fatalf("B's call reached A's stream: %s", l)
		}
	}
	if got := trCountEvents(t, e, "call.received"); got != received {
		t.Fatalf("%d calls reached the MCP server from B's refused requests", got-received)
	}
	ssRequireRefusals(t, e, forbidden)
}

// TestAttackStreamableSessionDrivenByAnotherAgent: the same on /mcp, with
// every verb that names a session: a call, a call whose query names A's
// session beside B's own header, a GET that would subscribe B to A's
// notifications, and a DELETE that would end A's session.
func TestAttackStreamableSessionDrivenByAnotherAgent(t *testing.T) {
	t.Parallel()
	e, base, tokA, tokB := ssTwoAgents(t)
	open := func(tok string) string {
		r := trPost(t, base+"/mcp", tok, "", trInitBody)
		_ = r.Body.Close()
		sid := r.Header.Get("Mcp-Session-Id")
		if r.StatusCode != http.StatusOK || sid == "" {
			t.Fatalf("initialize: %s %q", r.Status, sid)
		}
		n := trPost(t, base+"/mcp", tok, sid, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
		_ = n.Body.Close()
		return sid
	}
	sidA, sidB := open(tokA), open(tokB)
	received := trCountEvents(t, e, "call.received")

	cases := []struct {
		name, method, url, header, body string
		want                            int
	}{
		{"call on A's session", http.MethodPost, base + "/mcp", sidA, trCallBody, http.StatusForbidden},
		{"B's header, A's id in the query", http.MethodPost, base + "/mcp?sessionId=" + sidA, sidB, trCallBody, http.StatusForbidden},
		{"listen on A's session", http.MethodGet, base + "/mcp", sidA, "", http.StatusForbidden},
		{"end A's session", http.MethodDelete, base + "/mcp", sidA, "", http.StatusForbidden},
		{"answer a request sent to A", http.MethodPost, base + "/mcp", sidA, `{"jsonrpc":"2.0","id":1,"result":{"action":"accept"}}`, http.StatusForbidden},
		{"a session nobody opened", http.MethodPost, base + "/mcp", "mcp-session-00000000000000000000000000000000", trCallBody, http.StatusNotFound},
		{"listen on a session nobody opened", http.MethodGet, base + "/mcp", "mcp-session-made-up", "", http.StatusNotFound},
	}
	forbidden := 0
	for _, tc := range cases {
		code, body := ssDo(t, tc.method, tc.url, tokB, tc.header, tc.body)
		if code != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, code, body, tc.want)
		}
		ssRequireNoLeak(t, tc.name, body)
		if tc.want == http.StatusForbidden {
			forbidden++
		}
	}
	if got := trCountEvents(t, e, "call.received"); got != received {
		t.Fatalf("%d calls reached the MCP server from B's refused requests", got-received)
	}
	// A's session survived B's DELETE, and B's own still works.
	for who, c := range map[string][2]string{"A": {tokA, sidA}, "B": {tokB, sidB}} {
		if code, body := ssDo(t, http.MethodPost, base+"/mcp", c[0], c[1], `{"jsonrpc":"2.0","id":5,"method":"ping"}`); code != http.StatusOK {
			t.Errorf("%s's own session after the attack: %d %s", who, code, body)
		}
	}
	ssRequireRefusals(t, e, forbidden)

	// A session its owner ended is gone for everyone: 404, not 403.
	if code, body := ssDo(t, http.MethodDelete, base+"/mcp", tokA, sidA, ""); code/100 != 2 {
		t.Fatalf("A ends its session: %d %s", code, body)
	}
	if code, body := ssDo(t, http.MethodPost, base+"/mcp", tokA, sidA, trCallBody); code != http.StatusNotFound {
		t.Fatalf("A's ended session: %d %s, want 404", code, body)
	}
}

// TestAttackCancelAnotherAgentsRequest: A has a registration waiting for a
// human on each transport; B tries every route a notifications/cancelled
// can take to end it. None may: both calls finish with the registration.
func TestAttackCancelAnotherAgentsRequest(t *testing.T) {
	t.Parallel()
	e, base, tokA, tokB := ssTwoAgents(t, withConfig(func(c *Config) { c.Approvals.Wait = 5 * time.Minute }))
	ctx := context.Background()

	// A on streamable HTTP: the call's answer comes on its POST's response.
	init := trPost(t, base+"/mcp", tokA, "", trInitBody)
	_ = init.Body.Close()
	sidA := init.Header.Get("Mcp-Session-Id")
	n := trPost(t, base+"/mcp", tokA, sidA, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	_ = n.Body.Close()
	httpDone := make(chan string, 1)
	go func() {
		_, body := ssDo(t, http.MethodPost, base+"/mcp", tokA, sidA,
			`{"jsonrpc":"2.0","id":41,"method":"tools/call","params":{"name":"register_domain","arguments":{"domain":"cancel-over-http.dev","reason":"a test of cancellation"}}}`)
		httpDone <- body
	}()

	// A on SSE: the answer comes on its stream.
	resp, endpoint, cancel := trOpenSSE(t, base, tokA)
	defer cancel()
	defer resp.Body.Close()
	stream := ssCollect(resp.Body)
	ssDo(t, http.MethodPost, base+endpoint, tokA, "", trInitBody)
	stream.waitFor(t, 1)
	ssDo(t, http.MethodPost, base+endpoint, tokA, "", `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	if code, body := ssDo(t, http.MethodPost, base+endpoint, tokA, "",
		`{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"register_domain","arguments":{"domain":"cancel-over-sse.dev","reason":"a test of cancellation"}}}`); code != http.StatusAccepted {
		t.Fatalf("A's call over SSE: %d %s", code, body)
	}

	// Both wait for a human.
	var pending []approvals.Request
	deadline := time.Now().Add(60 * time.Second)
	for len(pending) < 2 && time.Now().Before(deadline) {
		var err error
		if pending, err = e.srv.Approvals().List(ctx, approvals.StatePending); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(pending) != 2 {
		t.Fatalf("%d pending approvals, want A's two", len(pending))
	}

	// B's own session, to send from.
	initB := trPost(t, base+"/mcp", tokB, "", trInitBody)
	_ = initB.Body.Close()
	sidB := initB.Header.Get("Mcp-Session-Id")
	cancelOf := func(id int) string {
		return fmt.Sprintf(`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":%d,"reason":"hijack"}}`, id)
	}
	modern := func(id int) string {
		return fmt.Sprintf(`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":%d,"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`, id)
	}
	cases := []struct {
		name, url, header, body string
		want                    int
	}{
		{"on A's streamable session", base + "/mcp", sidA, cancelOf(41), http.StatusForbidden},
		{"on A's SSE session", base + endpoint, "", cancelOf(42), http.StatusForbidden},
		{"on A's SSE session, a made-up header beside", base + endpoint, "mcp-session-made-up", cancelOf(42), http.StatusForbidden},
		// mcp-go keys a session-less request's cancellation by ":"+id, so
		// this would cancel any agent's 2026-07-28 request with id 41.
		{"without a session (keyed by the request id alone)", base + "/mcp", ssModern, modern(41), http.StatusBadRequest},
		// On B's own session the id names B's requests only: accepted, and harmless.
		{"on B's own session", base + "/mcp", sidB, cancelOf(41), http.StatusAccepted},
	}
	for _, tc := range cases {
		code, body := ssDo(t, http.MethodPost, tc.url, tokB, tc.header, tc.body)
		if code != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, code, body, tc.want)
		}
		ssRequireNoLeak(t, tc.name, body)
	}

	for _, r := range pending {
		e.approve(r.OperationID, "bob")
	}
	for _, got := range []string{<-httpDone, stream.waitFor(t, 42)} {
		if !strings.Contains(got, `"structuredContent":{"operation_id":`) || !strings.Contains(got, `"status":"succeeded","tool":"register_domain"`) {
			t.Errorf("A's call did not finish with the registration: %s", got)
		}
	}
	ssRequireRefusals(t, e, 3)
}

// TestSessionsUnderAuthNone: without tokens every request is the configured
// agent, so no session is anyone else's, but a made-up id is still a 404
// and cannot open a session under a name the client chose.
func TestSessionsUnderAuthNone(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	base := trServeHTTP(t, e)
	r := trPost(t, base+"/mcp", "", "", trInitBody)
	_ = r.Body.Close()
	sid := r.Header.Get("Mcp-Session-Id")
	if r.StatusCode != http.StatusOK || sid == "" {
		t.Fatalf("initialize: %s %q", r.Status, sid)
	}
	if code, body := ssDo(t, http.MethodPost, base+"/mcp", "", sid, `{"jsonrpc":"2.0","id":2,"method":"ping"}`); code != http.StatusOK {
		t.Fatalf("own session: %d %s", code, body)
	}
	for _, tc := range []struct{ method, url, header string }{
		{http.MethodPost, base + "/mcp", "mcp-session-made-up"},
		{http.MethodGet, base + "/mcp", "mcp-session-made-up"},
		{http.MethodPost, base + "/mcp?sessionId=made-up", sid},
		{http.MethodPost, base + "/message?sessionId=made-up", ""},
	} {
		body := ""
		if tc.method == http.MethodPost {
			body = `{"jsonrpc":"2.0","id":3,"method":"ping"}`
		}
		if code, got := ssDo(t, tc.method, tc.url, "", tc.header, body); code != http.StatusNotFound {
			t.Errorf("%s %s with %q: %d %s, want 404", tc.method, tc.url, tc.header, code, got)
		}
	}
	if n := len(ssRefusals(t, e)); n != 0 {
		t.Fatalf("%d session.refused events under auth none", n)
	}
}

// TestAuthNoneRefusesABearerToken (issue 13): a client that sends a token to
// a server running --auth none would otherwise act as the configured agent
// without knowing it; it gets a 400 that says why and how to use tokens, on
// every MCP route, and a client without the header works as before.
func TestAuthNoneRefusesABearerToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	base := trServeHTTP(t, e)
	received := trCountEvents(t, e, "call.received")
	for _, tc := range []struct{ method, path, body string }{
		{http.MethodPost, "/mcp", trInitBody},
		{http.MethodGet, "/sse", ""},
		{http.MethodPost, "/message?sessionId=whatever", trCallBody},
		{http.MethodGet, "/mcp", ""},
	} {
		for _, header := range []string{"Bearer " + trWellFormedToken(), "Basic dXNlcjpwYXNz"} {
			code, body := ssDo(t, tc.method, base+tc.path, header, "", tc.body)
			var got struct {
				Error, Desc string
			}
			_ = json.Unmarshal([]byte(body), &struct {
				Error *string `json:"error"`
				Desc  *string `json:"error_description"`
			}{&got.Error, &got.Desc})
			if code != http.StatusBadRequest || got.Error != "auth_not_used" ||
				!strings.Contains(got.Desc, "without agent tokens") || !strings.Contains(got.Desc, "--auth tokens") ||
				!strings.Contains(got.Desc, webBot) {
				t.Errorf("%s %s with %.10s…: %d %s, want 400 auth_not_used saying the server runs without tokens and how to use them", tc.method, tc.path, header, code, body)
			}
		}
	}
	if got := trCountEvents(t, e, "call.received"); got != received {
		t.Fatalf("a refused request reached the MCP server")
	}
	r := trPost(t, base+"/mcp", "", "", trInitBody)
	_ = r.Body.Close()
	if r.StatusCode != http.StatusOK {
		t.Fatalf("without the header: %s", r.Status)
	}
}
