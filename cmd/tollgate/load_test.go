package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"
)

// The load generator is tested against a real mcp-go streamable HTTP server
// with tools whose behaviour the test controls, so every figure it reports
// can be checked against what the server saw.

type loadTarget struct {
	url   string
	calls map[string]*atomic.Int64
	// streams counts answers sent as an event stream.
	streams atomic.Int64
}

// newLoadTarget serves echo (read-only), refuse (read-only, error result),
// flaky (read-only, fails every call after the first), buy (destructive)
// and progress (read-only, reports progress first, so its answer comes as an
// event stream).
// With token set, requests without "Bearer token" get a 401.
func newLoadTarget(t *testing.T, token string) *loadTarget {
	t.Helper()
	lt := &loadTarget{calls: map[string]*atomic.Int64{}}
	s := mcpserver.NewMCPServer("load-target", "1", mcpserver.WithToolCapabilities(false))
	add := func(name string, readOnly bool, h func(n int64) (*mcp.CallToolResult, error)) {
		n := &atomic.Int64{}
		lt.calls[name] = n
		s.AddTool(mcp.NewTool(name, mcp.WithReadOnlyHintAnnotation(readOnly), mcp.WithString("domain")),
			func(context.Context, mcp.CallToolRequest) (*mcp.CallToolResult, error) { return h(n.Add(1)) })
	}
	add("echo", true, func(int64) (*mcp.CallToolResult, error) { return mcp.NewToolResultText("ok"), nil })
	add("refuse", true, func(int64) (*mcp.CallToolResult, error) { return mcp.NewToolResultError("policy says no"), nil })
	add("flaky", true, func(n int64) (*mcp.CallToolResult, error) {
		if n > 1 {
			return nil, errors.New("backend down")
		}
		return mcp.NewToolResultText("ok"), nil
	})
	add("buy", false, func(int64) (*mcp.CallToolResult, error) { return mcp.NewToolResultText("bought"), nil })
	n := &atomic.Int64{}
	lt.calls["progress"] = n
	s.AddTool(mcp.NewTool("progress", mcp.WithReadOnlyHintAnnotation(true), mcp.WithString("domain")),
		func(ctx context.Context, _ mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			n.Add(1)
			if err := mcpserver.ServerFromContext(ctx).SendNotificationToClient(ctx, "notifications/message",
				map[string]any{"level": "info", "data": "halfway"}); err != nil {
				return nil, err
			}
			return mcp.NewToolResultText("done"), nil
		})

	var h http.Handler = mcpserver.NewStreamableHTTPServer(s)
	{
		next := h
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			next.ServeHTTP(w, r)
			if strings.HasPrefix(w.Header().Get("Content-Type"), "text/event-stream") {
				lt.streams.Add(1)
			}
		})
	}
	if token != "" {
		next := h
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer "+token {
				w.Header().Set("WWW-Authenticate", `Bearer realm="test"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	lt.url = hs.URL + "/mcp"
	return lt
}

func loadOpts(url, tool string) loadOptions {
	// Every client calls at least once whatever the duration, so the tests
	// count calls, never time; the call timeout is only a hang guard.
	return loadOptions{URL: url, Clients: 3, Duration: 150 * time.Millisecond, Timeout: time.Minute, Tool: tool, Args: map[string]any{"domain": "x.dev"}}
}

func TestLoadCountsEveryCall(t *testing.T) {
	t.Parallel()
	lt := newLoadTarget(t, "")
	rep, err := runLoadTest(context.Background(), loadOpts(lt.url, "echo"))
	if err != nil {
		t.Fatal(err)
	}
	// Every client calls at least once, however short the run.
	if rep.Calls < rep.Clients || rep.OK != rep.Calls || rep.Errors != 0 || rep.ToolErrors != 0 {
		t.Fatalf("report %+v: want only successful calls, at least one per client", rep)
	}
	// The server saw every reported call plus the probe.
	if got := lt.calls["echo"].Load(); got != int64(rep.Calls)+1 {
		t.Fatalf("server handled %d calls, report says %d (+1 probe)", got, rep.Calls)
	}
	if rep.P50Ms <= 0 || rep.P50Ms > rep.P90Ms || rep.P90Ms > rep.P99Ms || rep.P99Ms > rep.MaxMs {
		t.Fatalf("percentiles out of order: %+v", rep)
	}
	if rep.CallsPerS <= 0 || rep.DurationS < 0.15 || rep.Clients != 3 || rep.Tool != "echo" {
		t.Fatalf("report %+v", rep)
	}
	var out bytes.Buffer
	printLoadReport(&out, rep)
	for _, want := range []string{"CALLS/S", "P99", "echo with 3 clients"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report text lacks %q:\n%s", want, out.String())
		}
	}
}

// An answer that comes as an event stream, after a notification, is read
// to its end and counted like any other.
func TestLoadReadsEventStreamAnswers(t *testing.T) {
	lt := newLoadTarget(t, "")
	rep, err := runLoadTest(context.Background(), loadOpts(lt.url, "progress"))
	if err != nil {
		t.Fatal(err)
	}
	if served := lt.calls["progress"].Load(); rep.Errors != 0 || rep.ToolErrors != 0 || int64(rep.OK)+1 != served {
		t.Fatalf("report %+v, server saw %d calls (the probe call included)", rep, served)
	}
	if got := lt.streams.Load(); got < int64(rep.OK) {
		t.Fatalf("%d answers were event streams, want every one of the %d calls'", got, rep.OK)
	}
}

func TestLoadSeparatesToolErrorsFromFailures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		tool      string
		wantTool  bool // error results counted as tool errors
		wantFails bool // failed calls counted as errors
	}{
		{tool: "refuse", wantTool: true},
		{tool: "flaky", wantFails: true},
	}
	for _, tc := range tests {
		t.Run(tc.tool, func(t *testing.T) {
			t.Parallel()
			lt := newLoadTarget(t, "")
			var warn bytes.Buffer
			o := loadOpts(lt.url, tc.tool)
			o.Warn = &warn
			rep, err := runLoadTest(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Calls == 0 || rep.OK != 0 {
				t.Fatalf("report %+v: want no successful timed call", rep)
			}
			if tc.wantTool && (rep.ToolErrors != rep.Calls || !strings.Contains(warn.String(), "policy says no")) {
				t.Fatalf("report %+v, warning %q: want every call a tool error, and the refusal shown", rep, warn.String())
			}
			if tc.wantFails && (rep.Errors != rep.Calls || len(rep.FirstErrors) != 1 || !strings.Contains(rep.FirstErrors[0], "backend down")) {
				t.Fatalf("report %+v: want every call failed, with the cause once", rep)
			}
		})
	}
}

func TestLoadRefusesUnknownAndMutatingTools(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, tool    string
		allowMutating bool
		wantErr       string
	}{
		{name: "unknown", tool: "nope", wantErr: "no tool \"nope\"; it lists: "},
		{name: "mutating", tool: "buy", wantErr: "pass --allow-mutating"},
		{name: "mutating allowed", tool: "buy", allowMutating: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			lt := newLoadTarget(t, "")
			o := loadOpts(lt.url, tc.tool)
			o.AllowMutating = tc.allowMutating
			rep, err := runLoadTest(context.Background(), o)
			if tc.wantErr == "" {
				if err != nil || rep.OK == 0 || lt.calls["buy"].Load() != int64(rep.Calls)+1 {
					t.Fatalf("want a run, got %+v %v", rep, err)
				}
				return
			}
			var ue usageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want a usage error containing %q", err, tc.wantErr)
			}
			if n := lt.calls["buy"].Load(); n != 0 {
				t.Fatalf("a refused run still called buy %d times", n)
			}
		})
	}
}

func TestLoadSendsTheBearerToken(t *testing.T) {
	t.Parallel()
	lt := newLoadTarget(t, "tg_secret-value")
	o := loadOpts(lt.url, "echo")
	_, err := runLoadTest(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "--token or set TOLLGATE_TOKEN") {
		t.Fatalf("without a token: %v, want advice on --token", err)
	}
	if strings.Contains(err.Error(), "tg_secret-value") {
		t.Fatal("the error leaks the token")
	}
	o.Token = "tg_secret-value"
	rep, err := runLoadTest(context.Background(), o)
	if err != nil || rep.OK == 0 {
		t.Fatalf("with the token: %+v %v", rep, err)
	}
}

func TestLoadStopsWhenCancelled(t *testing.T) {
	t.Parallel()
	lt := newLoadTarget(t, "")
	o := loadOpts(lt.url, "echo")
	o.Duration = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		rep loadReport
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := runLoadTest(ctx, o)
		done <- result{rep, err}
	}()
	// Interrupt once the server has answered the probe and at least ten
	// timed calls: the run must stop and count what finished.
	const served = 11
	guard := time.After(2 * time.Minute)
	for lt.calls["echo"].Load() < served {
		select {
		case r := <-done:
			t.Fatalf("an hour-long run returned before the interrupt: %+v %v", r.rep, r.err)
		case <-guard:
			t.Fatalf("the server answered only %d calls", lt.calls["echo"].Load())
		case <-time.After(5 * time.Millisecond):
		}
	}
	cancel()
	var r result
	select {
	case r = <-done:
	case <-guard:
		t.Fatal("the run did not stop when cancelled")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	// At the interrupt each client had at most one call unanswered; the
	// interrupted ones are not failures and not counted.
	if r.rep.Calls < served-1-o.Clients || r.rep.Errors != 0 || r.rep.Calls != r.rep.OK {
		t.Fatalf("report %+v: want the %d+ calls made before the interrupt, none counted as failures", r.rep, served-1-o.Clients)
	}
	if total := lt.calls["echo"].Load(); int64(r.rep.Calls)+1 > total {
		t.Fatalf("report counts %d calls, the server handled %d (with the probe)", r.rep.Calls, total)
	}
}

func TestLoadOptionsAndArgs(t *testing.T) {
	t.Parallel()
	good := loadOptions{URL: "http://127.0.0.1:8787/mcp", Clients: 8, Duration: 10 * time.Second, Timeout: 30 * time.Second, Tool: "estimate_cost"}
	tests := []struct {
		name     string
		edit     func(*loadOptions)
		checkURL bool
		want     []string
	}{
		{name: "defaults", edit: func(*loadOptions) {}, checkURL: true},
		{name: "every problem at once", checkURL: true, edit: func(o *loadOptions) {
			o.URL, o.Clients, o.Duration, o.Timeout, o.Tool = "ftp://x", 0, -time.Second, 0, " "
		}, want: []string{"--url \"ftp://x\": an http:// or https:// URL", "--clients 0: from 1 to 1024", "--duration -1s: a positive", "--timeout 0s: a positive", "--tool: the name"}},
		{name: "too many clients", checkURL: true, edit: func(o *loadOptions) { o.Clients = 5000 }, want: []string{"--clients 5000: from 1 to 1024"}},
		{name: "url ignored when spawning", edit: func(o *loadOptions) { o.URL = "" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			o := good
			tc.edit(&o)
			err := o.validate(tc.checkURL)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}

	argTests := []struct {
		tool, raw, wantErr, wantKey string
	}{
		{tool: "estimate_cost", wantKey: "action"},
		{tool: "check_domain", wantKey: "domain"},
		{tool: "get_operation", wantErr: "--args is required for tool \"get_operation\""},
		{tool: "get_operation", raw: `{"operation_id":"op_x"}`, wantKey: "operation_id"},
		{tool: "echo", raw: `[1,2]`, wantErr: "must be a JSON object"},
		{tool: "echo", raw: `null`, wantErr: "must be a JSON object"},
		{tool: "echo", raw: `{"a":`, wantErr: "must be a JSON object"},
	}
	for _, tc := range argTests {
		m, err := loadArgs(tc.tool, tc.raw)
		switch {
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("loadArgs(%s, %q) = %v, want error %q", tc.tool, tc.raw, err, tc.wantErr)
		case tc.wantErr == "" && (err != nil || m[tc.wantKey] == nil):
			t.Errorf("loadArgs(%s, %q) = %v %v, want key %s", tc.tool, tc.raw, m, err, tc.wantKey)
		}
	}
}

func TestNearestRank(t *testing.T) {
	t.Parallel()
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	tests := []struct {
		samples []time.Duration
		p       float64
		want    time.Duration
	}{
		{ms(7), 0.99, 7 * time.Millisecond},
		{ms(1, 2, 3, 4), 0.50, 2 * time.Millisecond},
		{ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 0.90, 9 * time.Millisecond},
		{ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 0.99, 10 * time.Millisecond},
		{ms(1, 2, 3), 0, 1 * time.Millisecond},
	}
	for _, tc := range tests {
		if got := nearestRank(tc.samples, tc.p); got != tc.want {
			t.Errorf("nearestRank(%v, %v) = %v, want %v", tc.samples, tc.p, got, tc.want)
		}
	}
}

// TestLoadReportsWorkPerCall: the report divides the server's /metrics work
// counters by the calls made, and --calls stops at exactly that many.
func TestLoadReportsWorkPerCall(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	s := mcpserver.NewMCPServer("work-target", "1", mcpserver.WithToolCapabilities(false))
	s.AddTool(mcp.NewTool("echo", mcp.WithReadOnlyHintAnnotation(true)), func(context.Context, mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		calls.Add(1)
		return mcp.NewToolResultText("ok"), nil
	})
	mux := http.NewServeMux()
	mux.Handle("/mcp", mcpserver.NewStreamableHTTPServer(s))
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		n := calls.Load()
		// Each call: 1 PDP request, 2 write transactions, Cloudflare
		// requests on two series adding up to 0.5.
		fmt.Fprintf(w, "# HELP tollgate_policy_requests_total x\ntollgate_policy_requests_total %d\n", n)
		fmt.Fprintf(w, "tollgate_ledger_write_transactions_total %d\n", 2*n+7)
		fmt.Fprintf(w, "tollgate_cloudflare_request_seconds_count{method=\"GET\"} %d\n", n/4)
		fmt.Fprintf(w, "tollgate_cloudflare_request_seconds_count{method=\"POST\"} %d\n", n/4)
		fmt.Fprintf(w, "process_cpu_seconds_total %g\n", 0.003*float64(n)+1.5) // 3 ms a call
	})
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	o := loadOpts(hs.URL+"/mcp", "echo")
	o.MaxCalls = 40
	o.Duration = time.Hour // --calls ends the run, not the clock
	rep, err := runLoadTest(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Calls != 40 || calls.Load() != 41 {
		t.Fatalf("--calls 40: the report has %d calls, the server saw %d (want 40 + the probe)", rep.Calls, calls.Load())
	}
	if rep.PerCall == nil || rep.PerCall.PDPRequests != 1 || rep.PerCall.WriteTransactions != 2 || rep.PerCall.CloudflareRequests != 0.5 || rep.PerCall.ServerCPUMs != 3 {
		t.Fatalf("work per call %+v, want 1 PDP request, 2 write transactions, 0.5 Cloudflare requests, 3 ms of server CPU", rep.PerCall)
	}
	var out bytes.Buffer
	printLoadReport(&out, rep)
	if !strings.Contains(out.String(), "2.00 ledger write transactions") || !strings.Contains(out.String(), "3.00 ms of server CPU") {
		t.Fatalf("report text:\n%s", out.String())
	}
}

func TestParseClientCounts(t *testing.T) {
	t.Parallel()
	if got, err := parseClientCounts("1, 4,16,32"); err != nil || len(got) != 4 || got[3] != 32 {
		t.Fatalf("parseClientCounts: %v %v", got, err)
	}
	for _, bad := range []string{"", "0", "1,,2", "x", "2000"} {
		if _, err := parseClientCounts(bad); err == nil || !strings.Contains(err.Error(), "1 to 1024") {
			t.Errorf("parseClientCounts(%q): %v", bad, err)
		}
	}
	if got := metricsURLOf("http://127.0.0.1:8787/mcp?x=1"); got != "http://127.0.0.1:8787/metrics" {
		t.Fatalf("metricsURLOf: %s", got)
	}
}

// TestComparePDPReplaysTheServersRequests: the raw side of --compare-pdp
// makes as many PDP requests per call as the uncached server does for the
// same estimate (so the ratio compares like with like), and the cached
// server answers from its decision cache.
func TestComparePDPReplaysTheServersRequests(t *testing.T) {
	t.Parallel()
	bin := tollgateBinary(t)
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "load", "--spawn", "--compare-pdp", "--client-counts", "2", "--rounds", "1",
		"--duration", "500ms", "--policies", filepath.Join(root, "cerbos-policies"), "--json")
	cmd.Env = append(cmd.Environ(), "TOLLGATE_CERBOS_BIN="+filepath.Join(root, ".tools", "bin", "cerbos"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tollgate load --compare-pdp: %v\n%s", err, stderr.String())
	}
	var rep compareReport
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("%v in %s", err, out)
	}
	// The server's figure is per call over a short run, so a request of its
	// own (at start, say) shows as 2.01: a tenth is the tolerance.
	if rep.RawRequests != 2 || rep.PerCall == nil || math.Abs(rep.PerCall.PDPRequests-2) > 0.1 {
		t.Fatalf("raw calls make %d PDP requests, the uncached server %+v per call; want 2 each (the agent's checks, the approver's eligibility)", rep.RawRequests, rep.PerCall)
	}
	if rep.CachedPerCall == nil || rep.CachedPerCall.PDPRequests >= 0.5 {
		t.Fatalf("the cached server made %+v PDP requests per call, want most calls answered from its cache", rep.CachedPerCall)
	}
	if len(rep.Rows) != 1 || rep.Rows[0].RawMedian <= 0 || rep.Rows[0].ToolMedian <= 0 || rep.Rows[0].CachedMedian <= 0 {
		t.Fatalf("rows: %+v", rep.Rows)
	}
}
