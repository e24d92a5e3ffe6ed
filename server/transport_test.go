package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/tools"
)

// These tests drive the server through real MCP clients over every
// transport: streamable HTTP (/mcp), the legacy SSE transport (/sse +
// /message) and stdio (ServeStdio over pipes). The same scenario runs for the
// mcp-go client here and for the official go-sdk client in
// transport_gosdk_test.go, so a difference between clients shows up as a
// failure of one of them only.

// trWantTools is the public tool inventory, in the order the server lists it
// (mcp-go sorts tools by name).
var trWantTools = func() []string {
	var names []string
	for _, t := range tools.Inventory() {
		names = append(names, t.Name)
	}
	slices.Sort(names)
	return names
}()

// trListedTool is a tool as a client saw it in tools/list.
type trListedTool struct {
	Name         string
	Title        string
	InputSchema  json.RawMessage
	OutputSchema json.RawMessage
}

// trOutcome is a tools/call result as a client decoded it.
type trOutcome struct {
	IsError    bool
	Text       string
	Structured json.RawMessage
}

// trCaller is one connected MCP client, whichever library it comes from.
type trCaller interface {
	// serverName is the server's name from initialize or discovery.
	serverName() string
	// protocol is the negotiated protocol version.
	protocol() string
	// clientName is the name the client announces.
	clientName() string
	listTools(ctx context.Context) ([]trListedTool, error)
	callTool(ctx context.Context, name string, args map[string]any) (trOutcome, error)
}

// trMCPGo adapts the mcp-go client.
type trMCPGo struct {
	c    *client.Client
	init *mcp.InitializeResult
}

func (m *trMCPGo) serverName() string { return m.init.ServerInfo.Name }
func (m *trMCPGo) protocol() string   { return m.init.ProtocolVersion }
func (m *trMCPGo) clientName() string { return trMCPGoClientName }

// trMCPGoClientName is how the mcp-go test client introduces itself.
const trMCPGoClientName = "tollgate-transport-test"

func (m *trMCPGo) listTools(ctx context.Context) ([]trListedTool, error) {
	res, err := m.c.ListTools(ctx, mcp.ListToolsRequest{})
	if err != nil {
		return nil, err
	}
	var out []trListedTool
	for _, tl := range res.Tools {
		// Marshal back to the wire form: mcp.Tool keeps a raw or a typed
		// schema, and the wire form is what every client agrees on.
		raw, err := json.Marshal(tl)
		if err != nil {
			return nil, err
		}
		var wire struct {
			Name         string          `json:"name"`
			Title        string          `json:"title"`
			InputSchema  json.RawMessage `json:"inputSchema"`
			OutputSchema json.RawMessage `json:"outputSchema"`
		}
		if err := json.Unmarshal(raw, &wire); err != nil {
			return nil, err
		}
		out = append(out, trListedTool(wire))
	}
	return out, nil
}

func (m *trMCPGo) callTool(ctx context.Context, name string, args map[string]any) (trOutcome, error) {
	req := mcp.CallToolRequest{}
	req.Params.Name = name
	req.Params.Arguments = args
	res, err := m.c.CallTool(ctx, req)
	if err != nil {
		return trOutcome{}, err
	}
	out := trOutcome{IsError: res.IsError, Text: text(res)}
	if res.StructuredContent != nil {
		if out.Structured, err = json.Marshal(res.StructuredContent); err != nil {
			return trOutcome{}, err
		}
	}
	return out, nil
}

// trEra selects how a client opens the connection: trModern lets it
// negotiate the newest protocol (server/discover, 2026-07-28); the others pin
// a version of the initialize handshake that deployed clients still use.
type trEra string

const (
	trModern   trEra = ""
	trLegacy   trEra = mcp.ProtocolVersion20251125
	tr20250618 trEra = mcp.ProtocolVersion20250618
)

// trEras are the protocol versions every transport is tested with.
var trEras = []trEra{trModern, trLegacy, tr20250618}

func (e trEra) String() string { return orNewest(string(e)) }

// trServeHTTP serves the server's Handler on a loopback httptest server.
func trServeHTTP(t *testing.T, e *testEnv) string {
	t.Helper()
	ts := httptest.NewServer(e.srv.Handler())
	t.Cleanup(ts.Close)
	return ts.URL
}

// trStdioPipes runs ServeStdio on a pair of pipes, as the binary does on its
// stdin/stdout, and returns the client's ends. Everything the server writes
// is also copied into the returned buffer, to check that only protocol
// messages reach the client's stream.
func trStdioPipes(t *testing.T, e *testEnv) (fromServer io.ReadCloser, toServer io.WriteCloser, written *syncBuffer) {
	t.Helper()
	// mcp-go's stdio session is one per process (a stdio server has one
	// client), so two stdio servers in one test binary would share its
	// notification queue: stdio tests take turns.
	stdioTurn.Lock()
	t.Cleanup(stdioTurn.Unlock)
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	written = &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- e.srv.ServeStdio(ctx, inR, io.MultiWriter(outW, written))
		_ = outW.Close()
	}()
	t.Cleanup(func() {
		// Closing stdin ends the session the way a client exiting does; the
		// server then closes its output, which the client reads as EOF.
		_ = inW.Close()
		defer cancel()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrClosedPipe) {
				t.Errorf("ServeStdio: %v", err)
			}
		case <-time.After(hangGuard):
			t.Error("ServeStdio did not return after its input closed")
		}
	})
	return outR, inW, written
}

// stdioTurn serialises the tests that serve stdio (see trStdioPipes).
var stdioTurn sync.Mutex

// trConnectMCPGo connects an mcp-go client to e over the named transport.
// headers are sent on every HTTP request (e.g. Authorization).
func trConnectMCPGo(t *testing.T, e *testEnv, transportName string, era trEra, headers map[string]string) (*trMCPGo, *syncBuffer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var (
		c       *client.Client
		err     error
		written *syncBuffer
	)
	opts := []client.ClientOption{}
	if era != trModern {
		opts = append(opts, client.WithProtocolVersion(string(era)))
	}
	switch transportName {
	case "streamable":
		var tr *transport.StreamableHTTP
		tr, err = transport.NewStreamableHTTP(trServeHTTP(t, e)+"/mcp", transport.WithHTTPHeaders(headers))
		if err == nil {
			c = client.NewClient(tr, opts...)
		}
	case "sse":
		var tr *transport.SSE
		tr, err = transport.NewSSE(trServeHTTP(t, e)+"/sse", transport.WithHeaders(headers))
		if err == nil {
			c = client.NewClient(tr, opts...)
		}
	case "stdio":
		var fromServer io.ReadCloser
		var toServer io.WriteCloser
		fromServer, toServer, written = trStdioPipes(t, e)
		c = client.NewClient(transport.NewIO(fromServer, toServer, nil), opts...)
	default:
		t.Fatalf("unknown transport %q", transportName)
	}
	if err != nil {
		t.Fatalf("%s transport: %v", transportName, err)
	}
	// Start takes a context that lives as long as the connection (the SSE
	// stream is bound to it), not just the setup.
	if err := c.Start(context.Background()); err != nil {
		t.Fatalf("start %s client: %v", transportName, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	init := mcp.InitializeRequest{}
	init.Params.ClientInfo = mcp.Implementation{Name: trMCPGoClientName, Version: "1.0.0"}
	res, err := c.Initialize(ctx, init)
	if err != nil {
		t.Fatalf("initialize over %s (%s): %v", transportName, era, err)
	}
	return &trMCPGo{c: c, init: res}, written
}

func TestTransportsWithMCPGoClient(t *testing.T) {
	t.Parallel()
	for _, tr := range []string{"streamable", "sse", "stdio"} {
		for _, era := range trEras {
			t.Run(tr+"/"+era.String(), func(t *testing.T) {
				t.Parallel()
				e := newEnv(t, withConfig(func(c *Config) { c.Approvals.Wait = 0 }))
				c, written := trConnectMCPGo(t, e, tr, era, nil)
				trExercise(t, e, c, era)
				if written != nil {
					trRequireJSONRPC(t, written.String())
				}
			})
		}
	}
}

// trExercise is the scenario every client runs over every transport:
// list the tools, price a domain, estimate a registration, deploy a preview
// Worker, and start a registration that must wait for a human. Every
// structured result is validated against the output schema the client
// received in tools/list, and decoded into the tools package's types.
func trExercise(t *testing.T, e *testEnv, c trCaller, era trEra) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	if c.serverName() != "tollgate" {
		t.Errorf("server name %q, want tollgate", c.serverName())
	}
	t.Logf("negotiated protocol %s", c.protocol())
	switch {
	case era != trModern && c.protocol() != string(era):
		t.Errorf("handshake negotiated %q, want %s", c.protocol(), era)
	case era == trModern && c.protocol() != mcp.LATEST_PROTOCOL_VERSION:
		t.Errorf("negotiated %q, want the newest mcp-go speaks, %s", c.protocol(), mcp.LATEST_PROTOCOL_VERSION)
	case c.protocol() == "":
		t.Error("no protocol version negotiated")
	}

	listed, err := c.listTools(ctx)
	if err != nil {
		t.Fatalf("tools/list: %v", err)
	}
	var names []string
	schemas := map[string]*jsonschema.Resolved{}
	for _, tl := range listed {
		names = append(names, tl.Name)
		if tl.Title == "" {
			t.Errorf("tool %s has no title", tl.Name)
		}
		if len(tl.OutputSchema) == 0 || string(tl.OutputSchema) == "null" {
			t.Errorf("tool %s has no output schema", tl.Name)
			continue
		}
		schemas[tl.Name] = trResolveSchema(t, tl.Name, tl.OutputSchema)
		trResolveSchema(t, tl.Name+" input", tl.InputSchema)
	}
	if !slices.Equal(names, trWantTools) {
		t.Fatalf("tools/list = %v, want %v", names, trWantTools)
	}

	call := func(name string, args map[string]any) trOutcome {
		t.Helper()
		out, err := c.callTool(ctx, name, args)
		if err != nil {
			t.Fatalf("tools/call %s: %v", name, err)
		}
		if len(out.Structured) == 0 {
			t.Fatalf("%s returned no structured content: %s", name, out.Text)
		}
		var instance any
		if err := json.Unmarshal(out.Structured, &instance); err != nil {
			t.Fatalf("%s structured content is not JSON: %v", name, err)
		}
		if err := schemas[name].Validate(instance); err != nil {
			t.Errorf("%s structured content does not match its output schema: %v\n%s", name, err, out.Structured)
		}
		return out
	}

	// check_domain normalises its input before the registrar sees it.
	out := call("check_domain", map[string]any{"domain": "Launch-Page.DEV."})
	cd := trDecode[tools.CheckDomainResult](t, out)
	if out.IsError || cd.Domain != "launch-page.dev" || !cd.Registrable || cd.PerYear == nil || cd.PerYear.Micros != 12_180_000 || cd.PerYear.Currency != "USD" {
		t.Errorf("check_domain = %+v (error %v: %s)", cd, out.IsError, out.Text)
	}

	out = call("estimate_cost", map[string]any{"action": "register_domain", "params": map[string]any{"domain": "launch-page.dev", "years": 2}})
	est := trDecode[tools.EstimateResult](t, out)
	if out.IsError || est.Amount.Micros != 24_360_000 || !est.Policy.Allowed || !est.Approval.Required || est.Resource != "domain:launch-page.dev" {
		t.Errorf("estimate_cost = %+v (error %v: %s)", est, out.IsError, out.Text)
	}

	out = call("deploy_worker", map[string]any{
		"script_name": "web-transport", "module": okModule, "compatibility_date": "2025-01-01",
		"environment": "preview", "reason": reason,
	})
	dep := trDecode[tools.OperationView](t, out)
	if out.IsError || dep.Status != "succeeded" {
		t.Fatalf("preview deploy_worker = %+v (error %v: %s)", dep, out.IsError, out.Text)
	}
	var dr tools.DeployResult
	if err := json.Unmarshal(dep.Result, &dr); err != nil || dr.DeployedName != "web-transport-preview" || !strings.HasSuffix(dr.URL, ".workers.dev") {
		t.Errorf("deploy result %s (%v)", dep.Result, err)
	}

	before := len(e.sb.Registrations())
	out = call("register_domain", map[string]any{"domain": "launch-page.dev", "reason": reason})
	reg := trDecode[tools.OperationView](t, out)
	if out.IsError || reg.Status != "awaiting_approval" || reg.OperationID == "" || reg.ExpiresAt == nil || !strings.Contains(reg.HowToResume, "get_operation") {
		t.Errorf("register_domain = %+v (error %v: %s)", reg, out.IsError, out.Text)
	}
	if n := len(e.sb.Registrations()); n != before {
		t.Errorf("a registration reached the registrar before any approval (%d → %d)", before, n)
	}
	// The text content mirrors the structured result for clients that only read text.
	if !strings.Contains(out.Text, reg.OperationID) {
		t.Errorf("register_domain text does not name the operation: %q", out.Text)
	}

	// get_operation reads the same operation back through the same client.
	got := trDecode[tools.OperationView](t, call("get_operation", map[string]any{"operation_id": reg.OperationID}))
	if got.OperationID != reg.OperationID || got.Status != "awaiting_approval" {
		t.Errorf("get_operation = %+v", got)
	}

	// Every call is in the audit trail with the agent, the transport and the
	// MCP client that made it (client facts are for audit, not for trust).
	trRequireCallsAudited(t, e, "agent:"+webBot, c.clientName())

	// A bad argument is a tool error the model can act on, not a protocol error.
	bad, err := c.callTool(ctx, "check_domain", map[string]any{"domain": "a..com"})
	if err != nil {
		t.Fatalf("tools/call with a bad domain: %v", err)
	}
	if !bad.IsError || !strings.Contains(bad.Text, "domain") {
		t.Errorf("bad domain: error %v, %q", bad.IsError, bad.Text)
	}
}

// trRequireCallsAudited checks every call.received event: the actor, the
// client name as the client announced it, and a transport.
func trRequireCallsAudited(t *testing.T, e *testEnv, actor, clientName string) {
	t.Helper()
	n := 0
	err := e.db.Events(context.Background(), ledger.EventQuery{}, func(ev ledger.Event) error {
		if ev.Type != "call.received" {
			return nil
		}
		n++
		var d struct {
			Tool   string            `json:"tool"`
			Client ledger.ClientInfo `json:"client"`
		}
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			return err
		}
		if ev.Actor != actor || d.Client.Name != clientName || d.Client.Transport == "" {
			t.Errorf("call.received for %s: actor %q client %+v, want actor %q and client %q", d.Tool, ev.Actor, d.Client, actor, clientName)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Error("no call.received audit events")
	}
}

// trResolveSchema compiles a JSON Schema as a client received it.
func trResolveSchema(t *testing.T, what string, raw json.RawMessage) *jsonschema.Resolved {
	t.Helper()
	var s jsonschema.Schema
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("%s schema: %v", what, err)
	}
	rs, err := s.Resolve(nil)
	if err != nil {
		t.Fatalf("%s schema does not resolve: %v", what, err)
	}
	return rs
}

// trDecode decodes structured content into T, refusing fields T does
// not know: the wire shape must be exactly the documented one.
func trDecode[T any](t *testing.T, out trOutcome) T {
	t.Helper()
	var v T
	dec := json.NewDecoder(bytes.NewReader(out.Structured))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %T from %s: %v", v, out.Structured, err)
	}
	return v
}

// trRequireJSONRPC fails unless every line of a stdio stream is one
// JSON-RPC 2.0 message: a log line on stdout would corrupt the protocol.
func trRequireJSONRPC(t *testing.T, stream string) {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(stream))
	sc.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
	n := 0
	for sc.Scan() {
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		n++
		var msg struct {
			JSONRPC string          `json:"jsonrpc"`
			ID      json.RawMessage `json:"id"`
			Method  string          `json:"method"`
			Result  json.RawMessage `json:"result"`
			Error   json.RawMessage `json:"error"`
		}
		if err := json.Unmarshal(line, &msg); err != nil {
			t.Fatalf("stdout line %d is not JSON: %q", n, line)
		}
		if msg.JSONRPC != "2.0" || (msg.Method == "" && msg.Result == nil && msg.Error == nil) {
			t.Fatalf("stdout line %d is not a JSON-RPC 2.0 message: %q", n, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("the server wrote nothing on its protocol stream")
	}
}

// TestStdioStreamCarriesOnlyProtocol checks ServeStdio's output stream at the
// byte level, including the answers to a line that is not JSON at all and to
// an unknown tool. (The real binary's stdout and stderr are checked in
// cmd/tollgate.)
func TestStdioStreamCarriesOnlyProtocol(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	fromServer, toServer, written := trStdioPipes(t, e)
	lines := []string{
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`,
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		`{"jsonrpc":"2.0","id":2,"method":"tools/list"}`,
		`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"check_domain","arguments":{"domain":"stdio-pure.dev"}}}`,
		`this is not json`,
		`{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"no_such_tool","arguments":{}}}`,
		`{"jsonrpc":"2.0","id":5,"method":"ping"}`,
	}
	var mu sync.Mutex
	var got []string
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(fromServer)
		sc.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
		for sc.Scan() {
			mu.Lock()
			got = append(got, sc.Text())
			n := len(got)
			mu.Unlock()
			if n >= 6 { // five answers to requests plus the parse error
				return
			}
		}
	}()
	for _, l := range lines {
		if _, err := io.WriteString(toServer, l+"\n"); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-readDone:
	case <-time.After(hangGuard):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("only %d answers on stdout: %q", len(got), got)
	}
	trRequireJSONRPC(t, written.String())
	ids := map[string]string{}
	for _, l := range got {
		var m struct {
			ID    json.RawMessage `json:"id"`
			Error *struct {
				Code int `json:"code"`
			} `json:"error"`
		}
		_ = json.Unmarshal([]byte(l), &m)
		code := ""
		if m.Error != nil {
			code = fmt.Sprint(m.Error.Code)
		}
		ids[string(m.ID)] = code
	}
	for _, id := range []string{"1", "2", "3", "5"} {
		if code, ok := ids[id]; !ok || code != "" {
			t.Errorf("request %s: answered %v, error code %q", id, ok, code)
		}
	}
	if code := ids["null"]; code != "-32700" {
		t.Errorf("a non-JSON line should get a parse error (-32700) with a null id, got %q (answers %v)", code, ids)
	}
	if code := ids["4"]; code == "" {
		t.Errorf("an unknown tool should be a JSON-RPC error, got %v", ids)
	}
}

// TestSSEOnlyTransport: --transport sse serves the legacy SSE transport and
// not /mcp, from the same handler.
func TestSSEOnlyTransport(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) {
		c.Transport = "sse"
		c.Approvals.Wait = 0
	}))
	c, _ := trConnectMCPGo(t, e, "sse", trLegacy, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := c.callTool(ctx, "check_domain", map[string]any{"domain": "sse-only.dev"})
	if err != nil || out.IsError {
		t.Fatalf("check_domain over SSE: %v %s", err, out.Text)
	}
	resp := trPost(t, trServeHTTP(t, e)+"/mcp", "", "", trInitBody)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("POST /mcp with transport sse: %s, want 404", resp.Status)
	}
}
