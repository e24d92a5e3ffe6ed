package server

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// trGoSDK adapts the official go-sdk client session.
type trGoSDK struct {
	s *sdk.ClientSession
}

func (g *trGoSDK) serverName() string {
	if r := g.s.InitializeResult(); r != nil && r.ServerInfo != nil {
		return r.ServerInfo.Name
	}
	return ""
}

func (g *trGoSDK) protocol() string {
	if r := g.s.InitializeResult(); r != nil {
		return r.ProtocolVersion
	}
	return ""
}

func (g *trGoSDK) clientName() string { return trGoSDKClientName }

// trGoSDKClientName is how the go-sdk test client introduces itself.
const trGoSDKClientName = "tollgate-transport-test-gosdk"

func (g *trGoSDK) listTools(ctx context.Context) ([]trListedTool, error) {
	var out []trListedTool
	for tl, err := range g.s.Tools(ctx, nil) {
		if err != nil {
			return nil, err
		}
		in, err := json.Marshal(tl.InputSchema)
		if err != nil {
			return nil, err
		}
		var outSchema json.RawMessage
		if tl.OutputSchema != nil {
			if outSchema, err = json.Marshal(tl.OutputSchema); err != nil {
				return nil, err
			}
		}
		out = append(out, trListedTool{Name: tl.Name, Title: tl.Title, InputSchema: in, OutputSchema: outSchema})
	}
	return out, nil
}

func (g *trGoSDK) callTool(ctx context.Context, name string, args map[string]any) (trOutcome, error) {
	res, err := g.s.CallTool(ctx, &sdk.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		return trOutcome{}, err
	}
	out := trOutcome{IsError: res.IsError}
	var parts []string
	for _, c := range res.Content {
		if tc, ok := c.(*sdk.TextContent); ok {
			parts = append(parts, tc.Text)
		}
	}
	out.Text = strings.Join(parts, "\n")
	if res.StructuredContent != nil {
		if out.Structured, err = json.Marshal(res.StructuredContent); err != nil {
			return trOutcome{}, err
		}
	}
	return out, nil
}

// trHeaderTransport adds fixed headers (e.g. Authorization) to every request.
type trHeaderTransport struct {
	headers map[string]string
	base    http.RoundTripper
}

func (h trHeaderTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range h.headers {
		r.Header.Set(k, v)
	}
	return h.base.RoundTrip(r)
}

// trConnectGoSDK connects the go-sdk client to e over the named transport.
func trConnectGoSDK(t *testing.T, e *testEnv, transportName string, era trEra, headers map[string]string) (*trGoSDK, *syncBuffer) {
	t.Helper()
	s, written := goSDKSession(t, e, transportName, string(era), nil, headers)
	return &trGoSDK{s: s}, written
}

// goSDKSession connects a go-sdk client with options copts over the named
// transport, asking for protocol version (empty: the newest both support).
// Everything the server writes on stdio is also copied into written.
func goSDKSession(t *testing.T, e *testEnv, transportName, version string, copts *sdk.ClientOptions, headers map[string]string) (_ *sdk.ClientSession, written *syncBuffer) {
	t.Helper()
	// The SSE transport binds its hanging GET to the Connect context, so it
	// must live as long as the session, not just the handshake.
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	hc := &http.Client{Transport: trHeaderTransport{headers: headers, base: http.DefaultTransport}}
	var tr sdk.Transport
	switch transportName {
	case "streamable":
		tr = &sdk.StreamableClientTransport{Endpoint: trServeHTTP(t, e) + "/mcp", HTTPClient: hc, MaxRetries: -1}
	case "sse":
		tr = &sdk.SSEClientTransport{Endpoint: trServeHTTP(t, e) + "/sse", HTTPClient: hc}
	case "stdio":
		r, w, buf := trStdioPipes(t, e)
		written = buf
		tr = &sdk.IOTransport{Reader: r, Writer: w}
	default:
		t.Fatalf("unknown transport %q", transportName)
	}
	c := sdk.NewClient(&sdk.Implementation{Name: trGoSDKClientName, Version: "1.0.0"}, copts)
	connectCtx, stop := context.WithTimeout(ctx, 30*time.Second)
	defer stop()
	if transportName == "sse" {
		connectCtx = ctx
	}
	s, err := c.Connect(connectCtx, tr, &sdk.ClientSessionOptions{ProtocolVersion: version})
	if err != nil {
		t.Fatalf("go-sdk connect over %s (%q): %v", transportName, version, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, written
}

func TestTransportsWithGoSDKClient(t *testing.T) {
	t.Parallel()
	for _, tr := range []string{"streamable", "sse", "stdio"} {
		for _, era := range trEras {
			t.Run(tr+"/"+era.String(), func(t *testing.T) {
				t.Parallel()
				e := newEnv(t, withConfig(func(c *Config) { c.Approvals.Wait = 0 }))
				c, written := trConnectGoSDK(t, e, tr, era, nil)
				trExercise(t, e, c, era)
				if written != nil {
					trRequireJSONRPC(t, written.String())
				}
			})
		}
	}
}
