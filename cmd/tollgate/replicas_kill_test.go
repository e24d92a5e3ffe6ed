//go:build linux

package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/ledger/store/storetest"
	"github.com/tollgatehq/tollgate/tools"
)

// TestHTTPReplicaKilledMidExecution is issue 10's failover acceptance for
// HTTP replicas: two `tollgate serve --transport http` replicas on one
// PostgreSQL database behind a sticky load balancer, with a short lease TTL.
// An approved registration is held mid-call by the sandbox's registrar
// (after the registration took effect, before it answered) in the replica
// executing it. The other replica leaves it alone while that replica lives;
// then the executing replica is SIGKILLed, and the survivor takes the work
// over only once the dead lease has gone a whole TTL without a heartbeat,
// asks Cloudflare what happened (the registration exists) and settles it:
// one registration, one charge, no hold, no surviving token. `get_operation`
// through the load balancer on the survivor and the CLI with nothing but
// --db (`audit show`, `audit verify`, `spend`) tell the same story.
func TestHTTPReplicaKilledMidExecution(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two HTTP tollgate replicas, a sandbox, Cerbos and PostgreSQL; skipped with -short")
	}
	t.Parallel()
	const (
		price  = 12_180_000 // .dev in the sandbox
		ttl    = 2 * time.Second
		domain = "http-replica-kill.dev"
		reason = "HTTP failover test: a launch page bought exactly once"
	)
	dsn := storetest.PostgresDSN(t)
	e := newCrashEnvWith(t, crashConfig{agents: []string{"web-bot"}, wait: "3m", budget: "100.00", db: dsn})
	out, err := e.plainCLI("agents", "create", "http-bot", "--team", "web", "--roles", "agent,deployer",
		"--owner", "alice", "--attr", "environment=dev,trust_tier=standard", "--ttl", "1h")
	token := regexp.MustCompile(`tg_[A-Za-z0-9_-]+`).FindString(out)
	if err != nil || token == "" {
		t.Fatalf("agents create --db URL: %v\n%s", err, out)
	}
	replicas := []*httpReplica{e.serveHTTP("--lease-ttl", ttl.String()), e.serveHTTP("--lease-ttl", ttl.String())}
	lb := newStickyProxy(t, replicas[0].base, replicas[1].base)
	sessions := make([]*serveProc, 2) // sessions[i] is on replica i
	for range 2 {
		c := tokenClient(t, lb.URL+"/mcp", token)
		sessions[lb.backendOf(t, c.GetSessionId())] = &serveProc{e: e, c: c}
	}
	if sessions[0] == nil || sessions[1] == nil {
		t.Fatal("the proxy did not put one session on each replica")
	}

	// The call goes to replica 0; it waits for a human there.
	type outcome struct {
		v   tools.OperationView
		err error
	}
	result := make(chan outcome, 1)
	go func() {
		v, err := sessions[0].call("register_domain", map[string]any{"domain": domain, "reason": reason})
		result <- outcome{v, err}
	}()
	opID := e.awaitingApproval("the registration to await approval", 1)[0].ID
	// The registrar acts, then holds its answer: the execution is in flight
	// and Cloudflare already did it.
	e.setFaults(`{"hang":true,"fail_after_effect":true,"method":"POST","path_contains":"/registrar/registrations"}`)
	e.approve(e.requestID(opID))
	e.waitFor("the registration to be held mid-call", func() bool {
		return e.hanging() == 1 && e.operation(opID).State == ledger.StateExecuting
	})
	if n := len(e.sandboxState().Registrations()); n != 1 {
		t.Fatalf("%d registrations at the sandbox while the call is held, want 1", n)
	}
	lease := e.operation(opID).LeaseID
	holder := -1
	leases, err := e.db.Store().Leases(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range leases {
		for i, r := range replicas {
			if l.ID == lease && l.PID == r.pid {
				holder = i
			}
		}
	}
	if holder < 0 {
		t.Fatalf("no replica holds lease %q: %+v", lease, leases)
	}
	survivor := 1 - holder
	if len(e.tokensOf(lease)) == 0 {
		t.Fatal("the executing replica holds no execution token: the sweep check would prove nothing")
	}
	// Both replicas read the operation in flight.
	for i, s := range sessions {
		if v := s.callTool("get_operation", map[string]any{"operation_id": opID}); v.Status != string(ledger.StateExecuting) {
			t.Fatalf("get_operation on replica %d: %s, want executing", i, v.Status)
		}
	}
	// Several TTLs and reclaim passes with the holder alive: the survivor
	// must not touch its work (a window for a bug to show, not a timing
	// assertion).
	time.Sleep(3 * ttl)
	if got := e.operation(opID); got.State != ledger.StateExecuting || got.LeaseID != lease {
		t.Fatalf("a replica took live work: %s (%s) under lease %q, was %q", got.State, got.Error, got.LeaseID, lease)
	}

	e.setFaults(`{}`)
	replicas[holder].kill()
	// The dead replica's last heartbeat, read after it died: a heartbeat
	// still in flight at the kill can only make the real one later.
	var lastBeat time.Time
	leases, err = e.db.Store().Leases(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range leases {
		if l.ID == lease {
			lastBeat = l.HeartbeatAt
		}
	}
	if lastBeat.IsZero() {
		t.Fatalf("lease %s vanished when its replica was killed: %+v", lease, leases)
	}
	if holder == 0 {
		// The call's stream went with its replica: the client sees an error,
		// never a result the ledger contradicts.
		select {
		case r := <-result:
			if r.err == nil && r.v.Status != string(ledger.StateExecuting) {
				t.Fatalf("the call on the killed replica answered %+v", r.v)
			}
		case <-time.After(2 * time.Minute): // a hang guard only
			t.Fatal("the call on the killed replica never ended")
		}
	}
	e.waitFor("the held request to end", func() bool { return e.hanging() == 0 })

	// The agent follows its operation on the survivor, through the load
	// balancer, until it is settled.
	got := sessions[survivor].waitTerminal(opID)
	if got.Status != string(ledger.StateSucceeded) || got.Charged == nil || got.Charged.Micros != price {
		t.Fatalf("get_operation on the survivor: %+v; want succeeded, charged %d once", got, price)
	}
	e.waitLeaseGone(lease)

	// The audit trail: taken over once, from the dead lease, no earlier than
	// a TTL after its last heartbeat; settled once.
	var reclaims, settles int
	var reclaimedAt time.Time
	var types []string
	if err := e.db.Events(context.Background(), ledger.EventQuery{OperationID: opID}, func(ev ledger.Event) error {
		types = append(types, ev.Type)
		switch ev.Type {
		case ledger.EventOperationReclaimed:
			reclaims++
			reclaimedAt = ev.At
			var d struct {
				FromLease string `json:"from_lease"`
				State     string `json:"state"`
			}
			if err := json.Unmarshal(ev.Data, &d); err != nil || d.FromLease != lease || d.State != string(ledger.StateExecuting) {
				t.Errorf("reclaim event %s: %+v %v; want from lease %s while executing", ev.Data, d, err, lease)
			}
		case ledger.EventBudgetSettled:
			settles++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if reclaims != 1 || settles != 1 {
		t.Fatalf("events of %s: %v; want one reclaim and one settlement", opID, types)
	}
	// Both clocks are this machine's (PostgreSQL's for the heartbeat, the
	// survivor's for the event).
	if early := lastBeat.Add(ttl).Sub(reclaimedAt); early > 0 {
		t.Fatalf("the survivor took the work over at %s, %s before the dead lease's TTL ran out (last heartbeat %s, TTL %s)",
			reclaimedAt.Format(time.RFC3339Nano), early, lastBeat.Format(time.RFC3339Nano), ttl)
	}

	// The CLI, with nothing but --db, reads the same story.
	out, err = e.plainCLI("audit", "show", opID, "--json")
	var shown struct {
		Operation ledger.Operation `json:"operation"`
		Events    []ledger.Event   `json:"events"`
	}
	if err != nil || json.Unmarshal([]byte(out), &shown) != nil {
		t.Fatalf("audit show --db URL: %v\n%s", err, out)
	}
	if shown.Operation.State != ledger.StateSucceeded || shown.Operation.Charged == nil || shown.Operation.Charged.Micros != price || len(shown.Events) != len(types) {
		t.Fatalf("audit show --db URL: %s charged %+v with %d events; want succeeded, charged %d, the %d events %v",
			shown.Operation.State, shown.Operation.Charged, len(shown.Events), price, len(types), types)
	}
	out, err = e.plainCLI("spend", "--by", "team", "--json")
	var sp spendJSON
	if err != nil || json.Unmarshal([]byte(out), &sp) != nil {
		t.Fatalf("spend --db URL: %v\n%s", err, out)
	}
	if len(sp.Lines) != 1 || sp.Lines[0].Key != "team:web" || sp.Lines[0].Operations != 1 || !strings.HasPrefix(sp.Lines[0].Spent, "12.18") {
		t.Fatalf("spend --by team --db URL: %+v; want team:web, one operation, 12.18 spent", sp.Lines)
	}

	if spent, held := e.teamSpend(); spent != price || held != 0 {
		t.Fatalf("spent %d held %d, want one registration's %d", spent, held, price)
	}
	if n := len(e.sandboxState().Registrations()); n != 1 {
		t.Fatalf("%d registrations at the sandbox, want exactly 1", n)
	}
	replicas[survivor].stop()
	e.checkLedgerMatchesSandbox()
	t.Logf("replica %d killed mid-registration; replica %d took it over %s after its last heartbeat (TTL %s); events %v",
		holder, survivor, reclaimedAt.Sub(lastBeat).Round(time.Millisecond), ttl, types)
}

// TestConsoleSessionsAcrossReplicas: the web console needs no sticky load
// balancing. Sign-in links and sessions live in the shared database (hashed),
// so a link minted with the CLI is redeemed on replica A, the cookie A set
// opens pages on B, the CSRF token of A's page is accepted by B, an Approve
// posted to B resumes the call waiting on A, a used link is refused by B,
// and a sign-out on B ends the session on A too.
func TestConsoleSessionsAcrossReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two HTTP tollgate replicas, a sandbox, Cerbos and PostgreSQL; skipped with -short")
	}
	t.Parallel()
	const (
		price  = 12_180_000 // .dev in the sandbox
		public = "https://tollgate.example.com"
	)
	dsn := storetest.PostgresDSN(t)
	e := newCrashEnvWith(t, crashConfig{agents: []string{"web-bot"}, wait: "3m", db: dsn})
	out, err := e.plainCLI("agents", "create", "http-bot", "--team", "web", "--roles", "agent,deployer",
		"--owner", "alice", "--attr", "environment=dev,trust_tier=standard", "--ttl", "1h")
	token := regexp.MustCompile(`tg_[A-Za-z0-9_-]+`).FindString(out)
	if err != nil || token == "" {
		t.Fatalf("agents create --db URL: %v\n%s", err, out)
	}
	a, b := e.serveHTTP("--console-url", public), e.serveHTTP("--console-url", public)
	onA := &serveProc{e: e, c: tokenClient(t, a.base+"/mcp", token)}
	result := make(chan tools.OperationView, 1)
	go func() {
		v, err := onA.call("register_domain", map[string]any{"domain": "console-replicas.dev", "reason": "console replica test: one launch page"})
		if err != nil {
			t.Errorf("register_domain on A: %v", err)
		}
		result <- v
	}()
	opID := e.awaitingApproval("the registration to await approval", 1)[0].ID
	reqID := e.requestID(opID)

	out, err = e.cli("approvals", "open", "--print", "--as", "bob", "--request", reqID)
	link := regexp.MustCompile(regexp.QuoteMeta(public) + `/console/signin\?t=([A-Za-z0-9_-]{43})`).FindStringSubmatch(out)
	if err != nil || link == nil {
		t.Fatalf("approvals open --print: %v\n%s", err, out)
	}
	// A browser on the public address: its Origin is the public URL; the
	// load balancer sends each request to a replica of its choosing.
	c := &http.Client{Timeout: 60 * time.Second, // a hang guard only
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(r *httpReplica, method, path, cookie string, form url.Values) (*http.Response, string) {
		t.Helper()
		var body io.Reader
		if form != nil {
			body = strings.NewReader(form.Encode())
		}
		req, err := http.NewRequest(method, r.base+path, body)
		if err != nil {
			t.Fatal(err)
		}
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Origin", public)
		}
		if cookie != "" {
			req.Header.Set("Cookie", cookie)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		bs, _ := io.ReadAll(resp.Body)
		return resp, string(bs)
	}
	resp, body := do(a, http.MethodPost, "/console/signin", "", url.Values{"t": {link[1]}})
	if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 1 {
		t.Fatalf("sign-in on A: %d %v\n%s", resp.StatusCode, resp.Cookies(), body)
	}
	cookie := resp.Cookies()[0].Name + "=" + resp.Cookies()[0].Value
	if resp, body = do(b, http.MethodPost, "/console/signin", "", url.Values{"t": {link[1]}}); resp.StatusCode == http.StatusSeeOther || len(resp.Cookies()) != 0 {
		t.Fatalf("B signed someone in with the link A already used: %d\n%s", resp.StatusCode, body)
	}
	_, pageA := do(a, http.MethodGet, "/console/approvals/"+reqID, cookie, nil)
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(pageA)
	if m == nil {
		t.Fatalf("no CSRF token on A's page of %s:\n%s", reqID, pageA)
	}
	if resp, body = do(b, http.MethodGet, "/console/approvals/"+reqID, cookie, nil); resp.StatusCode != http.StatusOK || !strings.Contains(body, reqID) || !strings.Contains(body, m[1]) {
		t.Fatalf("A's session on B: %d; want the request's page with the same form token\n%s", resp.StatusCode, body)
	}
	if resp, body = do(b, http.MethodPost, "/console/approvals/"+reqID+"/approve", cookie, url.Values{"csrf": {m[1]}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("approve on B with A's session: %d\n%s", resp.StatusCode, body)
	}
	select {
	case v := <-result:
		if v.Status != "succeeded" || v.Charged == nil || v.Charged.Micros != price {
			t.Fatalf("the call waiting on A ended %+v; want succeeded once approved in the console on B", v)
		}
	case <-time.After(2 * time.Minute): // a hang guard only
		t.Fatal("the console approval on B did not resume the call waiting on A")
	}
	var voted []string
	if err := e.db.Events(context.Background(), ledger.EventQuery{OperationID: opID, Types: []string{"approval.voted"}}, func(ev ledger.Event) error {
		voted = append(voted, ev.Actor)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(voted) != 1 || !strings.Contains(voted[0], "bob") {
		t.Fatalf("votes on %s by %v; want one, bob's", opID, voted)
	}
	// Signing out on B ends the session everywhere.
	if resp, body = do(b, http.MethodPost, "/console/signout", cookie, url.Values{"csrf": {m[1]}}); resp.StatusCode != http.StatusOK || !strings.Contains(body, "Signed out") {
		t.Fatalf("sign-out on B: %d\n%s", resp.StatusCode, body)
	}
	if resp, body = do(a, http.MethodGet, "/console/approvals/"+reqID, cookie, nil); resp.StatusCode != http.StatusUnauthorized || strings.Contains(body, m[1]) {
		t.Fatalf("A answers the session signed out on B with %d; want 401\n%s", resp.StatusCode, body)
	}
	a.stop()
	b.stop()
	e.checkLedgerMatchesSandbox()
}
