package server

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
	dto "github.com/prometheus/client_model/go"

	slackchan "github.com/tollgatehq/tollgate/approvals/slack"
	"github.com/tollgatehq/tollgate/authz"
	"github.com/tollgatehq/tollgate/cloudflare"
	"github.com/tollgatehq/tollgate/cloudflare/sandbox"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/tools"
)

// The benchmarks run the same real parts as the tests (managed Cerbos PDP,
// SQLite file, sandbox over loopback HTTP, slacktest) and report latency
// percentiles with b.ReportMetric. Figures are for the README; nothing here
// asserts a duration.

// newBenchEnv is newEnv for benchmarks, with the server's logs discarded.
func newBenchEnv(tb testing.TB, opts ...envOption) *testEnv {
	tb.Helper()
	// The sandbox reports a limit no benchmark reaches: at Cloudflare's
	// 1,200 requests per 5 minutes, a second of preview deploys would spend
	// it, and tollgate's request budget would refuse the rest.
	unlimited := withRateLimit(sandbox.RateLimit{Requests: 10_000_000, Window: 5 * time.Minute})
	return newEnv(tb, append([]envOption{withQuietLogs(), unlimited}, opts...)...)
}

// benchInProcessClient is an initialised mcp-go client on the server, in process.
func benchInProcessClient(tb testing.TB, e *testEnv) *client.Client {
	tb.Helper()
	c, err := client.NewInProcessClient(e.srv.MCP())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	if err := c.Start(context.Background()); err != nil {
		tb.Fatal(err)
	}
	benchInitialize(tb, c)
	return c
}

// benchHTTPClient is an initialised mcp-go streamable HTTP client on url.
// Each client gets its own connection pool, as separate agents would: the
// shared default transport keeps only two idle connections per host, which
// would make concurrent clients reconnect on every call.
func benchHTTPClient(tb testing.TB, url string) *client.Client {
	tb.Helper()
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4, IdleConnTimeout: time.Minute}}
	c, err := client.NewStreamableHttpClient(url, transport.WithHTTPBasicClient(hc))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close(); hc.CloseIdleConnections() })
	if err := c.Start(context.Background()); err != nil {
		tb.Fatal(err)
	}
	benchInitialize(tb, c)
	return c
}

func benchInitialize(tb testing.TB, c *client.Client) {
	tb.Helper()
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = mcp.LATEST_PROTOCOL_VERSION
	init.Params.ClientInfo = mcp.Implementation{Name: "tollgate-bench", Version: "1"}
	if _, err := c.Initialize(context.Background(), init); err != nil {
		tb.Fatal(err)
	}
}

// benchCall calls a tool and fails the benchmark on a transport error or an
// error result: a benchmark of refusals would measure the wrong path.
func benchCall(tb testing.TB, ctx context.Context, c *client.Client, tool string, args any) *mcp.CallToolResult {
	tb.Helper()
	res, err := benchTry(ctx, c, tool, args)
	if err != nil {
		tb.Fatal(err)
	}
	return res
}

// benchDecode decodes structured content (or any JSON-able value) into T.
func benchDecode[T any](tb testing.TB, v any) T {
	tb.Helper()
	var out T
	raw, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		tb.Fatalf("decode %s: %v", raw, err)
	}
	return out
}

func benchTry(ctx context.Context, c *client.Client, tool string, args any) (*mcp.CallToolResult, error) {
	req := mcp.CallToolRequest{}
	req.Params.Name = tool
	req.Params.Arguments = args
	res, err := c.CallTool(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", tool, err)
	}
	if res.IsError {
		return res, fmt.Errorf("%s returned an error result: %s", tool, text(res))
	}
	return res, nil
}

// benchLatencies collects per-call durations from any number of goroutines.
type benchLatencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *benchLatencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

// report adds p50 and p99 (µs) to the benchmark's figures.
func (l *benchLatencies) report(b *testing.B) {
	b.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return
	}
	slices.Sort(l.d)
	b.ReportMetric(benchMicros(benchPercentile(l.d, 0.50)), "p50-µs")
	b.ReportMetric(benchMicros(benchPercentile(l.d, 0.99)), "p99-µs")
}

// benchPercentile is the nearest-rank percentile of sorted samples.
func benchPercentile(sorted []time.Duration, p float64) time.Duration {
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func benchMicros(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

var benchEstimateArgs = map[string]map[string]any{
	// A live registrar quote: a token minted for it, domain-check, revoke.
	"register_domain": {"action": "register_domain", "params": map[string]any{"domain": "bench-quote.dev"}},
	// The configured Workers price book: no Cloudflare request at all.
	"deploy_worker": {"action": "deploy_worker", "params": map[string]any{
		"script_name": "web-bench", "module": okModule, "compatibility_date": "2025-01-01", "environment": "preview",
	}},
}

// BenchmarkEstimateCostInProcess is one estimate_cost round trip through an
// in-process mcp-go client: JSON-RPC, audit of the call, two Cerbos checks
// (estimate, then the real action), the plan, a budget dry run and the
// result's JSON. register_domain adds a live quote under a minted token;
// deploy_worker prices from the configured book.
func BenchmarkEstimateCostInProcess(b *testing.B) {
	e := newBenchEnv(b)
	c := benchInProcessClient(b, e)
	ctx := e.ctxAs(webBot)
	for _, action := range []string{"register_domain", "deploy_worker"} {
		b.Run(action, func(b *testing.B) {
			args := benchEstimateArgs[action]
			benchCall(b, ctx, c, "estimate_cost", args) // warm caches (permission groups)
			var lat benchLatencies
			b.ReportAllocs()
			for b.Loop() {
				start := time.Now()
				res := benchCall(b, ctx, c, "estimate_cost", args)
				lat.add(time.Since(start))
				if est := benchDecode[tools.EstimateResult](b, res.StructuredContent); !est.Policy.Allowed {
					b.Fatalf("estimate refused by policy: %+v", est.Policy)
				}
			}
			lat.report(b)
		})
	}
}

// BenchmarkEstimateCostStreamableHTTP drives estimate_cost (live registrar
// quote) over streamable HTTP with 1, 4 and 16 concurrent mcp-go clients,
// each its own MCP session and connection, against httptest.NewServer on the
// server's real handler (auth none, Host/Origin checks, audit middleware).
func BenchmarkEstimateCostStreamableHTTP(b *testing.B) {
	e := newBenchEnv(b)
	hs := httptest.NewServer(e.srv.Handler())
	b.Cleanup(hs.Close)
	args := benchEstimateArgs["register_domain"]
	counts := []int{1, 4, 16}
	// The clients belong to the parent: a sub-benchmark runs several times
	// (growing b.N) and its cleanups run after each run.
	clients := make([]*client.Client, counts[len(counts)-1])
	for i := range clients {
		clients[i] = benchHTTPClient(b, hs.URL+"/mcp")
		benchCall(b, context.Background(), clients[i], "estimate_cost", args)
	}
	for _, n := range counts {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			var (
				lat     benchLatencies
				next    atomic.Int64
				failed  atomic.Pointer[error]
				workers sync.WaitGroup
			)
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for _, c := range clients[:n] {
				workers.Go(func() {
					for next.Add(1) <= int64(b.N) {
						t0 := time.Now()
						if _, err := benchTry(context.Background(), c, "estimate_cost", args); err != nil {
							failed.CompareAndSwap(nil, &err)
							return
						}
						lat.add(time.Since(t0))
					}
				})
			}
			workers.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			if err := failed.Load(); err != nil {
				b.Fatal(*err)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "calls/s")
			lat.report(b)
		})
	}
}

// BenchmarkPolicyCheckOverhead separates what authorization costs inside a
// read-only tool call. For get_operation (one Check):
//
//	tool_call      the whole call through an in-process mcp-go client
//	authorize      Pipeline.Authorize alone: the Cerbos check plus the
//	               policy.decision audit event, the step every call performs
//	cerbos_check   the PDP round trip alone (same principal and resource)
//
// tool_call also reports decision-µs/op, the time Cerbos took inside those
// very calls (from the decision-latency histogram the server keeps).
//
// For list_operations with a page of 20 operations:
//
//	tool_call          the whole call (one CheckBatch for the page)
//	check_batch        that CheckBatch alone
//	checks_one_by_one  the same 20 decisions as 20 Checks, what batching saves
func BenchmarkPolicyCheckOverhead(b *testing.B) {
	e := newBenchEnv(b, withConfig(func(c *Config) { c.Approvals.Wait = 0 }))
	c := benchInProcessClient(b, e)
	ctx := e.ctxAs(webBot)
	const page = 20
	var ids []string
	for i := range page {
		v := benchDecode[tools.OperationView](b, benchCall(b, ctx, c, "register_domain", registerArgs(fmt.Sprintf("bench-page-%02d.dev", i))).StructuredContent)
		if v.Status != "awaiting_approval" {
			b.Fatalf("setup: operation %s is %s (%s)", v.OperationID, v.Status, v.Error)
		}
		ids = append(ids, v.OperationID)
	}
	op, err := e.db.Operation(context.Background(), ids[0])
	if err != nil {
		b.Fatal(err)
	}
	a, _ := e.cfg.agent(webBot)
	principal := e.srv.pipe.principal(principalFromConfig(a, "inprocess"), ledger.ClientInfo{
		Transport: "inprocess", Name: "tollgate-bench", Version: "1", SessionID: "bench-session",
	})

	b.Run("get_operation/tool_call", func(b *testing.B) {
		benchCall(b, ctx, c, "get_operation", map[string]any{"operation_id": op.ID})
		sum0, n0 := benchDecisionTotals(b, e, "operation", "read")
		var lat benchLatencies
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			// Every read is audited against its operation; spreading the
			// reads keeps each operation's event list near its real size.
			args := map[string]any{"operation_id": ids[i%page]}
			start := time.Now()
			benchCall(b, ctx, c, "get_operation", args)
			lat.add(time.Since(start))
		}
		lat.report(b)
		sum1, n1 := benchDecisionTotals(b, e, "operation", "read")
		if n1 > n0 {
			b.ReportMetric((sum1-sum0)/float64(n1-n0)*1e6, "decision-µs/op")
		}
	})
	b.Run("get_operation/authorize", func(b *testing.B) {
		res := operationResource(op)
		var lat benchLatencies
		b.ReportAllocs()
		for b.Loop() {
			start := time.Now()
			d := e.srv.Pipeline().Authorize(ctx, res, "read")
			lat.add(time.Since(start))
			if !d.Allowed {
				b.Fatalf("decision: %+v", d)
			}
		}
		lat.report(b)
	})
	b.Run("get_operation/cerbos_check", func(b *testing.B) {
		res := operationResource(op)
		var lat benchLatencies
		b.ReportAllocs()
		for b.Loop() {
			start := time.Now()
			d := e.az.Check(ctx, principal, res, "read")["read"]
			lat.add(time.Since(start))
			if !d.Allowed {
				b.Fatalf("decision: %+v", d)
			}
		}
		lat.report(b)
	})

	ops, _, err := e.db.ListOperations(context.Background(), ledger.OperationQuery{Agent: webBot, Limit: page})
	if err != nil || len(ops) != page {
		b.Fatalf("setup: %d operations, want %d (%v)", len(ops), page, err)
	}
	checks := make([]authz.Check, len(ops))
	for i, op := range ops {
		checks[i] = authz.Check{Resource: operationResource(op), Actions: []string{"read"}}
	}
	b.Run("list_operations/tool_call", func(b *testing.B) {
		listArgs := map[string]any{"limit": page}
		var lat benchLatencies
		b.ReportAllocs()
		for b.Loop() {
			start := time.Now()
			res := benchCall(b, ctx, c, "list_operations", listArgs)
			lat.add(time.Since(start))
			if l := benchDecode[tools.OperationList](b, res.StructuredContent); len(l.Operations) != page {
				b.Fatalf("listed %d operations, want %d", len(l.Operations), page)
			}
		}
		lat.report(b)
	})
	b.Run("list_operations/check_batch", func(b *testing.B) {
		var lat benchLatencies
		b.ReportAllocs()
		for b.Loop() {
			start := time.Now()
			ds := e.az.CheckBatch(ctx, principal, checks)
			lat.add(time.Since(start))
			if len(ds) != page || !ds[page-1][0].Allowed {
				b.Fatalf("batch: %+v", ds)
			}
		}
		lat.report(b)
	})
	b.Run("list_operations/checks_one_by_one", func(b *testing.B) {
		var lat benchLatencies
		b.ReportAllocs()
		for b.Loop() {
			start := time.Now()
			for _, ch := range checks {
				if d := e.az.Check(ctx, principal, ch.Resource, "read")["read"]; !d.Allowed {
					b.Fatalf("decision: %+v", d)
				}
			}
			lat.add(time.Since(start))
		}
		lat.report(b)
	})
}

// benchDecisionTotals reads the server's decision-latency histogram: total
// seconds and count of decisions for one resource kind and action.
func benchDecisionTotals(b *testing.B, e *testEnv, kind, action string) (float64, uint64) {
	b.Helper()
	mfs, err := e.srv.metrics.registry.Gather()
	if err != nil {
		b.Fatal(err)
	}
	var sum float64
	var n uint64
	for _, mf := range mfs {
		if mf.GetName() != "tollgate_policy_decision_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if benchLabelIs(m, "kind", kind) && benchLabelIs(m, "action", action) {
				sum += m.GetHistogram().GetSampleSum()
				n += m.GetHistogram().GetSampleCount()
			}
		}
	}
	return sum, n
}

func benchLabelIs(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue() == value
		}
	}
	return false
}

// BenchmarkApprovalClickToResult is the time from a signed Slack Approve
// click arriving at POST /slack/interactions until the register_domain call
// that was waiting for it returns the registration result to its MCP client.
// Both travel over loopback HTTP to the server's real handler: the tool call
// over streamable HTTP, the click form-encoded and signed as Slack signs it.
// In between: signature and replay checks, Cerbos deciding the approver, the
// vote, the approval binding, a token minted for the registration, the price
// re-check and registration at the sandbox, the revoke, the settlement and
// the Slack message update. Setup of each round (the call, its quote, the
// approval message) is outside the timer.
func BenchmarkApprovalClickToResult(b *testing.B) {
	var (
		rig   *benchClickRig
		round int
	)
	var toResult, clickHTTP benchLatencies
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		// The sandbox account owns at most 100 domains: start afresh well before.
		if rig == nil || rig.registered >= 90 {
			rig = newBenchClickRig(b)
		}
		round++
		domain := fmt.Sprintf("click-bench-%d.dev", round)
		done := make(chan benchOutcome, 1)
		go func() {
			res, err := benchTry(context.Background(), rig.mcp, "register_domain", registerArgs(domain))
			done <- benchOutcome{res, err, time.Now()}
		}()
		reqID := rig.awaitApprovalRequest(b, domain)
		body, ts, sig := rig.signedClick(b, "U0BOB", slackchan.ActionIDApprove, reqID)
		b.StartTimer()

		start := time.Now()
		resp, err := rig.postClick(body, ts, sig)
		clicked := time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		out := <-done
		b.StopTimer()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("click answered %s", resp.Status)
		}
		if out.err != nil {
			b.Fatal(out.err)
		}
		v := benchDecode[tools.OperationView](b, out.res.StructuredContent)
		reg := benchDecode[tools.RegisterResult](b, v.Result)
		if v.Status != "succeeded" || reg.Domain != domain {
			b.Fatalf("call returned %s (%s), result %v; want the registration of %s", v.Status, v.Error, reg, domain)
		}
		rig.registered++
		toResult.add(out.at.Sub(start))
		clickHTTP.add(clicked)
		b.StartTimer()
	}
	toResult.report(b)
	clickHTTP.mu.Lock()
	slices.Sort(clickHTTP.d)
	b.ReportMetric(benchMicros(benchPercentile(clickHTTP.d, 0.50)), "click-answered-p50-µs")
	clickHTTP.mu.Unlock()
}

type benchOutcome struct {
	res *mcp.CallToolResult
	err error
	at  time.Time
}

// benchClickRig is a server with Slack configured, reachable over loopback HTTP,
// with one MCP client waiting long enough for any click.
type benchClickRig struct {
	e          *testEnv
	http       *httptest.Server
	mcp        *client.Client
	clicks     *http.Client
	registered int
}

func newBenchClickRig(b *testing.B) *benchClickRig {
	b.Helper()
	e := newBenchEnv(b, withSlack(), withConfig(func(c *Config) { c.Approvals.Wait = 30 * time.Second }))
	r := &benchClickRig{e: e, http: httptest.NewServer(e.srv.Handler())}
	b.Cleanup(r.http.Close)
	r.mcp = benchHTTPClient(b, r.http.URL+"/mcp")
	r.clicks = &http.Client{Timeout: 30 * time.Second}
	return r
}

// awaitApprovalRequest polls until the operation for domain waits for a
// human, and returns its approval request id (the Approve button's value).
func (r *benchClickRig) awaitApprovalRequest(b *testing.B, domain string) string {
	b.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		ops, _, err := r.e.db.ListOperations(ctx, ledger.OperationQuery{Agent: webBot, States: []ledger.State{ledger.StateAwaitingApproval}})
		if err != nil {
			b.Fatal(err)
		}
		for _, op := range ops {
			if op.Resource == "domain:"+domain {
				if req, err := r.e.srv.Approvals().ByOperation(ctx, op.ID); err == nil {
					if ref, _ := r.e.srv.Approvals().PostRef(ctx, req.ID, slackchan.Name); ref != "" {
						return req.ID
					}
				}
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	b.Fatalf("no approval request posted to Slack for %s", domain)
	return ""
}

var benchClickSeq atomic.Int64

// signedClick is a block_actions payload for one button, form-encoded and
// signed with the signing secret exactly as Slack sends it.
func (r *benchClickRig) signedClick(b *testing.B, userID, actionID, requestID string) (body, ts, sig string) {
	b.Helper()
	n := benchClickSeq.Add(1)
	payload := map[string]any{
		"type":       "block_actions",
		"user":       map[string]any{"id": userID, "username": strings.ToLower(userID), "name": strings.ToLower(userID), "team_id": "T0TOLLGATE"},
		"api_app_id": "A0TOLLGATE",
		"token":      "verification-token-unused",
		"container":  map[string]any{"type": "message", "message_ts": "1790000000.000001", "channel_id": r.e.cfg.Slack.Channel, "is_ephemeral": false},
		"trigger_id": fmt.Sprintf("13345224609.738474920.%016x", n),
		"team":       map[string]any{"id": "T0TOLLGATE", "domain": "tollgate"},
		"channel":    map[string]any{"id": r.e.cfg.Slack.Channel, "name": "approvals"},
		"message":    map[string]any{"type": "message", "user": "U0BOT", "ts": "1790000000.000001", "bot_id": "B0BOT", "text": "Approval needed"},
		"state":      map[string]any{"values": map[string]any{}},
		"actions": []any{map[string]any{
			"action_id": actionID, "block_id": slackchan.BlockActions, "value": requestID, "type": "button", "style": "primary",
			"text": map[string]any{"type": "plain_text", "text": "Approve", "emoji": true}, "action_ts": fmt.Sprintf("1790000123.%06d", n),
		}},
		"response_url": "https://hooks.slack.com/actions/T0TOLLGATE/1/abc",
	}
	js, err := json.Marshal(payload)
	if err != nil {
		b.Fatal(err)
	}
	body = url.Values{"payload": {string(js)}}.Encode()
	ts = strconv.FormatInt(time.Now().Unix(), 10)
	mac := hmac.New(sha256.New, []byte(r.e.secret))
	mac.Write([]byte("v0:" + ts + ":" + body))
	return body, ts, "v0=" + hex.EncodeToString(mac.Sum(nil))
}

func (r *benchClickRig) postClick(body, ts, sig string) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodPost, r.http.URL+"/slack/interactions", strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Slack-Request-Timestamp", ts)
	req.Header.Set("X-Slack-Signature", sig)
	resp, err := r.clicks.Do(req)
	if err != nil {
		return nil, fmt.Errorf("post click: %w", err)
	}
	_ = resp.Body.Close()
	return resp, nil
}

// BenchmarkExecutionTokenOverhead is what a per-operation Cloudflare token
// adds to an execution, against the same sandbox the server uses:
//
//	mint_revoke     Broker.Session + Session.Close (POST and DELETE tokens,
//	                permission groups cached, each request audited)
//	with_session    the wrapper every execution runs in: mint_revoke plus
//	                the token.minted and token.revoked audit events
//	preview_deploy  a whole deploy_worker call to preview (no approval
//	                needed): plan, two Cerbos checks, reserve, mint, upload,
//	                revoke, settle, with its result
//
// Reusing a session across executions is not available by design, so the
// overhead is with_session against preview_deploy.
func BenchmarkExecutionTokenOverhead(b *testing.B) {
	e := newBenchEnv(b)
	ctx := context.Background()
	b.Run("mint_revoke", func(b *testing.B) {
		var lat benchLatencies
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			start := time.Now()
			s, err := e.srv.broker.Session(ctx, cloudflare.PurposeDeploy, fmt.Sprintf("bench-%d", i))
			if err != nil {
				b.Fatal(err)
			}
			if err := s.Close(ctx); err != nil {
				b.Fatal(err)
			}
			lat.add(time.Since(start))
		}
		lat.report(b)
	})
	b.Run("with_session", func(b *testing.B) {
		var lat benchLatencies
		b.ReportAllocs()
		for b.Loop() {
			start := time.Now()
			if err := e.srv.Pipeline().withSession(ctx, cloudflare.PurposeDeploy, "", func(*cloudflare.Session) error { return nil }); err != nil {
				b.Fatal(err)
			}
			lat.add(time.Since(start))
		}
		lat.report(b)
	})
	b.Run("preview_deploy", func(b *testing.B) {
		c := benchInProcessClient(b, e)
		actx := e.ctxAs(webBot)
		var lat benchLatencies
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			args := map[string]any{
				"script_name": "web-bench", "module": okModule, "compatibility_date": "2025-01-01",
				"environment": "preview", "reason": reason, "idempotency_key": fmt.Sprintf("bench-deploy-%d", i),
			}
			start := time.Now()
			res := benchCall(b, actx, c, "deploy_worker", args)
			lat.add(time.Since(start))
			if v := benchDecode[tools.OperationView](b, res.StructuredContent); v.Status != "succeeded" {
				b.Fatalf("deploy %s: %s", v.Status, v.Error)
			}
		}
		lat.report(b)
	})
	if n := e.srv.broker.Alive(); n != 0 {
		b.Fatalf("%d minted tokens still alive after the benchmark", n)
	}
}

// BenchmarkPreviewDeployOverhead is what tollgate itself adds to a preview
// deploy_worker called through an in-process MCP client: each call's latency
// less the time its PDP requests and its Cloudflare requests took, both from
// the server's own histograms read before and after the call (calls run one
// at a time). A PDP request's time is recorded once per check it carries,
// so the decision histogram's sum is scaled by requests per check.
func BenchmarkPreviewDeployOverhead(b *testing.B) {
	e := newBenchEnv(b)
	c := benchInProcessClient(b, e)
	actx := e.ctxAs(webBot)
	external := func() time.Duration {
		mfs, err := e.srv.metrics.registry.Gather()
		if err != nil {
			b.Fatal(err)
		}
		var pdpSum, cfSum float64
		var checks uint64
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				switch mf.GetName() {
				case "tollgate_policy_decision_seconds":
					pdpSum += m.GetHistogram().GetSampleSum()
					checks += m.GetHistogram().GetSampleCount()
				case "tollgate_cloudflare_request_seconds":
					cfSum += m.GetHistogram().GetSampleSum()
				}
			}
		}
		pdp := 0.0
		if checks > 0 {
			pdp = pdpSum * float64(e.az.Stats().Requests) / float64(checks)
		}
		return time.Duration((pdp + cfSum) * float64(time.Second))
	}
	deploy := func(i int) time.Duration {
		args := map[string]any{
			"script_name": fmt.Sprintf("web-overhead-%d", i%50), "module": okModule, "compatibility_date": "2025-01-01",
			"environment": "preview", "reason": reason, "idempotency_key": fmt.Sprintf("bench-overhead-%d", i),
		}
		start := time.Now()
		res := benchCall(b, actx, c, "deploy_worker", args)
		d := time.Since(start)
		if v := benchDecode[tools.OperationView](b, res.StructuredContent); v.Status != "succeeded" {
			b.Fatalf("deploy %s: %s", v.Status, v.Error)
		}
		return d
	}
	deploy(-1) // warm: permission groups, prepared statements
	var whole, overhead benchLatencies
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		x0 := external()
		d := deploy(i)
		x := external() - x0
		whole.add(d)
		overhead.add(d - x)
	}
	whole.report(b)
	overhead.mu.Lock()
	defer overhead.mu.Unlock()
	slices.Sort(overhead.d)
	b.ReportMetric(benchMicros(benchPercentile(overhead.d, 0.50)), "overhead-p50-µs")
	b.ReportMetric(benchMicros(benchPercentile(overhead.d, 0.99)), "overhead-p99-µs")
}
