package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/tollgatehq/tollgate/server"
)

// loadSampleArgs are the arguments used for the read-only tools when --args
// is not given. get_operation has none: it needs an existing operation id.
var loadSampleArgs = map[string]string{
	"estimate_cost":   `{"action":"register_domain","params":{"domain":"load-test.dev"}}`,
	"check_domain":    `{"domain":"load-test.dev"}`,
	"list_operations": `{"limit":20}`,
	"spend_status":    `{}`,
}

// loadOptions is one load run.
type loadOptions struct {
	URL           string
	Token         string
	Clients       int
	Duration      time.Duration
	Timeout       time.Duration
	Tool          string
	Args          map[string]any
	AllowMutating bool
	// MaxCalls, when positive, ends the run after that many calls in all
	// instead of after Duration.
	MaxCalls int
	// Warn receives notes for the operator (a refused probe call, say).
	Warn io.Writer
}

// loadReport is what a run measured. Latencies cover every call that got an
// answer, error results included; failed calls have none.
type loadReport struct {
	URL         string   `json:"url"`
	Tool        string   `json:"tool"`
	Clients     int      `json:"clients"`
	DurationS   float64  `json:"duration_s"`
	Calls       int      `json:"calls"`
	OK          int      `json:"ok"`
	ToolErrors  int      `json:"tool_errors"`
	Errors      int      `json:"errors"`
	CallsPerS   float64  `json:"calls_per_s"`
	P50Ms       float64  `json:"p50_ms"`
	P90Ms       float64  `json:"p90_ms"`
	P99Ms       float64  `json:"p99_ms"`
	MaxMs       float64  `json:"max_ms"`
	FirstErrors []string `json:"first_errors,omitempty"`
	// PerCall is the server's work per call, from its /metrics counters
	// before and after the run (nil when /metrics cannot be read).
	PerCall *loadWork `json:"per_call,omitempty"`
	// ServerRSSMiB is the spawned server's resident memory after the run.
	ServerRSSMiB float64 `json:"server_rss_mib,omitempty"`
}

// loadWork is what one call cost the server, on average.
type loadWork struct {
	PDPRequests        float64 `json:"pdp_requests"`
	WriteTransactions  float64 `json:"write_transactions"`
	CloudflareRequests float64 `json:"cloudflare_requests"`
	// ServerCPUMs is the server process's CPU time (user and system, every
	// goroutine: background work too) per call, in milliseconds; 0 when
	// the server does not export process_cpu_seconds_total.
	ServerCPUMs float64 `json:"server_cpu_ms,omitempty"`
}

// runLoad is `tollgate load`: a fixed number of MCP clients call one tool
// back to back over streamable HTTP for a fixed time, then it prints
// calls/s, latency percentiles and errors. It exits non-zero when any call
// failed (an error result from the tool is an answer, counted apart).
func runLoad(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlagSet("load", "drive a tollgate server over streamable HTTP with concurrent MCP clients and report calls/s and latency")
	rawURL := fs.String("url", "http://127.0.0.1:8787/mcp", "streamable HTTP endpoint of the server")
	clients := fs.Int("clients", 8, "concurrent MCP clients, each with its own session and connection (1-1024)")
	duration := fs.Duration("duration", 10*time.Second, "how long to start new calls; the run then stops by itself (with --compare-pdp: each measurement)")
	calls := fs.Int("calls", 0, "stop after this many calls in all (0: run for --duration); e.g. --calls 10000 to read the server's memory after them")
	compare := fs.Bool("compare-pdp", false, "with --spawn: start a managed Cerbos PDP, point the server at it, and measure raw CheckResources with tollgate's own requests beside the tool (estimate_cost) at each --client-counts, in interleaved --rounds; prints the ratio")
	counts := fs.String("client-counts", "1,4,16,32", "with --compare-pdp: the client counts to measure, comma-separated")
	rounds := fs.Int("rounds", 3, "with --compare-pdp: interleaved rounds per client count (the ratio reported is their median)")
	policies := fs.String("policies", "cerbos-policies", "with --compare-pdp: the policy folder the PDP serves")
	timeout := fs.Duration("timeout", 30*time.Second, "timeout of each call")
	tool := fs.String("tool", "estimate_cost", "the tool to call")
	rawArgs := fs.String("args", "", "the tool's arguments as a JSON object (default: a sample for "+strings.Join(slices.Sorted(maps.Keys(loadSampleArgs)), ", ")+")")
	token := fs.String("token", "", "agent bearer token, for a server with --auth tokens (TOLLGATE_TOKEN)")
	allowMutating := fs.Bool("allow-mutating", false, "allow a tool that is not read-only: each call may spend money and wait for an approval")
	spawn := fs.Bool("spawn", false, "start a throwaway tollgate serve (sandbox, auth none, temporary database, loopback) for the run and stop it afterwards; --url is ignored")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	cpuProfile := fs.String("cpuprofile", "", "with --spawn: write the spawned server's CPU profile (go tool pprof) to this file when it stops")
	memProfile := fs.String("memprofile", "", "with --spawn: write the spawned server's heap profile (go tool pprof) to this file when the run ends")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("load takes no arguments, got %q", fs.Args())}
	}
	if *token == "" {
		*token = os.Getenv("TOLLGATE_TOKEN")
	}
	o := loadOptions{
		URL: *rawURL, Token: *token, Clients: *clients, Duration: *duration, Timeout: *timeout,
		Tool: *tool, AllowMutating: *allowMutating, Warn: os.Stderr, MaxCalls: *calls,
	}
	var argsErr error
	o.Args, argsErr = loadArgs(*tool, *rawArgs)
	var cmpErr error
	var clientCounts []int
	if *compare {
		clientCounts, cmpErr = parseClientCounts(*counts)
		switch {
		case cmpErr != nil:
		case !*spawn:
			cmpErr = errors.New("--compare-pdp needs --spawn: the server must use the PDP the run measures")
		case *tool != "estimate_cost":
			cmpErr = fmt.Errorf("--compare-pdp measures estimate_cost, not %s", *tool)
		case *rounds < 1 || *rounds > 20:
			cmpErr = fmt.Errorf("--rounds %d: use 1 to 20", *rounds)
		case *calls != 0:
			cmpErr = errors.New("--compare-pdp runs each measurement for --duration; --calls does not apply")
		}
	}
	if *calls < 0 {
		cmpErr = errors.Join(cmpErr, fmt.Errorf("--calls %d: use 0 (run for --duration) or a positive count", *calls))
	}
	if *cpuProfile != "" && !*spawn {
		cmpErr = errors.Join(cmpErr, errors.New("--cpuprofile needs --spawn: it profiles the server the run starts"))
	}
	if *memProfile != "" && !*spawn {
		cmpErr = errors.Join(cmpErr, errors.New("--memprofile needs --spawn: it profiles the server the run starts"))
	}
	if err := errors.Join(argsErr, cmpErr, o.validate(!*spawn)); err != nil {
		return usageError{err.Error()}
	}
	if *cpuProfile != "" {
		// The spawned server inherits the environment and profiles itself
		// from start to stop.
		abs, err := filepath.Abs(*cpuProfile)
		if err != nil {
			return usageError{fmt.Sprintf("--cpuprofile %s: %v", *cpuProfile, err)}
		}
		if err := os.Setenv(cpuProfileEnv, abs); err != nil {
			return err
		}
	}
	if *memProfile != "" {
		abs, err := filepath.Abs(*memProfile)
		if err != nil {
			return usageError{fmt.Sprintf("--memprofile %s: %v", *memProfile, err)}
		}
		if err := os.Setenv(memProfileEnv, abs); err != nil {
			return err
		}
	}
	if *compare {
		return runComparePDP(ctx, o, compareOptions{Counts: clientCounts, Rounds: *rounds, Policies: *policies, JSON: *asJSON}, out)
	}
	var srv *spawnedServer
	if *spawn {
		var err error
		if srv, err = spawnServer(ctx, os.Stderr, ""); err != nil {
			return err
		}
		defer srv.stop()
		o.URL = srv.url
	}
	rep, err := runLoadTest(ctx, o)
	if err != nil {
		return err
	}
	if srv != nil {
		rep.ServerRSSMiB = srv.rssMiB()
	}
	if *asJSON {
		if err := printJSON(out, rep); err != nil {
			return err
		}
	} else {
		printLoadReport(out, rep)
	}
	if rep.Errors > 0 {
		return fmt.Errorf("%d of %d calls failed (first: %s)", rep.Errors, rep.Calls, rep.FirstErrors[0])
	}
	return nil
}

// loadArgs is --args as a JSON object, or the tool's sample arguments.
func loadArgs(tool, raw string) (map[string]any, error) {
	if raw == "" {
		sample, ok := loadSampleArgs[tool]
		if !ok {
			return nil, fmt.Errorf("--args is required for tool %q: there are sample arguments only for %s", tool, strings.Join(slices.Sorted(maps.Keys(loadSampleArgs)), ", "))
		}
		raw = sample
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(raw), &m); err != nil || m == nil {
		return nil, fmt.Errorf("--args must be a JSON object such as '{\"domain\":\"example.dev\"}'; got %.80q", raw)
	}
	return m, nil
}

// validate reports every problem at once, each with what is allowed. The
// URL is not checked when the run starts its own server.
func (o loadOptions) validate(checkURL bool) error {
	var errs []error
	if u, err := url.Parse(o.URL); checkURL && (err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "") {
		errs = append(errs, fmt.Errorf("--url %q: an http:// or https:// URL of the server's streamable HTTP endpoint, e.g. http://127.0.0.1:8787/mcp", o.URL))
	}
	if o.Clients < 1 || o.Clients > 1024 {
		errs = append(errs, fmt.Errorf("--clients %d: from 1 to 1024", o.Clients))
	}
	if o.Duration <= 0 || o.Duration > 24*time.Hour {
		errs = append(errs, fmt.Errorf("--duration %s: a positive Go duration up to 24h, e.g. 10s", o.Duration))
	}
	if o.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("--timeout %s: a positive Go duration, e.g. 30s", o.Timeout))
	}
	if strings.TrimSpace(o.Tool) == "" {
		errs = append(errs, errors.New("--tool: the name of a tool the server lists, e.g. estimate_cost"))
	}
	return errors.Join(errs...)
}

// runLoadTest connects the clients, checks the tool, then has every client
// call it back to back until the duration is over (each at least once). Calls
// in flight at the end finish (within their timeout) and count; a cancelled
// ctx stops early and reports what was measured.
func runLoadTest(ctx context.Context, o loadOptions) (loadReport, error) {
	if o.Warn == nil {
		o.Warn = io.Discard
	}
	rep := loadReport{URL: o.URL, Tool: o.Tool, Clients: o.Clients}
	conns := make([]*loadConn, 0, o.Clients)
	defer func() {
		for _, c := range conns {
			_ = c.c.Close()
		}
	}()
	for i := range o.Clients {
		c, err := loadClient(ctx, o)
		if err != nil {
			return rep, fmt.Errorf("connect client %d of %d to %s: %w", i+1, o.Clients, o.URL, err)
		}
		conns = append(conns, c)
	}
	if err := checkLoadTool(ctx, conns[0].c, o); err != nil {
		return rep, err
	}
	// One probe call, so a refusal is visible before the numbers are.
	pctx, cancel := context.WithTimeout(ctx, o.Timeout)
	res, err := conns[0].call(pctx)
	cancel()
	if err != nil {
		return rep, fmt.Errorf("probe call to %s: %w", o.Tool, err)
	}
	if res.IsError {
		fmt.Fprintf(o.Warn, "note: %s answers with an error result, so the run measures that refusal: %s\n", o.Tool, loadClip(res.text(), 300))
	}
	metricsURL := metricsURLOf(o.URL)
	before, metricsErr := scrapeWork(ctx, metricsURL, o.Token)

	var (
		mu        sync.Mutex
		lat       []time.Duration
		firstErrs []string
		workers   sync.WaitGroup
	)
	var started atomic.Int64
	start := time.Now()
	end := start.Add(o.Duration)
	for _, c := range conns {
		workers.Go(func() {
			var mine []time.Duration
			ok, toolErrs, errs := 0, 0, 0
			// Every client makes at least one call (unless --calls is used
			// up), so a short run on a busy machine still measures something
			// from each.
			for first := true; ctx.Err() == nil && (first || o.MaxCalls > 0 || time.Now().Before(end)); first = false {
				if o.MaxCalls > 0 && started.Add(1) > int64(o.MaxCalls) {
					break
				}
				cctx, cancel := context.WithTimeout(ctx, o.Timeout)
				t0 := time.Now()
				res, err := c.call(cctx)
				d := time.Since(t0)
				cancel()
				switch {
				case err != nil && ctx.Err() != nil:
					// Interrupted by the operator: not a failure of the server.
				case err != nil:
					errs++
					mu.Lock()
					if len(firstErrs) < 3 && !slices.Contains(firstErrs, loadClip(err.Error(), 200)) {
						firstErrs = append(firstErrs, loadClip(err.Error(), 200))
					}
					mu.Unlock()
				case res.IsError:
					toolErrs++
					mine = append(mine, d)
				default:
					ok++
					mine = append(mine, d)
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			rep.OK += ok
			rep.ToolErrors += toolErrs
			rep.Errors += errs
			mu.Unlock()
		})
	}
	workers.Wait()
	elapsed := time.Since(start)

	rep.DurationS = loadRound(elapsed.Seconds(), 3)
	rep.Calls = rep.OK + rep.ToolErrors + rep.Errors
	rep.CallsPerS = loadRound(float64(rep.Calls)/elapsed.Seconds(), 1)
	rep.FirstErrors = firstErrs
	if metricsErr == nil && rep.Calls > 0 {
		if after, err := scrapeWork(ctx, metricsURL, o.Token); err == nil {
			n := float64(rep.Calls)
			rep.PerCall = &loadWork{
				PDPRequests:        loadRound((after.PDPRequests-before.PDPRequests)/n, 2),
				WriteTransactions:  loadRound((after.WriteTransactions-before.WriteTransactions)/n, 2),
				CloudflareRequests: loadRound((after.CloudflareRequests-before.CloudflareRequests)/n, 2),
				ServerCPUMs:        loadRound((after.ServerCPUMs-before.ServerCPUMs)/n, 3),
			}
		}
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		ms := func(d time.Duration) float64 { return loadRound(float64(d.Nanoseconds())/1e6, 2) }
		rep.P50Ms = ms(nearestRank(lat, 0.50))
		rep.P90Ms = ms(nearestRank(lat, 0.90))
		rep.P99Ms = ms(nearestRank(lat, 0.99))
		rep.MaxMs = ms(lat[len(lat)-1])
	}
	return rep, nil
}

// loadClient is one initialised MCP client with its own connection pool, as
// a separate agent would have: the shared default transport keeps only two
// idle connections per host, and the clients would reconnect on every call.
// mcp-go's client opens the session (initialize, tools/list); the calls
// themselves go out as plain streamable HTTP POSTs (see loadConn.call).
func loadClient(ctx context.Context, o loadOptions) (*loadConn, error) {
	hc := &http.Client{Transport: &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
	}}
	opts := []transport.StreamableHTTPCOption{transport.WithHTTPBasicClient(hc)}
	if o.Token != "" {
		opts = append(opts, transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + o.Token}))
	}
	c, err := client.NewStreamableHttpClient(o.URL, opts...)
	if err != nil {
		return nil, err
	}
	ictx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	if err := c.Start(ictx); err != nil {
		_ = c.Close()
		return nil, err
	}
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = mcp.LATEST_PROTOCOL_VERSION
	init.Params.ClientInfo = mcp.Implementation{Name: "tollgate-load", Version: version}
	if _, err := c.Initialize(ictx, init); err != nil {
		_ = c.Close()
		var authErr *transport.AuthorizationRequiredError
		if errors.As(err, &authErr) {
			return nil, fmt.Errorf("the server wants a valid agent bearer token: pass --token or set TOLLGATE_TOKEN (tollgate agents create NAME prints one): %w", err)
		}
		return nil, err
	}
	lc, err := newLoadConn(c, hc, o)
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	return lc, nil
}

// loadConn is one load client's session. Its calls are tools/call POSTs whose
// body and headers are encoded once and whose answers are decoded only as far
// as the outcome: the measuring client shares the machine's cores with the
// server, and mcp-go's general-purpose client (re-encoding every request,
// decoding every content block and the structured result) took CPU the
// server then lacked.
type loadConn struct {
	c      *client.Client
	hc     *http.Client
	url    string
	header http.Header
	params json.RawMessage
	next   atomic.Int64
}

func newLoadConn(c *client.Client, hc *http.Client, o loadOptions) (*loadConn, error) {
	p := map[string]any{"name": o.Tool, "arguments": o.Args}
	if mcp.IsModernProtocol(c.ProtocolVersion()) {
		// Modern protocol versions carry who is asking in every request.
		p["_meta"] = map[string]any{
			mcp.MetaKeyProtocolVersion:    c.ProtocolVersion(),
			mcp.MetaKeyClientCapabilities: mcp.ClientCapabilities{},
			mcp.MetaKeyClientInfo:         mcp.Implementation{Name: "tollgate-load", Version: version},
		}
	}
	params, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode the call's arguments: %w", err)
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("Accept", "application/json, text/event-stream")
	h.Set(mcp.HeaderProtocolVersion, c.ProtocolVersion())
	if id := c.GetSessionId(); id != "" {
		h.Set("Mcp-Session-Id", id)
	}
	if o.Token != "" {
		h.Set("Authorization", "Bearer "+o.Token)
	}
	for name, value := range mcp.StandardHeaders(c.ProtocolVersion(), mcp.MethodToolsCall, params) {
		h.Set(name, value)
	}
	return &loadConn{c: c, hc: hc, url: o.URL, header: h, params: params}, nil
}

// loadResult is the part of a tools/call answer a load run looks at.
type loadResult struct {
	IsError bool `json:"isError"`
	Content []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	} `json:"content"`
}

// text is the result's text content.
func (r loadResult) text() string {
	var parts []string
	for _, c := range r.Content {
		if c.Type == "text" {
			parts = append(parts, c.Text)
		}
	}
	return strings.Join(parts, " ")
}

// call makes one tools/call and returns its result; a transport failure, an
// HTTP error or a JSON-RPC error is an error. The answer may be one JSON
// message or an event stream whose last message is the answer.
func (lc *loadConn) call(ctx context.Context) (loadResult, error) {
	// String ids of their own: the session's earlier requests (mcp-go's)
	// used numbers.
	id := strconv.Quote("load-" + strconv.FormatInt(lc.next.Add(1), 10))
	body := make([]byte, 0, len(lc.params)+64)
	body = append(body, `{"jsonrpc":"2.0","id":`...)
	body = append(body, id...)
	body = append(body, `,"method":"tools/call","params":`...)
	body = append(body, lc.params...)
	body = append(body, '}')
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, lc.url, bytes.NewReader(body))
	if err != nil {
		return loadResult{}, err
	}
	req.Header = lc.header.Clone()
	resp, err := lc.hc.Do(req)
	if err != nil {
		return loadResult{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return loadResult{}, fmt.Errorf("HTTP %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	var reply struct {
		ID     json.RawMessage `json:"id"`
		Result *loadResult     `json:"result"`
		Error  *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	decode := func(msg []byte) error {
		reply.ID, reply.Result, reply.Error = nil, nil, nil
		return json.Unmarshal(msg, &reply)
	}
	found := false
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
		var data []byte
		// event handles the event whose data lines were gathered, if any.
		event := func() error {
			if len(data) == 0 {
				return nil
			}
			if err := decode(data); err != nil {
				return fmt.Errorf("decode an event: %w", err)
			}
			data, found = data[:0], string(reply.ID) == id
			return nil
		}
		for !found && sc.Scan() {
			line := sc.Bytes()
			if rest, ok := bytes.CutPrefix(line, []byte("data:")); ok {
				data = append(data, bytes.TrimPrefix(rest, []byte(" "))...)
			} else if len(line) == 0 {
				if err := event(); err != nil {
					return loadResult{}, err
				}
			}
		}
		if err := sc.Err(); err != nil {
			return loadResult{}, fmt.Errorf("read the event stream: %w", err)
		}
		if !found { // the stream may end without a blank line
			if err := event(); err != nil {
				return loadResult{}, err
			}
		}
	} else {
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return loadResult{}, fmt.Errorf("read the answer: %w", err)
		}
		if err := decode(b); err != nil {
			return loadResult{}, fmt.Errorf("decode the answer: %w", err)
		}
		found = string(reply.ID) == id
	}
	switch {
	case !found:
		return loadResult{}, fmt.Errorf("no answer to request %s", id)
	case reply.Error != nil:
		return loadResult{}, fmt.Errorf("JSON-RPC error %d: %s", reply.Error.Code, reply.Error.Message)
	case reply.Result == nil:
		return loadResult{}, fmt.Errorf("answer to request %s has neither result nor error", id)
	}
	return *reply.Result, nil
}

// checkLoadTool refuses an unknown tool, and a tool that is not read-only
// unless the operator asked for it: load on register_domain buys domains.
func checkLoadTool(ctx context.Context, c *client.Client, o loadOptions) error {
	lctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	list, err := c.ListTools(lctx, mcp.ListToolsRequest{})
	if err != nil {
		return fmt.Errorf("list tools: %w", err)
	}
	var names []string
	for _, t := range list.Tools {
		names = append(names, t.Name)
		if t.Name != o.Tool {
			continue
		}
		readOnly := t.Annotations.ReadOnlyHint != nil && *t.Annotations.ReadOnlyHint
		if !readOnly && !o.AllowMutating {
			return usageError{fmt.Sprintf("tool %q is not read-only: every call may spend money and wait for a human approval; pass --allow-mutating to load it anyway", o.Tool)}
		}
		return nil
	}
	return usageError{fmt.Sprintf("the server has no tool %q; it lists: %s", o.Tool, strings.Join(names, ", "))}
}

// nearestRank is the p-th percentile of sorted samples (nearest rank).
func nearestRank(sorted []time.Duration, p float64) time.Duration {
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func loadRound(v float64, places int) float64 {
	f := math.Pow(10, float64(places))
	return math.Round(v*f) / f
}

func loadClip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func printLoadReport(w io.Writer, r loadReport) {
	fmt.Fprintf(w, "tollgate load: %s with %d clients for %.1fs against %s\n", r.Tool, r.Clients, r.DurationS, r.URL)
	ms := func(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) + "ms" }
	_ = table(w, []string{"CALLS", "OK", "TOOL_ERRORS", "ERRORS", "CALLS/S", "P50", "P90", "P99", "MAX"}, [][]string{{
		strconv.Itoa(r.Calls), strconv.Itoa(r.OK), strconv.Itoa(r.ToolErrors), strconv.Itoa(r.Errors),
		strconv.FormatFloat(r.CallsPerS, 'f', 1, 64), ms(r.P50Ms), ms(r.P90Ms), ms(r.P99Ms), ms(r.MaxMs),
	}})
	for _, e := range r.FirstErrors {
		fmt.Fprintf(w, "error: %s\n", e)
	}
	if r.PerCall != nil {
		printWork(w, *r.PerCall)
	}
	if r.ServerRSSMiB > 0 {
		fmt.Fprintf(w, "server resident memory after the run: %.1f MiB\n", r.ServerRSSMiB)
	}
}

// spawnedServer is a throwaway `tollgate serve` for one load run.
type spawnedServer struct {
	url  string
	cmd  *exec.Cmd
	dir  string
	done chan struct{}
	log  string
}

// spawnServer starts this binary's `serve` on a free loopback port with the
// sandbox, auth none and a database in a temporary folder (env, KEY=VALUE,
// added to this process's environment), and waits until
// /healthz says the policy engine and the database are ready.
// loadAgent is the agent a spawned server knows and every load call runs as.
var loadAgent = server.AgentConfig{Name: "load-agent", Team: "load", Roles: []string{"agent"}}

func spawnServer(ctx context.Context, note io.Writer, extraConfig string, env ...string) (*spawnedServer, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "tollgate-load-")
	if err != nil {
		return nil, err
	}
	s := &spawnedServer{dir: dir, done: make(chan struct{}), log: filepath.Join(dir, "server.log")}
	fail := func(err error) (*spawnedServer, error) {
		s.stop()
		return nil, err
	}
	// The run's own config, so a tollgate.yaml in the working folder cannot
	// change who the load runs as; one agent drives every call, so the
	// per-agent caps (price checks, requests in flight) are off.
	cfg := fmt.Sprintf("agent: %s\nquotes_per_minute: 0\nhttp: {max_in_flight_per_agent: 0, max_sessions_per_agent: 0}\nagents:\n  - {name: %s, team: %s, roles: [%s]}\n",
		loadAgent.Name, loadAgent.Name, loadAgent.Team, strings.Join(loadAgent.Roles, ", ")) + extraConfig
	cfgPath := filepath.Join(dir, "tollgate.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return fail(err)
	}
	addr, err := freeLoopbackAddr()
	if err != nil {
		return fail(err)
	}
	logFile, err := os.Create(s.log)
	if err != nil {
		return fail(err)
	}
	defer logFile.Close()
	s.cmd = exec.Command(self, "serve", "--transport", "http", "--listen", addr, "--auth", "none", "--sandbox",
		"--config", cfgPath, "--db", filepath.Join(dir, "tollgate.db"), "--log-level", "warn")
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	if len(env) > 0 {
		s.cmd.Env = append(os.Environ(), env...)
	}
	if err := s.cmd.Start(); err != nil {
		return fail(fmt.Errorf("start tollgate serve: %w", err))
	}
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	fmt.Fprintf(note, "started tollgate serve on %s (sandbox, auth none, database in %s)\n", addr, dir)

	health := "http://" + addr + "/healthz"
	deadline := time.Now().Add(60 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, health, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				s.url = "http://" + addr + "/mcp"
				return s, nil
			}
		}
		select {
		case <-s.done:
			return fail(fmt.Errorf("tollgate serve exited before it was ready:\n%s", loadTail(s.log, 20)))
		case <-ctx.Done():
			return fail(ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("tollgate serve was not ready within 60s (%s):\n%s", health, loadTail(s.log, 20)))
		}
	}
}

// stop interrupts the server as Ctrl-C would (it drains and stops its
// Cerbos PDP), kills it if it has not exited in 15 s, and removes its folder.
func (s *spawnedServer) stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(os.Interrupt)
		select {
		case <-s.done:
		case <-time.After(15 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	}
	_ = os.RemoveAll(s.dir)
}

// freeLoopbackAddr asks the kernel for a free port. Another process could
// take it before serve binds it; serve then fails clearly and the run stops.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free loopback port: %w", err)
	}
	addr := ln.Addr().String()
	return addr, ln.Close()
}

// loadTail is the last n lines of a file, for start-up errors.
func loadTail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}
