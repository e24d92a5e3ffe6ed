package web

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/approvals/approvalstest"
	"github.com/tollgatehq/tollgate/ledger/money"
)

// stubSource is the ledger side of the console for these tests: fixed
// answers, and a change feed the test fires. The server's Source over the
// real ledger is tested in package server, with a real browser.
type stubSource struct {
	mu   sync.Mutex
	subs map[chan struct{}]struct{}
}

func (s *stubSource) Operation(context.Context, string) (Operation, error) {
	return Operation{ID: "op_x", Tool: "register_domain", State: "awaiting_approval", Quote: money.Money{Micros: 12_200_000, Currency: "USD"}, Basis: "live registrar quote"}, nil
}
func (s *stubSource) Operations(context.Context, string, int) ([]Operation, string, error) {
	return nil, "", nil
}
func (s *stubSource) Timeline(context.Context, string) ([]TimelineEntry, error) { return nil, nil }
func (s *stubSource) Budgets(context.Context) ([]Budget, error)                 { return nil, nil }
func (s *stubSource) Headroom(context.Context, approvals.Request) ([]Headroom, error) {
	return nil, nil
}
func (s *stubSource) DailySpend(context.Context, time.Time) ([]DaySpend, error) { return nil, nil }
func (s *stubSource) AuditStatus(context.Context) (AuditStatus, error) {
	return AuditStatus{OK: true}, nil
}
func (s *stubSource) ScriptChange(context.Context, approvals.Request) (*ScriptChange, error) {
	return nil, nil
}
func (s *stubSource) Changes() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	if s.subs == nil {
		s.subs = map[chan struct{}]struct{}{}
	}
	s.subs[ch] = struct{}{}
	s.mu.Unlock()
	return ch, func() { s.mu.Lock(); delete(s.subs, ch); s.mu.Unlock() }
}

func (s *stubSource) fire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ch := range s.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

type consoleFixture struct {
	*approvalstest.Fixture
	c   *Console
	src *stubSource
	srv *httptest.Server
}

func newConsole(t testing.TB, opts ...approvalstest.Option) *consoleFixture {
	t.Helper()
	f := &consoleFixture{Fixture: approvalstest.New(t, opts...), src: &stubSource{}}
	var err error
	f.c, err = New(f.Svc, Config{Source: f.src, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewServer(f.c.Handler())
	t.Cleanup(f.srv.Close)
	return f
}

// link mints a link for approver on this console's address.
func (f *consoleFixture) link(approver string, ttl time.Duration) string {
	f.T.Helper()
	l, err := MintLink(context.Background(), f.Svc, f.srv.URL, approver, "", "cli:test", ttl)
	if err != nil {
		f.T.Fatal(err)
	}
	return l.URL
}

// browser is an HTTP client with a cookie jar that does not follow redirects.
func browser() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// post sends a form from origin (none when "").
func post(t testing.TB, c *http.Client, u, origin string, form url.Values) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func getPage(t testing.TB, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func tokenOf(link string) string {
	u, _ := url.Parse(link)
	return u.Query().Get("t")
}

// signIn uses a link in c and returns the session cookie.
func (f *consoleFixture) signIn(c *http.Client, approver string) *http.Cookie {
	f.T.Helper()
	resp, _ := post(f.T, c, f.srv.URL+"/console/signin", f.srv.URL, url.Values{"t": {tokenOf(f.link(approver, 0))}})
	if resp.StatusCode != http.StatusSeeOther {
		f.T.Fatalf("sign in as %s: %d", approver, resp.StatusCode)
	}
	for _, ck := range resp.Cookies() {
		if ck.Name == cookieName {
			return ck
		}
	}
	f.T.Fatal("no session cookie")
	return nil
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(t testing.TB, page string) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no CSRF token on the page:\n%s", page)
	}
	return m[1]
}

func TestSecurityHeaders(t *testing.T) {
	t.Parallel()
	f := newConsole(t)
	c := browser()
	f.signIn(c, "bob")
	r := f.Request(nil)
	for _, path := range []string{"/console/", "/console/approvals/" + r.ID, "/console/budgets", "/console/nowhere", "/console/static/console.js"} {
		resp, _ := getPage(t, c, f.srv.URL+path)
		h := resp.Header
		if h.Get("Content-Security-Policy") != csp || h.Get("X-Frame-Options") != "DENY" || h.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: headers %v", path, h)
		}
		if !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") || strings.Contains(csp, "unsafe-inline") {
			t.Fatalf("CSP %q", csp)
		}
		static := strings.HasPrefix(path, "/console/static/")
		if got := h.Get("Cache-Control"); static == (got == "no-store") {
			t.Errorf("%s: Cache-Control %q", path, got)
		}
	}
	// No page carries inline script or style: the CSP would block it anyway.
	_, page := getPage(t, c, f.srv.URL+"/console/approvals/"+r.ID)
	for _, bad := range []string{"<script>", "style=", "onclick", "javascript:", "<style"} {
		if strings.Contains(page, bad) {
			t.Errorf("the page holds %q", bad)
		}
	}
}

func TestSignInLinks(t *testing.T) {
	t.Parallel()
	f := newConsole(t)
	ctx := context.Background()

	if _, err := MintLink(ctx, f.Svc, f.srv.URL, "mallory", "", "cli:mallory", 0); err == nil {
		t.Fatal("a link was minted for someone who is not an approver")
	}
	for _, base := range []string{"", "ftp://x", "http://", "http://u:p@host", "http://host/?q=1", "/relative"} {
		if _, err := MintLink(ctx, f.Svc, base, "bob", "", "cli:bob", 0); err == nil {
			t.Errorf("base %q accepted", base)
		}
	}

	link := f.link("bob", 0)
	c := browser()
	// Looking at the link (a preview, a mail scanner) does not use it.
	for range 2 {
		if resp, page := getPage(t, c, link); resp.StatusCode != http.StatusOK || !strings.Contains(page, "Sign in as bob") {
			t.Fatalf("sign-in page: %d", resp.StatusCode)
		}
	}
	form := url.Values{"t": {tokenOf(link)}}
	// From another site, or with no Origin at all: refused, and the link stays unused.
	for _, origin := range []string{"", "https://evil.example", "null"} {
		if resp, _ := post(t, c, f.srv.URL+"/console/signin", origin, form); resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 {
			t.Fatalf("sign-in from origin %q: %d", origin, resp.StatusCode)
		}
	}
	resp, _ := post(t, c, f.srv.URL+"/console/signin", f.srv.URL, form)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/" {
		t.Fatalf("sign-in: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	ck := resp.Cookies()[0]
	if ck.Name != cookieName || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/console/" || ck.Secure {
		t.Errorf("cookie %+v: want HttpOnly, SameSite=Strict, Path=/console/, not Secure over plain HTTP", ck)
	}
	if ev := f.Audit.Events(t, EventSignedIn); len(ev) != 1 || ev[0].Actor != "web:bob" {
		t.Fatalf("sign-in audit %+v", ev)
	}

	// Used once: a second browser with the same link is refused.
	resp, page := post(t, browser(), f.srv.URL+"/console/signin", f.srv.URL, form)
	if resp.StatusCode != http.StatusGone || !strings.Contains(page, "already used") || len(resp.Cookies()) != 0 {
		t.Fatalf("reused link: %d %s", resp.StatusCode, page)
	}
	// Expired.
	late := f.link("carol", time.Minute)
	f.Clock.Advance(61 * time.Second)
	resp, page = post(t, browser(), f.srv.URL+"/console/signin", f.srv.URL, url.Values{"t": {tokenOf(late)}})
	if resp.StatusCode != http.StatusGone || !strings.Contains(page, "expired") {
		t.Fatalf("expired link: %d", resp.StatusCode)
	}
	if got := f.Audit.Codes(t, EventSignInRefused); len(got) != 2 {
		t.Errorf("refused sign-ins audited: %d, want 2", len(got))
	}
	// Only the hash is stored.
	var n int
	if err := f.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM approval_console_links WHERE token_hash = ?`, tokenOf(link)).Scan(&n); err != nil || n != 0 {
		t.Fatalf("a link secret is stored in clear (%d, %v)", n, err)
	}
}

func TestSecureCookieUnderTLS(t *testing.T) {
	t.Parallel()
	f := newConsole(t)
	ts := httptest.NewTLSServer(f.c.Handler())
	t.Cleanup(ts.Close)
	l, err := MintLink(context.Background(), f.Svc, ts.URL, "bob", "", "cli:bob", 0)
	if err != nil {
		t.Fatal(err)
	}
	c := browser()
	c.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // the test server's own certificate
	resp, _ := post(t, c, ts.URL+"/console/signin", ts.URL, url.Values{"t": {tokenOf(l.URL)}})
	if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 1 || !resp.Cookies()[0].Secure {
		t.Fatalf("under TLS: %d %+v", resp.StatusCode, resp.Cookies())
	}
}

// TestPostsNeedCSRFAndOrigin: a vote is recorded only from a form of this
// console carrying the session's own token; everything else changes nothing.
func TestPostsNeedCSRFAndOrigin(t *testing.T) {
	t.Parallel()
	f := newConsole(t)
	bob, carol := browser(), browser()
	f.signIn(bob, "bob")
	f.signIn(carol, "carol")
	r := f.Request(func(r *approvals.Request) { r.Quorum = 2 })
	_, page := getPage(t, bob, f.srv.URL+"/console/approvals/"+r.ID)
	bobToken := csrfOf(t, page)
	_, page = getPage(t, carol, f.srv.URL+"/console/approvals/"+r.ID)
	carolToken := csrfOf(t, page)
	if bobToken == carolToken {
		t.Fatal("two sessions share a CSRF token")
	}
	approve := f.srv.URL + "/console/approvals/" + r.ID + "/approve"
	tests := []struct {
		name, origin string
		form         url.Values
	}{
		{"no token", f.srv.URL, url.Values{}},
		{"forged token", f.srv.URL, url.Values{"csrf": {"AAAA"}}},
		{"another session's token", f.srv.URL, url.Values{"csrf": {carolToken}}},
		{"no origin", "", url.Values{"csrf": {bobToken}}},
		{"foreign origin", "https://evil.example", url.Values{"csrf": {bobToken}}},
		{"null origin", "null", url.Values{"csrf": {bobToken}}},
	}
	for _, tt := range tests {
		if resp, _ := post(t, bob, approve, tt.origin, tt.form); resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", tt.name, resp.StatusCode)
		}
	}
	// Signed out, a valid-looking token is worth nothing either.
	if resp, _ := post(t, browser(), approve, f.srv.URL, url.Values{"csrf": {bobToken}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("no session: %d", resp.StatusCode)
	}
	if got := f.Get(r.ID); len(got.Votes) != 0 {
		t.Fatalf("a refused POST voted: %+v", got.Votes)
	}
	resp, _ := post(t, bob, approve, f.srv.URL, url.Values{"csrf": {bobToken}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("good POST: %d", resp.StatusCode)
	}
	got := f.Get(r.ID)
	if len(got.Votes) != 1 || got.Votes[0].Via != approvals.ViaWeb || got.Votes[0].Approver != "bob" {
		t.Fatalf("votes %+v, want bob via web", got.Votes)
	}
	if ev := f.Audit.Events(t, approvals.EventVoted); len(ev) != 1 || ev[0].Actor != "web:bob" {
		t.Fatalf("vote audit %+v", ev)
	}
	// The same click again is refused by the core, and said so.
	resp, page = post(t, bob, approve, f.srv.URL, url.Values{"csrf": {bobToken}})
	if resp.StatusCode != http.StatusConflict || !strings.Contains(page, "You already voted") {
		t.Fatalf("second vote: %d", resp.StatusCode)
	}
	// Deny needs a reason; with one, it is final and the reason is kept.
	deny := f.srv.URL + "/console/approvals/" + r.ID + "/deny"
	if resp, _ := post(t, carol, deny, f.srv.URL, url.Values{"csrf": {carolToken}, "reason": {"  "}}); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("deny without reason: %d", resp.StatusCode)
	}
	if resp, _ := post(t, carol, deny, f.srv.URL, url.Values{"csrf": {carolToken}, "reason": {"not this quarter"}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("deny: %d", resp.StatusCode)
	}
	if d := f.MustDecided(approvals.StateDenied); d.DecidedReason != "not this quarter" {
		t.Fatalf("denied with %q", d.DecidedReason)
	}
}

func TestOwnerAndNonApproverSeeNoButtons(t *testing.T) {
	t.Parallel()
	f := newConsole(t)
	dave := browser() // dave owns web-bot
	f.signIn(dave, "dave")
	r := f.Request(nil)
	_, page := getPage(t, dave, f.srv.URL+"/console/approvals/"+r.ID)
	if strings.Contains(page, `id="approve"`) || strings.Contains(page, `id="deny"`) || !strings.Contains(page, "dave owns agent web-bot") {
		t.Fatalf("the owner is offered a vote:\n%s", page)
	}
	// Votes go through the core whatever the page shows.
	resp, _ := post(t, dave, f.srv.URL+"/console/approvals/"+r.ID+"/approve", f.srv.URL, url.Values{"csrf": {csrfOf(t, page)}})
	if resp.StatusCode != http.StatusForbidden || len(f.Get(r.ID).Votes) != 0 {
		t.Fatalf("the owner's POST: %d", resp.StatusCode)
	}
	// Someone who is no longer an approver is signed out: a console on the
	// same database whose service does not list bob.
	bob := browser()
	f.signIn(bob, "bob")
	others := approvalstest.Approvers[2:]
	svc, err := approvals.NewService(f.DB, approvals.Options{Approvers: others, Authorizer: approvalstest.PolicyAuthorizer(nil), Audit: f.Audit.Fn, Clock: f.Clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	c2, err := New(svc, Config{Source: f.src})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(c2.Handler())
	t.Cleanup(ts.Close)
	u, _ := url.Parse(f.srv.URL + "/console/")
	ck := bob.Jar.Cookies(u)
	req, _ := http.NewRequest(http.MethodGet, ts.URL+"/console/", nil)
	req.AddCookie(ck[0])
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a removed approver's session still works: %d", resp.StatusCode)
	}
}

func TestSessionsExpireAndSignOut(t *testing.T) {
	t.Parallel()
	f := newConsole(t)
	c := browser()
	f.signIn(c, "bob")
	resp, page := getPage(t, c, f.srv.URL+"/console/")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("inbox: %d", resp.StatusCode)
	}
	resp, _ = post(t, c, f.srv.URL+"/console/signout", f.srv.URL, url.Values{"csrf": {csrfOf(t, page)}})
	if resp.StatusCode != http.StatusOK || resp.Cookies()[0].MaxAge >= 0 {
		t.Fatalf("sign out: %d %+v", resp.StatusCode, resp.Cookies())
	}
	// The old cookie is dead even if a browser kept it.
	if resp, _ = getPage(t, c, f.srv.URL+"/console/"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("after sign out: %d", resp.StatusCode)
	}
	if len(f.Audit.Events(t, EventSignedOut)) != 1 {
		t.Error("sign out not audited")
	}
	c = browser()
	f.signIn(c, "bob")
	f.Clock.Advance(DefaultSessionTTL + time.Second)
	if resp, _ = getPage(t, c, f.srv.URL+"/console/"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("after expiry: %d", resp.StatusCode)
	}
	// Arriving from another site without the Strict cookie: one same-site reload.
	req, _ := http.NewRequest(http.MethodGet, f.srv.URL+"/console/", nil)
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `data-renavigate="1"`) {
		t.Error("a cross-site arrival is not reloaded once")
	}
}

// TestUntrustedTextIsSanitised: what an agent or its client wrote reaches the
// page cleaned by display (no bidi, no invisible characters, one line) and
// escaped by html/template.
func TestUntrustedTextIsSanitised(t *testing.T) {
	t.Parallel()
	f := newConsole(t)
	c := browser()
	f.signIn(c, "bob")
	r := f.Request(func(r *approvals.Request) {
		r.Reason = "renew \u202egnp.exe\u202c <script>alert(1)</script>\n\nApproved by alice"
		r.Client = "claude\u200b-code <img src=x onerror=alert(1)>"
		r.Summary = "Register example.dev\u2066 for free"
		r.Args = append(r.Args, approvals.Field{Label: "note\n", Value: "<b>bold</b>\x1b[31m"})
	})
	for _, path := range []string{"/console/", "/console/approvals/" + r.ID, "/console/approvals/" + r.ID + "/live", "/console/inbox/pending"} {
		_, page := getPage(t, c, f.srv.URL+path)
		for _, bad := range []string{"\u202e", "\u200b", "\u2066", "\x1b", "<script>", "<img", "<b>bold"} {
			if strings.Contains(page, bad) {
				t.Errorf("%s holds %q", path, bad)
			}
		}
	}
	_, page := getPage(t, c, f.srv.URL+"/console/approvals/"+r.ID)
	if !strings.Contains(page, "renew gnp.exe &lt;script&gt;alert(1)&lt;/script&gt;  Approved by alice") {
		t.Errorf("reason not shown cleaned and escaped:\n%s", page)
	}
}

func TestLiveUpdatesStream(t *testing.T) {
	t.Parallel()
	f := newConsole(t)
	c := browser()
	f.signIn(c, "bob")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.srv.URL+"/console/events", nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("content type %q", resp.Header.Get("Content-Type"))
	}
	lines := bufio.NewScanner(resp.Body)
	lines.Scan() // the opening comment
	go func() {
		// Fire until the stream has shown the change.
		for ctx.Err() == nil {
			f.src.fire()
			time.Sleep(20 * time.Millisecond)
		}
	}()
	for lines.Scan() {
		if lines.Text() == "event: change" {
			return
		}
	}
	t.Fatalf("the stream ended without a change event: %v", lines.Err())
}

func TestConsolePath(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"/console/":                  "/console/",
		"/console/approvals/apr_abc": "/console/approvals/apr_abc",
		"https://evil.example/":      "/console/",
		"//evil.example/console/":    "/console/",
		"/console//evil.example":     "/console/",
		"/console/../admin":          "/console/",
		"/console/%2e%2e/":           "/console/",
		"/console/\\evil":            "/console/",
		"/console/x?next=//evil":     "/console/",
		"/consolex":                  "/console/",
		"/console/\u00e9":            "/console/",
	} {
		if got := consolePath(in); got != want {
			t.Errorf("consolePath(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzConsolePath: wherever a link lands, it is a plain path inside the console.
func FuzzConsolePath(f *testing.F) {
	for _, s := range []string{"/console/", "//x", "/console/../x", "/console/a b", "\x00", "/console/approvals/apr_x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p := consolePath(s)
		u, err := url.Parse(p)
		if err != nil || u.Scheme != "" || u.Host != "" || !strings.HasPrefix(p, "/console/") || strings.Contains(p, "//") || strings.Contains(p, "..") {
			t.Fatalf("consolePath(%q) = %q", s, p)
		}
	})
}

// FuzzSignInToken: no string signs anyone in but a minted link's secret, and
// none makes the handler fail.
func FuzzSignInToken(f *testing.F) {
	fx := newConsole(f)
	// A real secret with its last character changed (to one it is not:
	// a fixed "A" would be the secret itself once in 64 runs).
	minted := tokenOf(fx.link("bob", 0))
	last := "A"
	if strings.HasSuffix(minted, last) {
		last = "B"
	}
	f.Add(minted[:len(minted)-1] + last)
	f.Add("")
	f.Add(strings.Repeat("A", 43))
	f.Add("../../etc/passwd")
	f.Add("%00")
	f.Fuzz(func(t *testing.T, tok string) {
		resp, _ := post(t, browser(), fx.srv.URL+"/console/signin", fx.srv.URL, url.Values{"t": {tok}})
		if resp.StatusCode >= 500 || len(resp.Cookies()) != 0 {
			t.Fatalf("token %q: %d, cookies %v", tok, resp.StatusCode, resp.Cookies())
		}
	})
}
