package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/authz"
	"github.com/tollgatehq/tollgate/cloudflare"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/server"
	"github.com/tollgatehq/tollgate/tools"
)

// compareOptions is a `tollgate load --compare-pdp` run.
type compareOptions struct {
	Counts   []int
	Rounds   int
	Policies string
	JSON     bool
}

// compareRow is one client count's figures: each round's raw PDP
// CheckResources/s, the tool's calls/s on the server without a decision
// cache (the PDP as an external one) and on the server with its managed
// PDP and decision cache (the normal configuration), and their medians.
type compareRow struct {
	Clients      int       `json:"clients"`
	RawPerS      []float64 `json:"raw_checks_per_s"`
	ToolPerS     []float64 `json:"tool_calls_per_s"`
	Ratios       []float64 `json:"ratios"`
	RawMedian    float64   `json:"raw_checks_per_s_median"`
	ToolMedian   float64   `json:"tool_calls_per_s_median"`
	RatioMedian  float64   `json:"ratio_median"`
	ToolP50Ms    float64   `json:"tool_p50_ms"`
	ToolP99Ms    float64   `json:"tool_p99_ms"`
	RawP50Ms     float64   `json:"raw_p50_ms"`
	ToolFailures int       `json:"tool_failures"`
	// The cached series: the same calls to the server whose managed PDP
	// answers from its decision cache.
	CachedPerS        []float64 `json:"cached_calls_per_s"`
	CachedRatios      []float64 `json:"cached_ratios"`
	CachedMedian      float64   `json:"cached_calls_per_s_median"`
	CachedRatioMedian float64   `json:"cached_ratio_median"`
	CachedP50Ms       float64   `json:"cached_p50_ms"`
	CachedFailures    int       `json:"cached_failures"`
}

// compareReport is the whole run.
type compareReport struct {
	Tool       string       `json:"tool"`
	DurationS  float64      `json:"duration_s"`
	Rounds     int          `json:"rounds"`
	Rows       []compareRow `json:"rows"`
	PerCall    *loadWork    `json:"per_call,omitempty"`
	RSSMiB     float64      `json:"server_rss_mib,omitempty"`
	PDPChecksN int          `json:"pdp_resources_per_request"`
	// RawRequests is how many PDP requests one raw call makes.
	RawRequests int `json:"raw_pdp_requests_per_call"`
	// CachedPerCall and CachedRSSMiB are the cached server's.
	CachedPerCall *loadWork `json:"cached_per_call,omitempty"`
	CachedRSSMiB  float64   `json:"cached_server_rss_mib,omitempty"`
}

func parseClientCounts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 1024 {
			return nil, fmt.Errorf("--client-counts %q: want comma-separated counts from 1 to 1024, such as 1,4,16,32", s)
		}
		out = append(out, n)
	}
	return out, nil
}

// runComparePDP starts a managed Cerbos PDP and two throwaway servers: one
// that uses that PDP as its (external) PDP, so it keeps no decision cache,
// and one in the normal configuration, with its own managed PDP on the
// same policies and its decision cache. At each client count, in rounds
// that rotate which goes first, it measures raw CheckResources calls
// carrying exactly the checks estimate_cost sends (tools.EstimateChecks,
// with tollgate's principal), followed, as in the server, by the approver-
// eligibility check of a call that waits for a human, against the tool over
// streamable HTTP on each server. A ratio is the tool's calls/s over the
// raw calls/s: 1.0 would be a server that costs nothing beyond its policy
// decisions; the cached server can pass it.
func runComparePDP(ctx context.Context, o loadOptions, co compareOptions, out io.Writer) error {
	pdp, err := authz.StartManaged(ctx, authz.ManagedConfig{
		PolicyDir: co.Policies,
		Logger:    slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return fmt.Errorf("start the managed PDP: %w", err)
	}
	defer func() { _ = pdp.Stop() }()
	fmt.Fprintf(os.Stderr, "started the Cerbos PDP on %s (policies %s)\n", pdp.Addr(), co.Policies)

	srv, err := spawnServer(ctx, os.Stderr, fmt.Sprintf("cerbos:\n  addr: %q\n", pdp.Addr()))
	if err != nil {
		return err
	}
	defer srv.stop()
	o.URL = srv.url
	policies, err := filepath.Abs(co.Policies)
	if err != nil {
		return err
	}
	// The cached server writes its profiles to FILE.cached beside the
	// uncached one's FILE.
	var cachedEnv []string
	for _, env := range []string{cpuProfileEnv, memProfileEnv} {
		if p := os.Getenv(env); p != "" {
			cachedEnv = append(cachedEnv, env+"="+p+".cached")
		}
	}
	cached, err := spawnServer(ctx, os.Stderr, fmt.Sprintf("cerbos:\n  policies: %q\n", policies), cachedEnv...)
	if err != nil {
		return err
	}
	defer cached.stop()

	raw, err := authz.NewClient(ctx, pdp.Addr())
	if err != nil {
		return err
	}
	defer raw.Close()
	principal := server.PolicyPrincipal(loadAgent, "http",
		ledger.ClientInfo{Transport: "http", Name: "tollgate-load", Version: version, SessionID: "load-compare-session"}, true) // the spawned server runs on the sandbox
	var ea tools.EstimateCostArgs
	b, _ := json.Marshal(o.Args)
	if err := json.Unmarshal(b, &ea); err != nil {
		return fmt.Errorf("estimate_cost arguments: %w", err)
	}
	checks, plan, err := tools.EstimateChecks(ctx, tools.Config{}, fixedQuotes{}, ea)
	if err != nil {
		return fmt.Errorf("build the policy checks of estimate_cost %s: %w", b, err)
	}
	for i, ds := range raw.CheckBatch(ctx, principal, checks) {
		if len(ds) != 1 || !ds[0].Allowed {
			fmt.Fprintf(os.Stderr, "note: the PDP does not allow check %d (%s on %s): %+v\n", i, checks[i].Actions[0], checks[i].Resource.Kind, ds)
		}
	}
	// An irreversible call always waits for a human, so its estimate asks
	// whether an approver could approve it: a second request, with the
	// approver as principal. (A call that waits only by policy asks too; the
	// report warns when the server's requests per call differ from these.)
	// The spawned servers' config names no approvers, so the default one
	// (the OS user) is the one asked.
	rc := rawCall{principal: principal, checks: checks}
	if plan.Irreversible {
		ap, ares := server.EligibilityCheck(loadAgent, server.Default().Approvers[0], ea.Action, plan.Irreversible, plan.Amount)
		rc.approver, rc.approval = &ap, &ares
		if d := raw.Check(ctx, ap, ares, approvals.OutcomeApprove)[approvals.OutcomeApprove]; !d.Allowed {
			fmt.Fprintf(os.Stderr, "note: the PDP does not let %s approve the call: %+v\n", ap.ID, d)
		}
	}

	rep := compareReport{Tool: o.Tool, DurationS: o.Duration.Seconds(), Rounds: co.Rounds, PDPChecksN: len(checks), RawRequests: rc.requests()}
	rows := make([]compareRow, len(co.Counts))
	// series is one server's work counters over the run.
	type series struct {
		url, metrics  string
		before, after loadWork
		calls         int
		err           error
	}
	uncachedS := &series{url: srv.url, metrics: metricsURLOf(srv.url)}
	cachedS := &series{url: cached.url, metrics: metricsURLOf(cached.url)}
	runTool := func(s *series, n int) (loadReport, error) {
		oo := o
		oo.URL = s.url
		oo.Clients = n
		oo.Warn = io.Discard
		w0, err := scrapeWork(ctx, s.metrics, o.Token)
		if err != nil {
			s.err = err
		}
		tr, err := runLoadTest(ctx, oo)
		if err != nil {
			return tr, err
		}
		w1, err := scrapeWork(ctx, s.metrics, o.Token)
		if err != nil {
			s.err = err
		}
		s.before.add(w0, 1)
		s.after.add(w1, 1)
		s.calls += tr.Calls + 1 // the probe call too
		return tr, nil
	}
	for r := range co.Rounds {
		for i, n := range co.Counts {
			rows[i].Clients = n
			steps := []func() error{
				func() error {
					perS, p50 := measureRawPDP(ctx, raw, rc, n, o.Duration)
					rows[i].RawPerS = append(rows[i].RawPerS, loadRound(perS, 1))
					rows[i].RawP50Ms = p50
					return nil
				},
				func() error {
					tr, err := runTool(uncachedS, n)
					if err != nil {
						return err
					}
					rows[i].ToolPerS = append(rows[i].ToolPerS, tr.CallsPerS)
					rows[i].ToolP50Ms, rows[i].ToolP99Ms = tr.P50Ms, tr.P99Ms
					rows[i].ToolFailures += tr.Errors + tr.ToolErrors
					return nil
				},
				func() error {
					tr, err := runTool(cachedS, n)
					if err != nil {
						return fmt.Errorf("the server with the decision cache: %w", err)
					}
					rows[i].CachedPerS = append(rows[i].CachedPerS, tr.CallsPerS)
					rows[i].CachedP50Ms = tr.P50Ms
					rows[i].CachedFailures += tr.Errors + tr.ToolErrors
					return nil
				},
			}
			// Rotate which goes first, so a machine warming up or slowing
			// down favours none of them.
			for k := range steps {
				if err := steps[(r+i+k)%len(steps)](); err != nil {
					return err
				}
			}
			last := len(rows[i].RawPerS) - 1
			ratio, cratio := 0.0, 0.0
			if rows[i].RawPerS[last] > 0 {
				ratio = rows[i].ToolPerS[last] / rows[i].RawPerS[last]
				cratio = rows[i].CachedPerS[last] / rows[i].RawPerS[last]
			}
			rows[i].Ratios = append(rows[i].Ratios, loadRound(ratio, 3))
			rows[i].CachedRatios = append(rows[i].CachedRatios, loadRound(cratio, 3))
			fmt.Fprintf(os.Stderr, "round %d, %d clients: raw PDP %.0f requests/s, %s %.0f calls/s (ratio %.2f), with the decision cache %.0f calls/s (ratio %.2f)\n",
				r+1, n, rows[i].RawPerS[last], o.Tool, rows[i].ToolPerS[last], ratio, rows[i].CachedPerS[last], cratio)
		}
	}
	for i := range rows {
		rows[i].RawMedian = median(rows[i].RawPerS)
		rows[i].ToolMedian = median(rows[i].ToolPerS)
		rows[i].RatioMedian = median(rows[i].Ratios)
		rows[i].CachedMedian = median(rows[i].CachedPerS)
		rows[i].CachedRatioMedian = median(rows[i].CachedRatios)
	}
	rep.Rows = rows
	perCall := func(s *series) *loadWork {
		if s.err != nil || s.calls == 0 {
			return nil
		}
		n := float64(s.calls)
		return &loadWork{
			PDPRequests:        loadRound((s.after.PDPRequests-s.before.PDPRequests)/n, 2),
			WriteTransactions:  loadRound((s.after.WriteTransactions-s.before.WriteTransactions)/n, 2),
			CloudflareRequests: loadRound((s.after.CloudflareRequests-s.before.CloudflareRequests)/n, 2),
			ServerCPUMs:        loadRound((s.after.ServerCPUMs-s.before.ServerCPUMs)/n, 3),
		}
	}
	rep.PerCall, rep.CachedPerCall = perCall(uncachedS), perCall(cachedS)
	rep.RSSMiB, rep.CachedRSSMiB = srv.rssMiB(), cached.rssMiB()
	if co.JSON {
		return printJSON(out, rep)
	}
	printCompareReport(out, rep)
	return nil
}

// rawCallText says what one raw call sends.
func rawCallText(r compareReport) string {
	t := fmt.Sprintf("%d resources for the agent", r.PDPChecksN)
	if r.RawRequests > 1 {
		t += ", then whether an approver could approve the call"
	}
	return t
}

func printCompareReport(w io.Writer, r compareReport) {
	fmt.Fprintf(w, "tollgate load --compare-pdp: %s over streamable HTTP vs raw calls to the same PDP making the CheckResources requests one %s makes (%s), with tollgate's own principals and resources; %d interleaved rounds of %.1fs; medians\n",
		r.Tool, r.Tool, rawCallText(r), r.Rounds, r.DurationS)
	fmt.Fprintln(w, "CALLS/S and RATIO: the server using that PDP as an external one (no decision cache); CACHED: the server with its managed PDP and decision cache (the normal configuration)")
	f := func(v float64, places int) string { return strconv.FormatFloat(v, 'f', places, 64) }
	joined := func(v []float64) string {
		s := make([]string, len(v))
		for i, x := range v {
			s[i] = f(x, 2)
		}
		return strings.Join(s, " ")
	}
	rows := make([][]string, 0, len(r.Rows))
	for _, row := range r.Rows {
		rows = append(rows, []string{
			strconv.Itoa(row.Clients),
			f(row.RawMedian, 0),
			f(row.ToolMedian, 0),
			f(row.RatioMedian, 2),
			joined(row.Ratios),
			f(row.CachedMedian, 0),
			f(row.CachedRatioMedian, 2),
			joined(row.CachedRatios),
			f(row.ToolP50Ms, 2) + "ms",
			f(row.ToolP99Ms, 2) + "ms",
			f(row.CachedP50Ms, 2) + "ms",
			strconv.Itoa(row.ToolFailures + row.CachedFailures),
		})
	}
	_ = table(w, []string{"CLIENTS", "RAW_CALLS/S", "CALLS/S", "RATIO", "ROUNDS", "CACHED/S", "CACHED_RATIO", "ROUNDS", "P50", "P99", "CACHED_P50", "FAILED"}, rows)
	if r.PerCall != nil {
		fmt.Fprint(w, "uncached: ")
		printWork(w, *r.PerCall)
		// A short run's per-call figure carries the server's own start-up
		// requests too: only a clear difference is worth a warning.
		if math.Abs(r.PerCall.PDPRequests-float64(r.RawRequests)) > 0.1 {
			fmt.Fprintf(w, "note: the uncached server made %.2f PDP requests per call, the raw calls %d: the ratio compares unlike work\n", r.PerCall.PDPRequests, r.RawRequests)
		}
	}
	if r.CachedPerCall != nil {
		fmt.Fprint(w, "cached: ")
		printWork(w, *r.CachedPerCall)
	}
	if r.RSSMiB > 0 {
		fmt.Fprintf(w, "server resident memory after the run: %.1f MiB uncached, %.1f MiB cached (the PDPs are separate processes)\n", r.RSSMiB, r.CachedRSSMiB)
	}
}

// rawCall is the PDP requests one estimate_cost call makes: its checks in
// one CheckResources request, then, for a call that waits for a human, the
// approver-eligibility check.
type rawCall struct {
	principal authz.Principal
	checks    []authz.Check
	approver  *authz.Principal
	approval  *authz.Resource
}

func (rc rawCall) requests() int {
	if rc.approver != nil {
		return 2
	}
	return 1
}

// measureRawPDP makes rc's requests from n goroutines back to back for d and
// returns calls/s and the median latency of one call in ms.
func measureRawPDP(ctx context.Context, c *authz.Client, rc rawCall, n int, d time.Duration) (float64, float64) {
	var (
		done atomic.Int64
		mu   sync.Mutex
		lat  []time.Duration
		wg   sync.WaitGroup
	)
	start := time.Now()
	end := start.Add(d)
	for range n {
		wg.Go(func() {
			var mine []time.Duration
			for ctx.Err() == nil && time.Now().Before(end) {
				t0 := time.Now()
				c.CheckBatch(ctx, rc.principal, rc.checks)
				if rc.approver != nil {
					c.Check(ctx, *rc.approver, *rc.approval, approvals.OutcomeApprove)
				}
				mine = append(mine, time.Since(t0))
				done.Add(1)
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(lat)
	p50 := 0.0
	if len(lat) > 0 {
		p50 = loadRound(float64(nearestRank(lat, 0.5).Nanoseconds())/1e6, 2)
	}
	return float64(done.Load()) / elapsed.Seconds(), p50
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return loadRound((s[len(s)/2-1]+s[len(s)/2])/2, 3)
}

// fixedQuotes answers every registrar quote with the sandbox's .dev price,
// as a cached quote would: the raw PDP gets the plan's real attributes.
type fixedQuotes struct{}

func (fixedQuotes) Quote(_ context.Context, domain string) (tools.Quote, error) {
	return tools.Quote{DomainCheck: cloudflare.DomainCheck{
		Name: domain, Registrable: true, Tier: "standard", Currency: "USD", RegistrationCost: "12.18", RenewalCost: "12.18",
	}, ExpiresAt: time.Now().Add(tools.DefaultQuoteTTL)}, nil
}

func (fixedQuotes) CommitmentRecorded(context.Context, string) (bool, error) { return false, nil }
func (fixedQuotes) Now() time.Time                                           { return time.Now().UTC() }
func (fixedQuotes) TeamSucceeded(context.Context, string, string) (bool, error) {
	return false, nil
}

// The estimable tools plan without reading the account; a lookup would
// mean estimate_cost grew an action this comparison does not know.
var errNoLookup = errors.New("the PDP comparison plans without reading the Cloudflare account")

func (fixedQuotes) ZoneFor(context.Context, string) (cloudflare.Zone, error) {
	return cloudflare.Zone{}, errNoLookup
}
func (fixedQuotes) CustomDomains(context.Context, cloudflare.DomainFilter) ([]cloudflare.CustomDomain, error) {
	return nil, errNoLookup
}
func (fixedQuotes) Zones(context.Context) ([]cloudflare.Zone, error) { return nil, errNoLookup }
func (fixedQuotes) Workers(context.Context) ([]cloudflare.WorkerSummary, error) {
	return nil, errNoLookup
}

func (w *loadWork) add(o loadWork, k float64) {
	w.PDPRequests += k * o.PDPRequests
	w.WriteTransactions += k * o.WriteTransactions
	w.CloudflareRequests += k * o.CloudflareRequests
	w.ServerCPUMs += k * o.ServerCPUMs
}

// printWork prints the work per call line of a report.
func printWork(w io.Writer, p loadWork) {
	fmt.Fprintf(w, "work per call (server /metrics): %.2f PDP requests, %.2f ledger write transactions, %.2f Cloudflare requests",
		p.PDPRequests, p.WriteTransactions, p.CloudflareRequests)
	if p.ServerCPUMs > 0 {
		fmt.Fprintf(w, ", %.2f ms of server CPU", p.ServerCPUMs)
	}
	fmt.Fprintln(w)
}

// metricsURLOf is the /metrics address beside an MCP endpoint.
func metricsURLOf(mcpURL string) string {
	u, err := url.Parse(mcpURL)
	if err != nil {
		return ""
	}
	u.Path, u.RawQuery = "/metrics", ""
	return u.String()
}

// scrapeWork reads the server's work counters from /metrics: PDP requests,
// ledger write transactions, Cloudflare requests (every series of the
// request-latency histogram's count) and the process's CPU time (as ms).
func scrapeWork(ctx context.Context, metricsURL, token string) (loadWork, error) {
	var w loadWork
	// Bounded: a server without /metrics may answer the GET with an
	// event stream that never ends.
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL, nil)
	if err != nil {
		return w, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return w, err
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || !strings.HasPrefix(ct, "text/plain") {
		return w, fmt.Errorf("%s: %s (%s), not Prometheus metrics", metricsURL, resp.Status, ct)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	seen := 0
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name := line
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name = line[:i]
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			continue
		}
		switch name {
		case "tollgate_policy_requests_total":
			w.PDPRequests += v
			seen++
		case "tollgate_ledger_write_transactions_total":
			w.WriteTransactions += v
			seen++
		case "tollgate_cloudflare_request_seconds_count":
			w.CloudflareRequests += v
		case "process_cpu_seconds_total":
			w.ServerCPUMs += v * 1000 // summed as ms; divided by the calls later
		}
	}
	if err := sc.Err(); err != nil {
		return w, err
	}
	if seen < 2 {
		return w, fmt.Errorf("%s has no work counters (an older tollgate?)", metricsURL)
	}
	return w, nil
}

// rssMiB is the spawned server's resident memory (Linux /proc), 0 when it
// cannot be read.
func (s *spawnedServer) rssMiB() float64 {
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, err := strconv.ParseFloat(f[0], 64)
				if err == nil {
					return loadRound(kb/1024, 1)
				}
			}
		}
	}
	return 0
}
