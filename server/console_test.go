package server

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	slackchan "github.com/tollgatehq/tollgate/approvals/slack"
	"github.com/tollgatehq/tollgate/approvals/web"
	"github.com/tollgatehq/tollgate/ledger"
)

// consoleEnv is a server whose HTTP handler listens on a real loopback port,
// so the console's links, the browser and MCP clients over HTTP all reach it.
func consoleEnv(t *testing.T, opts ...envOption) (*testEnv, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, append([]envOption{withConfig(func(c *Config) { c.Listen = ln.Addr().String() })}, opts...)...)
	hs := &http.Server{Handler: e.srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })
	return e, "http://" + ln.Addr().String()
}

// link mints a one-time sign-in link as tollgate approvals open does.
func (e *testEnv) link(t *testing.T, approver, next string, ttl time.Duration) string {
	t.Helper()
	base, err := web.PublishedBase(context.Background(), e.db.Store())
	if err != nil || base == "" {
		t.Fatalf("the server published no console address: %q %v", base, err)
	}
	l, err := web.MintLink(context.Background(), e.srv.Approvals(), base, approver, next, "cli:test", ttl)
	if err != nil {
		t.Fatal(err)
	}
	return l.URL
}

// browserPath finds a Chromium to drive: TOLLGATE_BROWSER, or one on PATH.
func browserPath() string {
	if p := os.Getenv("TOLLGATE_BROWSER"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// newBrowser starts a headless Chromium with a fresh profile. Without one the
// test is skipped, except under CI=true, where it fails.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	path := browserPath()
	if path == "" {
		const how = "no Chromium found: run go tool task setup:browser as root (apt-get install -y chromium), or set TOLLGATE_BROWSER"
		if os.Getenv("CI") == "true" {
			t.Fatal(how)
		}
		t.Skip(how)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 1000),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelB := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelB(); cancelA() })
	// The first run starts the browser; it must not carry a deadline.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	return ctx
}

// run runs browser steps with a generous deadline (a loaded 2-core machine
// is slow, and a deadline here only bounds a failure).
func run(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// read runs one browser action that returns a value.
func read[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// signIn opens a link and presses Sign in, landing where the link leads.
func signIn(t *testing.T, ctx context.Context, link, approver string) {
	t.Helper()
	run(t, ctx, "sign in as "+approver,
		chromedp.Navigate(link),
		chromedp.WaitVisible(chromedp.ID("signin")),
		chromedp.Click(chromedp.ID("signin")),
		chromedp.WaitVisible(chromedp.ID("approver")),
	)
	if who := read(t, ctx, "who", chromedp.Text(chromedp.ID("approver"))); who != approver {
		t.Fatalf("signed in as %q, want %q", who, approver)
	}
}

// screenshot saves a PNG of the page under docs/ when UPDATE_SCREENSHOTS is
// true (go tool task docs:screenshots); otherwise it only checks one can be taken.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png := read(t, ctx, "screenshot "+name, chromedp.FullScreenshot(100))
	if len(png) < 8 || string(png[1:4]) != "PNG" {
		t.Fatalf("screenshot %s is not a PNG", name)
	}
	if os.Getenv("UPDATE_SCREENSHOTS") == "true" {
		if err := os.WriteFile(filepath.Join("..", "docs", name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

type callResult struct {
	status, code, msg string
	raw               string
}

// mcpClient connects an mcp-go client to the console env over streamable
// HTTP, as an agent's client does (auth none: the configured agent, web-bot).
func mcpClient(t *testing.T, base string, era trEra, opts ...client.ClientOption) *client.Client {
	t.Helper()
	tr, err := transport.NewStreamableHTTP(base + "/mcp")
	if err != nil {
		t.Fatal(err)
	}
	if era == trLegacy {
		opts = append(opts, client.WithProtocolVersion(mcp.LATEST_LEGACY_PROTOCOL_VERSION))
	}
	c := client.NewClient(tr, opts...)
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func initialize(t *testing.T, c *client.Client, caps mcp.ClientCapabilities) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	init := mcp.InitializeRequest{}
	init.Params.ClientInfo = mcp.Implementation{Name: "claude-code", Version: "2.1.0"}
	init.Params.Capabilities = caps
	if _, err := c.Initialize(ctx, init); err != nil {
		t.Fatal(err)
	}
}

// callAsync runs register_domain through c in the background: the call waits
// for the human, as an agent's would. It ends with the test.
func callAsync(t *testing.T, c *client.Client, domain string) <-chan callResult {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	out := make(chan callResult, 1)
	go func() {
		defer close(done)
		req := mcp.CallToolRequest{}
		req.Params.Name = "register_domain"
		req.Params.Arguments = map[string]any{"domain": domain, "reason": reason}
		res, err := c.CallTool(ctx, req)
		if err != nil {
			out <- callResult{raw: "error: " + err.Error()}
			return
		}
		v, _ := res.StructuredContent.(map[string]any)
		s := func(k string) string { x, _ := v[k].(string); return x }
		out <- callResult{status: s("status"), code: s("error_code"), msg: s("error"), raw: text(res)}
	}()
	return out
}

// agentCall is a fresh MCP client session that starts register_domain.
func agentCall(t *testing.T, base, domain string) <-chan callResult {
	t.Helper()
	c := mcpClient(t, base, trModern)
	initialize(t, c, mcp.ClientCapabilities{})
	return callAsync(t, c, domain)
}

func waitCall(t *testing.T, ch <-chan callResult) callResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(90 * time.Second):
		t.Fatal("the MCP call did not return")
	}
	return callResult{}
}

// pendingFor waits until the domain's operation has a pending approval and returns its id.
func (e *testEnv) pendingFor(t *testing.T, domain string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		reqs, err := e.srv.Approvals().List(context.Background(), "pending")
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range reqs {
			for _, a := range r.Args {
				if a.Label == "Domain" && strings.HasPrefix(a.Value, toASCII(domain)) {
					return r.ID
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no pending approval for %s", domain)
	return ""
}

func toASCII(d string) string {
	if d == "bücher.dev" {
		return "xn--bcher-kva.dev"
	}
	return d
}

// TestConsoleInBrowser drives the console with a real headless Chromium:
// sign in with a link, see the pending approval, approve it and the waiting
// MCP call returns the registration; deny with a reason and the agent gets
// the reason; a new request appears without a reload; a used or expired link,
// a POST without CSRF token and a foreign Origin are refused; an approver who
// may not decide (the agent's owner) sees no buttons.
func TestConsoleInBrowser(t *testing.T) {
	clock := newManualClock()
	e, base := consoleEnv(t, withClock(clock.Now), withConfig(func(c *Config) {
		c.Approvals.Wait = 2 * time.Minute
		c.Budgets = []BudgetConfig{{Scope: "team:web", Window: "day", Limit: "50.00"}, {Scope: "global", Window: "month", Limit: "500.00"}}
	}))
	ctx := newBrowser(t)
	text := func(id string) string { return read(t, ctx, "read #"+id, chromedp.Text(chromedp.ID(id))) }

	// 1. Sign in with a link and see the pending approval (an IDN: ASCII first).
	first := agentCall(t, base, "bücher.dev")
	firstID := e.pendingFor(t, "bücher.dev")
	link := e.link(t, "bob", "", 0)
	signIn(t, ctx, link, "bob")
	run(t, ctx, "inbox lists the request", chromedp.WaitVisible(chromedp.CSS(`tr[data-request="`+firstID+`"]`)))
	screenshot(t, ctx, "console-inbox.png")

	run(t, ctx, "open the request", chromedp.Click(chromedp.CSS(`tr[data-request="`+firstID+`"] a`)), chromedp.WaitVisible(chromedp.ID("args")))
	args, happens, maximum, headroom := text("args"), text("happens"), text("maximum"), text("headroom")
	if i, j := strings.Index(args, "xn--bcher-kva.dev"), strings.Index(args, "contains non-ASCII letters: bücher.dev"); i < 0 || j < 0 || i > j {
		t.Errorf("arguments must show the ASCII form first, then the Unicode form with its warning:\n%s", args)
	}
	if maximum != "12.18 USD" || !strings.Contains(happens, "cannot be undone") {
		t.Errorf("maximum %q, what happens %q", maximum, happens)
	}
	// Every budget before and after the request's 12.18 USD.
	for _, want := range []string{"team:web (day)", "50.00 USD", "37.82 USD", "global (month)", "500.00 USD", "487.82 USD"} {
		if !strings.Contains(headroom, want) {
			t.Errorf("headroom does not show %q:\n%s", want, headroom)
		}
	}
	screenshot(t, ctx, "console-approval.png")

	// 2. A POST without the CSRF token, or with a forged one, changes nothing.
	for _, body := range []string{"", "csrf=forged"} {
		status := read(t, ctx, "POST without CSRF", chromedp.Evaluate[int](`fetch("/console/approvals/`+firstID+`/approve", {method: "POST", headers: {"Content-Type": "application/x-www-form-urlencoded"}, body: "`+body+`"}).then(r => r.status)`, chromedp.EvalAwaitPromise))
		if status != http.StatusForbidden {
			t.Errorf("POST %q: status %d, want 403", body, status)
		}
	}
	if r, _ := e.srv.Approvals().Get(context.Background(), firstID); r.State != "pending" || len(r.Votes) != 0 {
		t.Fatalf("a refused POST changed the request: %+v", r)
	}

	// 3. Approve: the waiting MCP call returns the registration.
	run(t, ctx, "approve", chromedp.Click(chromedp.ID("approve")), chromedp.WaitVisible(chromedp.ID("notice")))
	res := waitCall(t, first)
	if res.status != "succeeded" || !strings.Contains(res.raw, "xn--bcher-kva.dev") {
		t.Fatalf("the waiting call returned %+v, want the registration", res)
	}
	if r, _ := e.srv.Approvals().Get(context.Background(), firstID); len(r.Votes) != 1 || r.Votes[0].Via != "web" || r.Votes[0].Approver != "bob" {
		t.Fatalf("vote %+v, want bob via web", r.Votes)
	}

	// 4. Live update: a new request appears in the open inbox without a reload.
	run(t, ctx, "back to the inbox", chromedp.Navigate(base+"/console/"), chromedp.WaitVisible(chromedp.ID("requests")),
		chromedp.WaitVisible(chromedp.CSS(".live-state.on")))
	read(t, ctx, "mark the page", chromedp.Evaluate[bool](`window.__sameDocument = true`))
	second := agentCall(t, base, "launch-page.dev")
	secondID := e.pendingFor(t, "launch-page.dev")
	run(t, ctx, "the new request shows up", chromedp.WaitVisible(chromedp.CSS(`tr[data-request="`+secondID+`"]`)))
	if !read(t, ctx, "no reload", chromedp.Evaluate[bool](`window.__sameDocument === true`)) {
		t.Fatal("the page reloaded; the update must come live")
	}

	// 5. Deny with a reason: the agent receives it.
	const why = "We already own launch-page.com; use that."
	run(t, ctx, "deny",
		chromedp.Navigate(base+"/console/approvals/"+secondID), chromedp.WaitVisible(chromedp.ID("deny")),
		chromedp.SendKeys(chromedp.ID("reason-input"), why), chromedp.Click(chromedp.ID("deny")), chromedp.WaitVisible(chromedp.ID("notice")))
	res = waitCall(t, second)
	if res.status != "denied" || res.code != "denied_by_approver" || !strings.Contains(res.msg, why) {
		t.Fatalf("the denied call returned %+v, want denied_by_approver with the reason", res)
	}

	// 6. A used link signs nobody in, nor does an expired one.
	run(t, ctx, "reuse the link", chromedp.Navigate(link), chromedp.WaitVisible(chromedp.ID("message")))
	if msg := text("message"); !strings.Contains(msg, "already used") {
		t.Errorf("reused link: %q", msg)
	}
	expiring := e.link(t, "carol", "", time.Minute)
	clock.Advance(2 * time.Minute)
	run(t, ctx, "expired link", chromedp.Navigate(expiring), chromedp.WaitVisible(chromedp.ID("message")))
	if msg := text("message"); !strings.Contains(msg, "expired") {
		t.Errorf("expired link: %q", msg)
	}

	// 7. Signed out, then in as alice, who owns web-bot: no buttons.
	third := agentCall(t, base, "owned-by-alice.dev")
	thirdID := e.pendingFor(t, "owned-by-alice.dev")
	run(t, ctx, "sign out", chromedp.Navigate(base+"/console/"), chromedp.WaitVisible(chromedp.ID("approver")),
		chromedp.Click(chromedp.CSS(`form.who button`)), chromedp.WaitVisible(chromedp.ID("message")))
	signIn(t, ctx, e.link(t, "alice", "/console/approvals/"+thirdID, 0), "alice")
	run(t, ctx, "alice's view", chromedp.WaitVisible(chromedp.ID("no-actions")))
	msg := text("no-actions")
	nodes := read(t, ctx, "count buttons", chromedp.Evaluate[int](`document.querySelectorAll("#approve, #deny").length`))
	if nodes != 0 || !strings.Contains(msg, "owns agent web-bot") {
		t.Fatalf("the owner sees %d vote buttons (%q); want none and why", nodes, msg)
	}
	e.approve(e.operationOf(thirdID), "carol")
	if res := waitCall(t, third); res.status != "succeeded" {
		t.Fatalf("third call %+v", res)
	}

	// 8. Approve + allow one more like it: the next .dev registration runs
	// without a click. (Last: the mandate would let earlier calls through.)
	fourth := agentCall(t, base, "mandate-browser.dev")
	fourthID := e.pendingFor(t, "mandate-browser.dev")
	run(t, ctx, "sign out alice", chromedp.Navigate(base+"/console/"), chromedp.WaitVisible(chromedp.ID("approver")),
		chromedp.Click(chromedp.CSS(`form.who button`)), chromedp.WaitVisible(chromedp.ID("message")))
	signIn(t, ctx, e.link(t, "bob", "/console/approvals/"+fourthID, 0), "bob")
	run(t, ctx, "approve + allow one more",
		chromedp.WaitVisible(chromedp.ID("mandate-form")),
		chromedp.SetValue(chromedp.ID("mandate-count"), "1"),
		chromedp.Click(chromedp.ID("approve-mandate")), chromedp.WaitVisible(chromedp.ID("notice")))
	if msg := text("notice"); !strings.Contains(msg, "has a standing approval: man_") {
		t.Errorf("notice %q", msg)
	}
	if res := waitCall(t, fourth); res.status != "succeeded" {
		t.Fatalf("the call approved with a mandate returned %+v", res)
	}
	if res := waitCall(t, agentCall(t, base, "mandate-next.dev")); res.status != "succeeded" {
		t.Fatalf("the call the mandate covers returned %+v, want it to run without a click", res)
	}
	if ms, err := e.db.Mandates(context.Background()); err != nil || len(ms) != 1 || ms[0].Used != 1 || ms[0].Count != 1 || ms[0].CreatedBy != "web:bob" {
		t.Fatalf("mandates %+v %v, want bob's, used once", ms, err)
	}
}

// operationOf returns the operation of an approval request.
func (e *testEnv) operationOf(requestID string) string {
	e.t.Helper()
	r, err := e.srv.Approvals().Get(context.Background(), requestID)
	if err != nil {
		e.t.Fatal(err)
	}
	return r.OperationID
}

// httpSignIn signs a plain HTTP client in with a link, as a browser would.
func httpSignIn(t *testing.T, base, link string) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	u, _ := url.Parse(link)
	form := url.Values{"t": {u.Query().Get("t")}}
	req, _ := http.NewRequest(http.MethodPost, base+"/console/signin", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", base)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-in: %d", resp.StatusCode)
	}
	return c
}

func get(t *testing.T, c *http.Client, u string) (int, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// elicitRecorder is an MCP client's elicitation handler: it records what the
// server asked and answers accept, as a client whose user opened the page
// would.
type elicitRecorder struct {
	got chan mcp.ElicitationRequest
}

func (r *elicitRecorder) Elicit(_ context.Context, req mcp.ElicitationRequest) (*mcp.ElicitationResult, error) {
	r.got <- req
	// accept means the user opened the page; it must approve nothing.
	return &mcp.ElicitationResult{ElicitationResponse: mcp.ElicitationResponse{Action: mcp.ElicitationResponseActionAccept}}, nil
}

// TestURLElicitationPointsAtTheConsole: a client that declares URL-mode
// elicitation gets elicitation/create (mode url) with the approval's console
// page while its call waits, its "accept" approves nothing, and the decision
// ends it with notifications/elicitation/complete. Clients that declare no
// URL elicitation, or only form mode, get nothing.
func TestURLElicitationPointsAtTheConsole(t *testing.T) {
	t.Parallel()
	e, base := consoleEnv(t, withConfig(func(c *Config) { c.Approvals.Wait = 2 * time.Minute }))

	rec := &elicitRecorder{got: make(chan mcp.ElicitationRequest, 4)}
	c := mcpClient(t, base, trLegacy, client.WithElicitationHandler(rec))
	completed := make(chan string, 4)
	c.OnNotification(func(n mcp.JSONRPCNotification) {
		if n.Method == string(mcp.MethodNotificationElicitationComplete) {
			id, _ := n.Params.AdditionalFields["elicitationId"].(string)
			completed <- id
		}
	})
	initialize(t, c, mcp.ClientCapabilities{Elicitation: &mcp.ElicitationCapability{URL: &struct{}{}}})
	call := callAsync(t, c, "elicit-me.dev")
	id := e.pendingFor(t, "elicit-me.dev")

	var req mcp.ElicitationRequest
	select {
	case req = <-rec.got:
	case <-time.After(30 * time.Second):
		t.Fatal("no elicitation reached the client")
	}
	if req.Params.Mode != mcp.ElicitationModeURL || req.Params.URL != base+"/console/approvals/"+id || req.Params.ElicitationID != id {
		t.Fatalf("elicitation %+v, want mode url for %s/console/approvals/%s", req.Params, base, id)
	}
	if !strings.Contains(req.Params.Message, "elicit-me.dev") || !strings.Contains(req.Params.Message, "approves nothing") {
		t.Errorf("message %q", req.Params.Message)
	}
	// The page needs a sign-in: the URL alone shows nothing of the request.
	if code, body := get(t, http.DefaultClient, req.Params.URL); code != http.StatusUnauthorized || strings.Contains(body, "elicit-me") {
		t.Errorf("the elicited URL without a session: %d", code)
	}
	// The client's accept approved nothing.
	deadline := time.Now().Add(30 * time.Second)
	for !e.auditHas(EventElicited, "accept") {
		if time.Now().After(deadline) {
			t.Fatal("the client's answer was not recorded")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r, _ := e.srv.Approvals().Get(context.Background(), id); r.State != "pending" || len(r.Votes) != 0 {
		t.Fatalf("an elicitation answer changed the request: %+v", r)
	}

	e.approve(e.operationOf(id), "carol")
	if res := waitCall(t, call); res.status != "succeeded" {
		t.Fatalf("call %+v", res)
	}
	select {
	case got := <-completed:
		if got != id {
			t.Errorf("elicitation complete for %q, want %q", got, id)
		}
	case <-time.After(30 * time.Second):
		t.Error("no notifications/elicitation/complete after the decision")
	}

	// Form mode only, or nothing: no elicitation, and the call still works.
	for i, caps := range []mcp.ClientCapabilities{{}, {Elicitation: &mcp.ElicitationCapability{Form: &struct{}{}}}} {
		other := &elicitRecorder{got: make(chan mcp.ElicitationRequest, 1)}
		c := mcpClient(t, base, trLegacy, client.WithElicitationHandler(other))
		initialize(t, c, caps)
		domain := fmt.Sprintf("no-elicit-%d.dev", i)
		call := callAsync(t, c, domain)
		e.approve(e.operationOf(e.pendingFor(t, domain)), "carol")
		if res := waitCall(t, call); res.status != "succeeded" {
			t.Fatalf("%s: %+v", domain, res)
		}
		select {
		case r := <-other.got:
			t.Fatalf("client with %+v got an elicitation: %+v", caps, r.Params)
		default:
		}
	}
}

// auditHas reports whether an event of typ holds the text want.
func (e *testEnv) auditHas(typ, want string) bool {
	found := false
	_ = e.db.Events(context.Background(), ledger.EventQuery{Types: []string{typ}}, func(ev ledger.Event) error {
		if strings.Contains(string(ev.Data), want) {
			found = true
		}
		return nil
	})
	return found
}

// TestConsoleShowsWorkerDiff: a production redeploy's page compares the new
// module with the script live at Cloudflare, fetched with a read-only token
// minted and deleted for it; when Cloudflare cannot be asked, with the last
// version tollgate deployed, and it says which; a first deploy says it
// creates the script.
func TestConsoleShowsWorkerDiff(t *testing.T) {
	t.Parallel()
	var failScript atomic.Bool
	e, base := consoleEnv(t, withConfig(func(c *Config) { c.Approvals.Wait = 0 }), withSandboxHandler(func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if failScript.Load() && r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/workers/scripts/web-app") {
				http.Error(w, `{"success":false,"errors":[{"code":10013,"message":"internal error"}]}`, http.StatusInternalServerError)
				return
			}
			h.ServeHTTP(w, r)
		})
	}))
	deploy := func(module string) string {
		t.Helper()
		v := opView(t, e.call(webBot, "deploy_worker", map[string]any{
			"script_name": "web-app", "module": module, "compatibility_date": "2025-01-01", "environment": "production", "reason": reason,
		}))
		if v.Status != "awaiting_approval" {
			t.Fatalf("deploy: %+v", v)
		}
		return v.OperationID
	}
	browser := httpSignIn(t, base, e.link(t, "bob", "", 0))
	page := func(opID string) string {
		t.Helper()
		code, body := get(t, browser, base+"/console/approvals/"+e.pendingApproval(opID).ID)
		if code != http.StatusOK {
			t.Fatalf("approval page: %d", code)
		}
		return body
	}

	first := deploy(okModule)
	if body := page(first); !strings.Contains(body, "No script named web-app is live at Cloudflare: this deploy creates it.") {
		t.Fatalf("a first deploy's page does not say it creates the script:\n%s", body)
	}
	e.approve(first, "bob")
	e.waitState(first, ledger.StateSucceeded)

	v2 := strings.Replace(okModule, "'ok'", "'ok, v2'", 1)
	second := deploy(v2)
	minted := e.auditCount("token.minted")
	body := page(second)
	for _, want := range []string{"the script live at Cloudflare", "1 line(s) added, 1 removed.",
		`<span class="del">`, `return new Response(&#39;ok&#39;);`, `<span class="add">`, `return new Response(&#39;ok, v2&#39;);`} {
		if !strings.Contains(body, want) {
			t.Errorf("redeploy page does not show %q", want)
		}
	}
	if n := e.auditCount("token.minted") - minted; n != 1 {
		t.Errorf("%d tokens minted to read the live script, want 1 (inspect, deleted after)", n)
	}
	page(second) // cached: no second token
	if n := e.auditCount("token.minted") - minted; n != 1 {
		t.Errorf("a reload minted another token (%d)", n)
	}
	e.approve(second, "bob")
	e.waitState(second, ledger.StateSucceeded)

	failScript.Store(true)
	third := deploy(strings.Replace(v2, "v2", "v3", 1))
	body = page(third)
	if !strings.Contains(body, "the last version tollgate deployed (operation "+second) || !strings.Contains(body, "Cloudflare could not be asked") ||
		!strings.Contains(body, "&#39;ok, v3&#39;") {
		t.Fatalf("fallback page does not compare with the last deploy and say so:\n%s", body)
	}
}

// auditCount counts the audit events of typ.
func (e *testEnv) auditCount(typ string) int {
	n := 0
	_ = e.db.Events(context.Background(), ledger.EventQuery{Types: []string{typ}}, func(ledger.Event) error { n++; return nil })
	return n
}

// TestConsolePages: operations with their audit story, budgets and spend as
// SVG, and the audit chain's status, over the real ledger.
func TestConsolePages(t *testing.T) {
	t.Parallel()
	e, base := consoleEnv(t, withConfig(func(c *Config) {
		c.Approvals.Wait = 0
		c.Budgets = []BudgetConfig{{Scope: "team:web", Window: "day", Limit: "50.00"}}
	}))
	v := opView(t, e.call(webBot, "register_domain", registerArgs("pages-test.dev")))
	e.approve(v.OperationID, "bob")
	e.waitState(v.OperationID, ledger.StateSucceeded)
	c := httpSignIn(t, base, e.link(t, "bob", "", 0))

	_, ops := get(t, c, base+"/console/operations")
	if !strings.Contains(ops, v.OperationID) || !strings.Contains(ops, "12.18 USD charged") {
		t.Errorf("operations page does not list the registration:\n%s", ops)
	}
	_, op := get(t, c, base+"/console/operations/"+v.OperationID)
	n := strings.Count(op, "<tr><td>")
	if want := e.auditCountOf(v.OperationID); n != want || !strings.Contains(op, "from=executing to=succeeded") || !strings.Contains(op, "approval.granted") {
		t.Errorf("timeline has %d rows, the operation %d audit events:\n%s", n, want, op)
	}
	_, budgets := get(t, c, base+"/console/budgets")
	for _, want := range []string{"team:web (day)", "12.18 USD", `<svg class="chart"`, `<rect class="col"`, "12.18 USD in 1 operation(s)"} {
		if !strings.Contains(budgets, want) {
			t.Errorf("budgets page does not show %q", want)
		}
	}
	_, audit := get(t, c, base+"/console/audit")
	if !strings.Contains(audit, `id="chain-ok"`) {
		t.Errorf("audit page:\n%s", audit)
	}
	if code, _ := get(t, c, base+"/console/operations/op_nosuchoperationxxxxxxxxxxx"); code != http.StatusNotFound {
		t.Errorf("unknown operation: %d", code)
	}
}

// auditCountOf counts an operation's audit events.
func (e *testEnv) auditCountOf(opID string) int {
	n := 0
	_ = e.db.Events(context.Background(), ledger.EventQuery{OperationID: opID}, func(ledger.Event) error { n++; return nil })
	return n
}

// TestConsoleFreeze: Freeze agent from the console freezes through the same
// kill switch as Slack and the CLI, recorded as from the web console.
func TestConsoleFreeze(t *testing.T) {
	t.Parallel()
	e, base := consoleEnv(t, withConfig(func(c *Config) { c.Approvals.Wait = 0 }))
	v := opView(t, e.call(webBot, "register_domain", registerArgs("freeze-me.dev")))
	id := e.pendingApproval(v.OperationID).ID
	c := httpSignIn(t, base, e.link(t, "bob", "", 0))
	_, page := get(t, c, base+"/console/approvals/"+id)
	m := csrfField.FindStringSubmatch(page)
	if m == nil {
		t.Fatal("no CSRF token on the page")
	}
	req, _ := http.NewRequest(http.MethodPost, base+"/console/approvals/"+id+"/freeze", strings.NewReader(url.Values{"csrf": {m[1]}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", base)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("freeze: %d", resp.StatusCode)
	}
	f, err := e.db.FrozenFor(context.Background(), webBot, "web")
	if err != nil || f == nil || f.By != "web:bob" || !strings.Contains(f.Reason, "web console") {
		t.Fatalf("freeze %+v, %v; want one by web:bob", f, err)
	}
	e.waitState(v.OperationID, ledger.StateCancelled)
}

// TestSlackReviewInConsoleEndToEnd: with console.public_url set, a signed
// Review in console click gets the clicking approver a one-time link on the
// public URL, in a reply to them alone, and the link signs that approver in
// on the request's page.
func TestSlackReviewInConsoleEndToEnd(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	rec := newSlackRecorder()
	e := newEnv(t, withSlackBinders(rec.bind), withConfig(func(c *Config) {
		c.Approvals.Wait = 0
		c.Console.PublicURL = base
	}))
	hs := &http.Server{Handler: e.srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })
	sl := &slackSide{rec: rec, url: base, secret: e.secret}

	v := opView(t, e.call(webBot, "register_domain", registerArgs("review-in-console.dev")))
	id := e.pendingApproval(v.OperationID).ID
	if r := sl.click(t, slackBlockAction("U0BOB", slackchan.ActionIDConsole, id)); r.Status != http.StatusOK {
		t.Fatalf("click: %d %s", r.Status, r.Body)
	}
	reply := sl.rec.lastEphemeral(t, "U0BOB")
	link := regexp.MustCompile(`<(` + regexp.QuoteMeta(base) + `/console/signin\?t=[A-Za-z0-9_-]{43})\|Review in console>`).FindStringSubmatch(reply)
	if link == nil {
		t.Fatalf("reply holds no sign-in link: %q", reply)
	}
	c := httpSignIn(t, base, link[1])
	if code, page := get(t, c, base+"/console/approvals/"+id); code != http.StatusOK || !strings.Contains(page, "Signed in as <strong id=\"approver\">bob</strong>") || !strings.Contains(page, `id="approve"`) {
		t.Fatalf("bob's page after the Slack link: %d", code)
	}
	// A used link is spent.
	if code, _ := get(t, http.DefaultClient, link[1]); code != http.StatusGone {
		t.Errorf("the used link: %d, want 410", code)
	}
}

// TestStdioServerLeavesTheConsoleAddress: a stdio server (no listener)
// starting on a database where an HTTP server published its console address
// leaves that address, so `tollgate approvals open` still links to a
// running console.
func TestStdioServerLeavesTheConsoleAddress(t *testing.T) {
	t.Parallel()
	const published = "http://127.0.0.1:18787"
	e := newEnv(t,
		withConfig(func(c *Config) { c.Transport = "stdio"; c.Console.PublicURL = "" }),
		withBeforeStart(func(db *ledger.DB) {
			if err := web.PublishBase(context.Background(), db.Store(), published, time.Now()); err != nil {
				t.Fatal(err)
			}
		}))
	if base, err := web.PublishedBase(context.Background(), e.db.Store()); err != nil || base != published {
		t.Fatalf("after a stdio server started: console address %q %v, want the HTTP server's %q", base, err, published)
	}
}
