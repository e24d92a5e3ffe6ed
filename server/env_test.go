package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/slack-go/slack"
	"github.com/slack-go/slack/slacktest"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/authz"
	"github.com/tollgatehq/tollgate/cloudflare"
	"github.com/tollgatehq/tollgate/cloudflare/sandbox"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/tools"
)

// The tests run the real parts: the managed Cerbos PDP on ../cerbos-policies
// (one for the package, started on first use), a SQLite file per test, and
// the Cloudflare sandbox on loopback driven by cloudflare-go.

var sharedPDP struct {
	once sync.Once
	m    *authz.Managed
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if sharedPDP.m != nil {
		_ = sharedPDP.m.Stop()
	}
	os.Exit(code)
}

func pdpAddr(t testing.TB) string {
	t.Helper()
	sharedPDP.once.Do(func() {
		dir, err := filepath.Abs(filepath.Join("..", "cerbos-policies"))
		if err != nil {
			sharedPDP.err = err
			return
		}
		sharedPDP.m, sharedPDP.err = authz.StartManaged(context.Background(), authz.ManagedConfig{
			PolicyDir: dir,
			Logger:    slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
		})
	})
	if sharedPDP.err != nil {
		t.Fatalf("managed Cerbos PDP (run go tool task setup): %v", sharedPDP.err)
	}
	return sharedPDP.m.Addr()
}

// testAuditKey keys every test ledger, as tollgate keys its own.
var testAuditKey = func() *ledger.AuditKey {
	k, err := ledger.GenerateAuditKey()
	if err != nil {
		panic(err)
	}
	return k
}()

// Test principals and approvers, mirrored in the policies' test fixtures.
const (
	webBot   = "web-bot" // team web, roles agent+deployer, owner alice
	opsBot   = "ops-bot" // team ops, role agent, owner erin
	reason   = "landing page for the product launch next week"
	okModule = "export default {\n  async fetch(request) {\n    return new Response('ok');\n  },\n};\n"
)

func testConfig(dir string) Config {
	cfg := Default()
	cfg.DB = filepath.Join(dir, "tollgate.db")
	cfg.Agent = webBot
	cfg.Auth = "none"
	cfg.Agents = []AgentConfig{
		{Name: webBot, Team: "web", Roles: []string{"agent", "deployer"}, Owner: "alice", Attributes: map[string]string{"environment": "dev", "trust_tier": "standard"}},
		{Name: opsBot, Team: "ops", Roles: []string{"agent"}, Owner: "erin"},
	}
	cfg.Approvers = []ApproverConfig{
		{Name: "alice", SlackUserID: "U0ALICE", Roles: []string{"approver"}},
		{Name: "bob", SlackUserID: "U0BOB", OSUser: "bob", Roles: []string{"approver"}},
		{Name: "carol", SlackUserID: "U0CAROL", Roles: []string{"approver", "finance_approver"}},
		{Name: "erin", SlackUserID: "U0ERIN", Roles: []string{"approver"}},
	}
	cfg.Approvals.Wait = 3 * time.Second
	// Tests and benchmarks price many names as one agent; the cap has its own test.
	cfg.QuotesPerMinute = 0
	cfg.Slack.Channel = "C0APPROVALS"
	return cfg
}

type testEnv struct {
	t      testing.TB
	cfg    Config
	db     *ledger.DB
	sb     *sandbox.Sandbox
	sbHTTP *httptest.Server
	srv    *Server
	az     *authz.Client
	slack  *slacktest.Server
	secret string
	logs   *syncBuffer
}

type envOption func(*envOptions)

// hangGuard bounds every wait for something that must happen: it only stops
// a hung test, so it is generous for a busy machine (two cores shared by
// several test runs) and is never the thing a test measures.
const hangGuard = 2 * time.Minute

// withPDP points the env at a PDP of the test's own instead of the shared one.
func withPDP(addr string) envOption { return func(o *envOptions) { o.pdpAddr = addr } }

// withAuthzTimeout bounds each policy check; the default is hangGuard, so a
// slow answer on a busy machine is never a deny. Tests of a dead PDP set a
// short one, because a check waits that long for the PDP to come back.
func withAuthzTimeout(d time.Duration) envOption {
	return func(o *envOptions) { o.authzTimeout = d }
}

type envOptions struct {
	pdpAddr      string
	authzTimeout time.Duration
	cfg          func(*Config)
	slack        bool
	quiet        bool
	ledgerOp     []ledger.Option
	// clock, slackBinders and sbWrap: see withClock, withSlackBinders, withSandboxHandler.
	clock        func() time.Time
	slackBinders []slacktest.Binder
	sbWrap       func(http.Handler) http.Handler
	// beforeStart: see withBeforeStart.
	beforeStart []func(*ledger.DB)
	// cloudflare: see withCloudflare.
	cloudflare func(*cloudflare.Config, *sandbox.Sandbox)
	// decisionCache: see withDecisionCache; rateLimit: see withRateLimit.
	decisionCache bool
	rateLimit     sandbox.RateLimit
	// onSandbox: see withNothingBilled.
	onSandbox bool
	// terminal: see withTerminal.
	terminal io.Writer
}

// withTerminal gives the server a terminal for its approval lines (Deps.Terminal).
func withTerminal(w io.Writer) envOption { return func(o *envOptions) { o.terminal = w } }

// withNothingBilled tells the server its Cloudflare is the built-in sandbox
// (Deps.Sandbox), as serve does without credentials.
func withNothingBilled() envOption { return func(o *envOptions) { o.onSandbox = true } }

// withDecisionCache gives the env's authz client a decision cache over the
// shared managed PDP, as serve does.
func withDecisionCache() envOption { return func(o *envOptions) { o.decisionCache = true } }

// withRateLimit sets the sandbox's emulated Cloudflare rate limit.
func withRateLimit(rl sandbox.RateLimit) envOption { return func(o *envOptions) { o.rateLimit = rl } }

// withConfig changes the test config; several apply in order.
func withConfig(f func(*Config)) envOption {
	return func(o *envOptions) {
		prev := o.cfg
		o.cfg = func(c *Config) {
			if prev != nil {
				prev(c)
			}
			f(c)
		}
	}
}

// withQuietLogs discards the server's logs (benchmarks).
func withQuietLogs() envOption { return func(o *envOptions) { o.quiet = true } }
func withSlack() envOption     { return func(o *envOptions) { o.slack = true } }
func withLedger(opts ...ledger.Option) envOption {
	return func(o *envOptions) { o.ledgerOp = append(o.ledgerOp, opts...) }
}

// withClock makes now the server's clock (Deps.Clock: approval expiry, the
// pipeline, the Slack message's relative times) and the ledger's. Slack's
// signature window and the sandbox's token expiry stay on the wall clock,
// as they are in production.
func withClock(now func() time.Time) envOption {
	return func(o *envOptions) {
		o.clock = now
		o.ledgerOp = append(o.ledgerOp, ledger.WithClock(now))
	}
}

// withSlackBinders turns Slack on and customises slacktest's Web API server
// (slacktest.Binder handlers registered first win over its defaults).
func withSlackBinders(b ...slacktest.Binder) envOption {
	return func(o *envOptions) {
		o.slack = true
		o.slackBinders = append(o.slackBinders, b...)
	}
}

// withSandboxHandler wraps the sandbox's HTTP handler, e.g. to observe the
// Cloudflare API responses tollgate receives.
func withSandboxHandler(wrap func(http.Handler) http.Handler) envOption {
	return func(o *envOptions) { o.sbWrap = wrap }
}

// withBeforeStart runs fn on the opened ledger before the server is built and
// started, e.g. to leave behind the rows a crashed process would have left
// for Start's recovery to find.
func withBeforeStart(fn func(db *ledger.DB)) envOption {
	return func(o *envOptions) { o.beforeStart = append(o.beforeStart, fn) }
}

// withCloudflare changes the broker's configuration (pointed at the test's
// sandbox) before the server is built.
func withCloudflare(f func(*cloudflare.Config, *sandbox.Sandbox)) envOption {
	return func(o *envOptions) { o.cloudflare = f }
}

// manualClock is a clock a test moves by hand, so expiry needs no sleeping.
type manualClock struct {
	mu sync.Mutex
	t  time.Time
}

func newManualClock() *manualClock {
	return &manualClock{t: time.Now().UTC().Truncate(time.Second)}
}

// Now is the clock's current time.
func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d.
func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newEnv(t testing.TB, opts ...envOption) *testEnv {
	t.Helper()
	var o envOptions
	for _, f := range opts {
		f(&o)
	}
	dir := t.TempDir()
	cfg := testConfig(dir)
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	ctx := context.Background()
	e := &testEnv{t: t, cfg: cfg, logs: &syncBuffer{}}
	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if o.quiet {
		log = slog.New(slog.DiscardHandler)
	}

	db, err := ledger.Open(ctx, cfg.DB, append([]ledger.Option{ledger.WithMigrations(approvals.Migrations), ledger.WithLogger(log), ledger.WithAuditKey(testAuditKey)}, o.ledgerOp...)...)
	if err != nil {
		t.Fatal(err)
	}
	e.db = db
	t.Cleanup(func() { _ = db.Close() })
	for _, fn := range o.beforeStart {
		fn(db)
	}

	addr := o.pdpAddr
	if addr == "" {
		addr = pdpAddr(t)
	}
	azTimeout := hangGuard
	if o.authzTimeout > 0 {
		azTimeout = o.authzTimeout
	}
	azOpts := []authz.Option{authz.WithTimeout(azTimeout)}
	if o.decisionCache {
		azOpts = append(azOpts, authz.WithDecisionCache(authz.DecisionCacheConfig{Policies: sharedPDP.m}))
	}
	e.az, err = authz.NewClient(ctx, addr, azOpts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.az.Close() })

	e.sb, err = sandbox.New(sandbox.Options{RateLimit: o.rateLimit})
	if err != nil {
		t.Fatal(err)
	}
	var sbHandler http.Handler = e.sb
	if o.sbWrap != nil {
		sbHandler = o.sbWrap(e.sb)
	}
	e.sbHTTP = httptest.NewServer(sbHandler)
	t.Cleanup(e.sbHTTP.Close)
	t.Cleanup(e.sb.Close)

	policies, err := filepath.Abs(filepath.Join("..", "cerbos-policies"))
	if err != nil {
		t.Fatal(err)
	}
	deps := Deps{DB: db, Authz: e.az, Logger: log, Version: "test", Clock: o.clock, PolicyDir: policies, Sandbox: o.onSandbox, Terminal: o.terminal}
	deps.Cloudflare.APIBase = e.sbHTTP.URL + sandbox.APIPrefix
	deps.Cloudflare.AccountID = e.sb.AccountID()
	deps.Cloudflare.ParentToken = e.sb.ParentToken()
	if o.cloudflare != nil {
		o.cloudflare(&deps.Cloudflare, e.sb)
	}
	if o.slack {
		e.slack = slacktest.NewTestServer(o.slackBinders...)
		e.slack.Start()
		t.Cleanup(e.slack.Stop)
		e.secret = "8f742231b10e8888abcd99yyyzzz85a5"
		deps.Slack = slack.New("xoxb-test-token", slack.OptionAPIURL(e.slack.GetAPIURL()))
		deps.SlackSigningSecret = e.secret
	}
	e.srv, err = New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.srv.Close)
	// Tests count policy calls and read logs: start-up's quorum check is over first.
	select {
	case <-e.srv.approversChecked:
	case <-time.After(hangGuard):
		t.Fatal("start-up's approver check did not finish")
	}
	return e
}

// inProcessClient is an initialised mcp-go client on the server, in process.
func (e *testEnv) inProcessClient(t *testing.T) *client.Client {
	t.Helper()
	c, err := client.NewInProcessClient(e.srv.MCP())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = mcp.LATEST_PROTOCOL_VERSION
	init.Params.ClientInfo = mcp.Implementation{Name: "tollgate-test", Version: "1"}
	if _, err := c.Initialize(context.Background(), init); err != nil {
		t.Fatal(err)
	}
	return c
}

// ctxAs is a context carrying an agent's identity for in-process calls.
func (e *testEnv) ctxAs(agent string) context.Context {
	a, ok := e.cfg.agent(agent)
	if !ok {
		e.t.Fatalf("unknown test agent %s", agent)
	}
	return WithPrincipal(context.Background(), principalFromConfig(a, "inprocess"))
}

// call runs a tool through the MCP server in-process as agent.
func (e *testEnv) call(agent, tool string, args any) *mcp.CallToolResult {
	e.t.Helper()
	return e.callCtx(e.ctxAs(agent), tool, args)
}

func (e *testEnv) callCtx(ctx context.Context, tool string, args any) *mcp.CallToolResult {
	e.t.Helper()
	raw, err := json.Marshal(args)
	if err != nil {
		e.t.Fatal(err)
	}
	msg := fmt.Sprintf(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":%q,"arguments":%s}}`, tool, raw)
	resp := e.srv.MCP().HandleMessage(ctx, []byte(msg))
	b, err := json.Marshal(resp)
	if err != nil {
		e.t.Fatal(err)
	}
	var env struct {
		Result *mcp.CallToolResult `json:"result"`
		Error  *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		e.t.Fatalf("decode %s: %v", b, err)
	}
	if env.Error != nil {
		e.t.Fatalf("%s: JSON-RPC error %d: %s", tool, env.Error.Code, env.Error.Message)
	}
	return env.Result
}

// structured decodes a result's structured content into v.
func structured[T any](t *testing.T, res *mcp.CallToolResult) T {
	t.Helper()
	var v T
	b, err := json.Marshal(res.StructuredContent)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decode structured %s: %v", b, err)
	}
	return v
}

func text(res *mcp.CallToolResult) string {
	var parts []string
	for _, c := range res.Content {
		if tc, ok := c.(mcp.TextContent); ok {
			parts = append(parts, tc.Text)
		}
	}
	return strings.Join(parts, "\n")
}

// waitState polls the ledger until the operation reaches want.
func (e *testEnv) waitState(id string, want ledger.State) ledger.Operation {
	e.t.Helper()
	deadline := time.Now().Add(hangGuard)
	for {
		op, err := e.db.Operation(context.Background(), id)
		if err != nil {
			e.t.Fatal(err)
		}
		if op.State == want {
			return op
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("operation %s is %s (%s: %s), want %s", id, op.State, op.ErrorCode, op.Error, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pendingApproval returns the approval request of an operation.
func (e *testEnv) pendingApproval(opID string) approvals.Request {
	e.t.Helper()
	deadline := time.Now().Add(hangGuard)
	for {
		r, err := e.srv.Approvals().ByOperation(context.Background(), opID)
		if err == nil {
			return r
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("no approval request for %s: %v", opID, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// approve votes as a configured approver through the CLI path.
func (e *testEnv) approve(opID, approver string) approvals.Outcome {
	e.t.Helper()
	r := e.pendingApproval(opID)
	out, err := e.srv.Approvals().Decide(context.Background(), approvals.VoteInput{RequestID: r.ID, Approver: approver, Via: approvals.ViaCLI, Outcome: approvals.OutcomeApprove})
	if err != nil {
		e.t.Fatalf("approve %s as %s: %v", r.ID, approver, err)
	}
	return out
}

func (e *testEnv) registrarRequests() int {
	n := 0
	for _, r := range e.sb.Requests() {
		if strings.Contains(r.Path, "/registrar/") {
			n++
		}
	}
	return n
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func registerArgs(domain string) map[string]any {
	return map[string]any{"domain": domain, "reason": reason}
}

func opView(t *testing.T, res *mcp.CallToolResult) tools.OperationView {
	t.Helper()
	return structured[tools.OperationView](t, res)
}

// operationTokens are the minted tokens still alive, without the shared
// quote token: that one lives for its window by design (revoked at its
// renewal time and on Close).
func operationTokens(e *testEnv) []sandbox.TokenRecord {
	var out []sandbox.TokenRecord
	for _, tok := range e.sb.LiveTokens() {
		n, ok := cloudflare.ParseTokenName(tok.Name)
		if ok && (n.Purpose != string(cloudflare.PurposeQuote) || n.Label != cloudflare.SharedLabel) {
			out = append(out, tok)
		}
	}
	return out
}

// replica starts a second tollgate server on e's ledger file, policy engine
// and Cloudflare sandbox, as another process (a replica) would be: its own
// database handle, lease, approvals service and pipeline.
func (e *testEnv) replica(t *testing.T, terminal io.Writer) *Server {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	db, err := ledger.Open(ctx, e.db.Path(), ledger.WithMigrations(approvals.Migrations), ledger.WithLogger(log), ledger.WithAuditKey(testAuditKey))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	policies, err := filepath.Abs(filepath.Join("..", "cerbos-policies"))
	if err != nil {
		t.Fatal(err)
	}
	deps := Deps{DB: db, Authz: e.az, Logger: log, Version: "test", PolicyDir: policies, Terminal: terminal}
	deps.Cloudflare.APIBase = e.sbHTTP.URL + sandbox.APIPrefix
	deps.Cloudflare.AccountID = e.sb.AccountID()
	deps.Cloudflare.ParentToken = e.sb.ParentToken()
	srv, err := New(e.cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	select {
	case <-srv.approversChecked:
	case <-time.After(hangGuard):
		t.Fatal("the replica's approver check did not finish")
	}
	return srv
}
