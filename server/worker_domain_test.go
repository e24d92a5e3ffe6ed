package server

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tollgatehq/tollgate/authz"
	"github.com/tollgatehq/tollgate/cloudflare"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/tools"
)

// liveSite registers domain and deploys script to production for webBot,
// approving both, as a live site's first two steps.
func liveSite(t *testing.T, e *testEnv, domain, script string) {
	t.Helper()
	v := opView(t, e.call(webBot, "register_domain", registerArgs(domain)))
	e.approve(v.OperationID, "bob")
	e.waitState(v.OperationID, ledger.StateSucceeded)
	v = opView(t, e.call(webBot, "deploy_worker", map[string]any{
		"script_name": script, "module": okModule, "environment": "production", "reason": reason,
	}))
	e.approve(v.OperationID, "bob")
	e.waitState(v.OperationID, ledger.StateSucceeded)
}

// TestAttachWorkerDomainEndToEnd takes a Worker live on a domain the team
// registered: policy, approval showing what serves the hostname now, a
// token on exactly that zone, the custom domain at Cloudflare, then detach.
func TestAttachWorkerDomainEndToEnd(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) { c.Approvals.Wait = 0 }))
	ctx := context.Background()
	liveSite(t, e, "web-shop.dev", "web-site")
	var zoneID string
	for _, z := range e.sb.Zones() {
		if z.Name == "web-shop.dev" {
			zoneID = z.ID
		}
	}
	if zoneID == "" {
		t.Fatal("the registration created no zone")
	}

	res := e.call(webBot, "attach_worker_domain", map[string]any{
		"script_name": "web-site", "hostname": "WWW.Web-Shop.dev.", "environment": "production", "reason": reason,
	})
	if res.IsError {
		t.Fatalf("attach: %s", text(res))
	}
	v := opView(t, res)
	if v.Status != "awaiting_approval" {
		t.Fatalf("production attach must wait for a human: %+v", v)
	}
	req := e.pendingApproval(v.OperationID)
	if !strings.Contains(req.Summary, "www.web-shop.dev will start serving Worker web-site (production)") || !strings.Contains(req.Summary, "served now by nothing") {
		t.Fatalf("approval summary %q does not say which hostname serves which script and what serves it now", req.Summary)
	}
	if len(e.sb.Domains()) != 0 {
		t.Fatal("attached before approval")
	}
	e.approve(v.OperationID, "bob")
	op := e.waitState(v.OperationID, ledger.StateSucceeded)
	ds := e.sb.Domains()
	if len(ds) != 1 || ds[0].Hostname != "www.web-shop.dev" || ds[0].Service != "web-site" || ds[0].ZoneID != zoneID {
		t.Fatalf("custom domains %+v", ds)
	}
	var out tools.WorkerDomainResult
	if err := json.Unmarshal(op.Result, &out); err != nil || out.Script != "web-site" || out.Zone != "web-shop.dev" {
		t.Fatalf("result %s: %v", op.Result, err)
	}
	// The execution's token held Workers Routes Write on exactly that zone.
	var minted map[string]any
	_ = e.db.Events(ctx, ledger.EventQuery{OperationID: v.OperationID}, func(ev ledger.Event) error {
		if ev.Type == "token.minted" {
			_ = json.Unmarshal(ev.Data, &minted)
		}
		return nil
	})
	if minted["purpose"] != "attach" || minted["resources"] != "this account; zones "+zoneID ||
		!strings.Contains(strings.Join(anyStrings(minted["permission_groups"]), ","), cloudflare.GroupRoutesWrite) {
		t.Fatalf("token.minted %v", minted)
	}
	requireEvents(t, e, v.OperationID, "operation.created", "policy.decision", "approval.requested", "approval.decided",
		"token.minted", "cloudflare.request", "token.revoked", "budget.settled")
	for _, tok := range operationTokens(e) {
		if !strings.Contains(tok.Name, ":inspect:") {
			t.Fatalf("token %s alive after the operation", tok.Name)
		}
	}

	// Detach: always approved, and the message says which Worker stops.
	v = opView(t, e.call(webBot, "detach_worker_domain", map[string]any{"hostname": "www.web-shop.dev", "reason": reason}))
	req = e.pendingApproval(v.OperationID)
	if !strings.Contains(req.Summary, "www.web-shop.dev will stop serving Worker web-site") {
		t.Fatalf("detach summary %q", req.Summary)
	}
	e.approve(v.OperationID, "bob")
	e.waitState(v.OperationID, ledger.StateSucceeded)
	if ds := e.sb.Domains(); len(ds) != 0 {
		t.Fatalf("custom domains after detach %+v", ds)
	}
	// Nothing to detach now: refused before any approval.
	v = opView(t, e.call(webBot, "detach_worker_domain", map[string]any{"hostname": "www.web-shop.dev", "reason": reason, "idempotency_key": "again"}))
	if v.Status != "failed" || v.ErrorCode != "not_attached" {
		t.Fatalf("detach of a detached hostname: %+v", v)
	}
}

// TestAttachRefusedOffTheTeamsDomains: a domain another team registered is
// refused by the default policy, and a preview subdomain attach on the
// team's own domain needs no approval.
func TestAttachRefusedOffTheTeamsDomains(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) { c.Approvals.Wait = 0 }))
	liveSite(t, e, "web-own.dev", "web-app")
	v := opView(t, e.call(opsBot, "register_domain", registerArgs("ops-own.dev")))
	e.approve(v.OperationID, "bob")
	e.waitState(v.OperationID, ledger.StateSucceeded)

	v = opView(t, e.call(webBot, "attach_worker_domain", map[string]any{
		"script_name": "web-app", "hostname": "www.ops-own.dev", "environment": "preview", "reason": reason,
	}))
	if v.Status != "denied" || !strings.Contains(v.Error, "ops-own.dev was not registered through tollgate by team web") {
		t.Fatalf("attach on another team's domain: %+v", v)
	}
	// A hostname on no zone of the account.
	v = opView(t, e.call(webBot, "attach_worker_domain", map[string]any{
		"script_name": "web-app", "hostname": "nowhere-at-all.dev", "environment": "preview", "reason": reason,
	}))
	if v.Status != "failed" || v.ErrorCode != "not_on_account" {
		t.Fatalf("attach off the account: %+v", v)
	}
	// A preview Worker on a subdomain of the team's own domain: no human.
	res := e.call(webBot, "deploy_worker", map[string]any{"script_name": "web-app", "module": okModule, "environment": "preview", "reason": reason})
	if res.IsError {
		t.Fatalf("preview deploy: %s", text(res))
	}
	v = opView(t, e.call(webBot, "attach_worker_domain", map[string]any{
		"script_name": "web-app", "hostname": "beta.web-own.dev", "environment": "preview", "reason": reason,
	}))
	if v.Status != "succeeded" {
		t.Fatalf("preview subdomain attach: %+v", v)
	}
	if _, err := e.srv.Approvals().ByOperation(context.Background(), v.OperationID); err == nil {
		t.Fatal("a preview subdomain attach asked for an approval")
	}
	// The apex always waits, preview or not.
	v = opView(t, e.call(webBot, "attach_worker_domain", map[string]any{
		"script_name": "web-app", "hostname": "web-own.dev", "environment": "preview", "reason": reason,
	}))
	if v.Status != "awaiting_approval" {
		t.Fatalf("apex attach: %+v", v)
	}
}

// TestAttachTokenScope: the token the attach tool declares, minted for one
// zone, is refused on another zone and on the registrar before any request
// (cloudflare's TestZoneScopedSession shows the sandbox refusing the raw
// value of such a token too).
func TestAttachTokenScope(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) { c.Approvals.Wait = 0 }))
	liveSite(t, e, "web-zone-a.dev", "web-z")
	v := opView(t, e.call(webBot, "register_domain", registerArgs("web-zone-b.dev")))
	e.approve(v.OperationID, "bob")
	e.waitState(v.OperationID, ledger.StateSucceeded)
	zones := map[string]string{}
	for _, z := range e.sb.Zones() {
		zones[z.Name] = z.ID
	}
	m := tools.Mutations(tools.Config{})["attach_worker_domain"]
	ctx := context.Background()
	s, err := e.srv.broker.Open(ctx, cloudflare.SessionSpec{Name: "attach", Label: "scope-test", Permissions: m.Access().Execute, Zones: []string{zones["web-zone-a.dev"]}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	before := len(e.sb.Requests())
	if _, err := s.AttachDomain(ctx, cloudflare.AttachParams{Hostname: "web-zone-b.dev", Script: "web-z", ZoneID: zones["web-zone-b.dev"]}); !errors.Is(err, cloudflare.ErrWrongPurpose) {
		t.Fatalf("attach on zone b: %v", err)
	}
	if _, err := s.CheckDomains(ctx, "web-zone-c.dev"); !errors.Is(err, cloudflare.ErrWrongPurpose) {
		t.Fatalf("registrar with the attach token: %v", err)
	}
	if _, err := s.Register(ctx, cloudflare.RegisterParams{Domain: "web-zone-c.dev"}); !errors.Is(err, cloudflare.ErrWrongPurpose) {
		t.Fatalf("register with the attach token: %v", err)
	}
	if n := len(e.sb.Requests()) - before; n != 0 {
		t.Fatalf("refused calls made %d requests", n)
	}
	if _, err := s.AttachDomain(ctx, cloudflare.AttachParams{Hostname: "web-zone-a.dev", Script: "web-z", ZoneID: zones["web-zone-a.dev"]}); err != nil {
		t.Fatalf("attach on zone a: %v", err)
	}
}

func anyStrings(v any) []string {
	var out []string
	if xs, ok := v.([]any); ok {
		for _, x := range xs {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
	}
	return out
}

// TestListDomainsAndWorkers: each agent sees the domains its team
// registered and its team's Workers, with which Worker serves which
// hostname; the rest is counted as hidden, and every check is audited.
func TestListDomainsAndWorkers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) { c.Approvals.Wait = 0 }))
	liveSite(t, e, "web-list.dev", "web-list")
	v := opView(t, e.call(webBot, "attach_worker_domain", map[string]any{
		"script_name": "web-list", "hostname": "www.web-list.dev", "environment": "production", "reason": reason,
	}))
	e.approve(v.OperationID, "bob")
	e.waitState(v.OperationID, ledger.StateSucceeded)
	v = opView(t, e.call(opsBot, "register_domain", registerArgs("ops-list.dev")))
	e.approve(v.OperationID, "bob")
	e.waitState(v.OperationID, ledger.StateSucceeded)

	doms := structured[tools.ListDomainsResult](t, e.call(webBot, "list_domains", map[string]any{}))
	if len(doms.Domains) != 1 || doms.Domains[0].Domain != "web-list.dev" || !doms.Domains[0].RegisteredByTeam || doms.Hidden != 1 {
		t.Fatalf("web's domains %+v", doms)
	}
	if hs := doms.Domains[0].Hostnames; len(hs) != 1 || hs[0].Hostname != "www.web-list.dev" || hs[0].Worker != "web-list" || hs[0].Environment != "production" {
		t.Fatalf("web's hostnames %+v", hs)
	}
	ops := structured[tools.ListDomainsResult](t, e.call(opsBot, "list_domains", map[string]any{}))
	if len(ops.Domains) != 1 || ops.Domains[0].Domain != "ops-list.dev" || len(ops.Domains[0].Hostnames) != 0 || ops.Hidden != 2 {
		t.Fatalf("ops's domains %+v", ops)
	}

	ws := structured[tools.ListWorkersResult](t, e.call(webBot, "list_workers", map[string]any{}))
	if len(ws.Workers) != 1 || ws.Workers[0].Name != "web-list" || len(ws.Workers[0].Hostnames) != 1 || ws.Workers[0].Hostnames[0] != "www.web-list.dev" {
		t.Fatalf("web's workers %+v", ws)
	}
	ws = structured[tools.ListWorkersResult](t, e.call(opsBot, "list_workers", map[string]any{}))
	if len(ws.Workers) != 0 || ws.Hidden != 1 {
		t.Fatalf("ops sees %+v", ws)
	}
	n := 0
	_ = e.db.Events(context.Background(), ledger.EventQuery{}, func(ev ledger.Event) error {
		if ev.Type == "policy.decision" && strings.Contains(string(ev.Data), `"action":"read"`) && strings.Contains(string(ev.Data), "worker_domain:") {
			n++
		}
		return nil
	})
	if n != 6 { // 3 checks (2 zones, 1 hostname) for each of the two list_domains calls
		t.Fatalf("%d audited read decisions on worker_domain, want 6", n)
	}
}

// TestLiveSiteWork counts the work of the live-site tools: list_domains
// checks every domain and hostname in one PDP request and reads Cloudflare
// twice (zones, custom domains); a preview attach makes exactly its lookups,
// its token's mint and deletion, one read and one write.
func TestLiveSiteWork(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) { c.Approvals.Wait = 0 }))
	liveSite(t, e, "web-work.dev", "web-work")
	if res := e.call(webBot, "deploy_worker", map[string]any{"script_name": "web-work", "module": okModule, "environment": "preview", "reason": reason}); res.IsError {
		t.Fatal(text(res))
	}
	// Warm the shared lookup token, so its mint is not counted below.
	structured[tools.ListDomainsResult](t, e.call(webBot, "list_domains", map[string]any{}))

	calls := func(fn func()) (pdp uint64, cf []string) {
		pdp0, cf0 := e.az.Stats().Requests, len(e.sb.Requests())
		fn()
		for _, r := range e.sb.Requests()[cf0:] {
			path := r.Path
			for _, part := range []string{"/tokens", "/workers/domains", "/zones"} {
				if i := strings.Index(path, part); i >= 0 {
					path = part
				}
			}
			cf = append(cf, r.Method+" "+path)
		}
		return e.az.Stats().Requests - pdp0, cf
	}
	pdp, cf := calls(func() {
		for _, h := range []string{"a", "b", "c"} {
			v := opView(t, e.call(webBot, "attach_worker_domain", map[string]any{"script_name": "web-work", "hostname": h + ".web-work.dev", "environment": "preview", "reason": reason}))
			if v.Status != "succeeded" {
				t.Fatalf("attach %s: %+v", h, v)
			}
		}
	})
	// Per attach of a subdomain: the plan finds the zone (the hostname's
	// name, then its parent's) and what serves the hostname; the token is
	// scoped to the zone the plan found, without asking again; then the
	// token's mint, one read, one write and the token's deletion.
	want := []string{"GET /zones", "GET /zones", "GET /workers/domains", "POST /tokens", "GET /workers/domains", "PUT /workers/domains", "DELETE /tokens"}
	if len(cf) != 3*len(want) || strings.Join(cf[:len(want)], ", ") != strings.Join(want, ", ") {
		t.Errorf("Cloudflare requests of three attaches: %v; want %v three times", cf, want)
	}
	// The plan needs Cloudflare, so the arguments are checked first, alone.
	if pdp != 3*2 {
		t.Errorf("%d PDP requests for three attaches, want 2 each (arguments first, then the plan; no approval)", pdp)
	}
	pdp, cf = calls(func() {
		doms := structured[tools.ListDomainsResult](t, e.call(webBot, "list_domains", map[string]any{}))
		if len(doms.Domains) != 1 || len(doms.Domains[0].Hostnames) != 3 {
			t.Fatalf("domains %+v", doms)
		}
	})
	if pdp != 1 || strings.Join(cf, ", ") != "GET /zones, GET /workers/domains" {
		t.Errorf("list_domains: %d PDP requests, Cloudflare %v; want 1 and one zone and one custom-domain list", pdp, cf)
	}
	t.Logf("attach of a subdomain: %d Cloudflare requests and 2 PDP requests each; list_domains of 1 domain and 3 hostnames: 1 PDP request, 2 Cloudflare reads", len(want))
}

// TestConsoleSaysWhatApprovingDoes: the console's "what will happen" words
// come from each tool's inventory entry: an apex attach and a detach (which
// carry no irreversible flag and once got no words at all) say which
// hostname starts or stops answering and how to undo it; a rollback, which
// needs no human by default, has its words on the operation the console
// reads too.
func TestConsoleSaysWhatApprovingDoes(t *testing.T) {
	t.Parallel()
	e, base := consoleEnv(t, withConfig(func(c *Config) { c.Approvals.Wait = 0 }))
	liveSite(t, e, "web-say.dev", "web-say")
	browser := httpSignIn(t, base, e.link(t, "bob", "", 0))
	happens := func(opID string) string {
		t.Helper()
		code, body := get(t, browser, base+"/console/approvals/"+e.pendingApproval(opID).ID)
		i := strings.Index(body, `<ul id="happens">`)
		if code != http.StatusOK || i < 0 {
			t.Fatalf("approval page: %d\n%s", code, body)
		}
		return body[i : i+strings.Index(body[i:], "</ul>")]
	}

	v := opView(t, e.call(webBot, "attach_worker_domain", map[string]any{
		"script_name": "web-say", "hostname": "web-say.dev", "environment": "production", "reason": reason,
	}))
	got := happens(v.OperationID)
	for _, want := range []string{"web-say.dev answers with Worker web-say as soon as it is attached", "detach_worker_domain undoes it", "It is the apex"} {
		if !strings.Contains(got, want) {
			t.Errorf("attach: what will happen does not say %q:\n%s", want, got)
		}
	}
	e.approve(v.OperationID, "bob")
	e.waitState(v.OperationID, ledger.StateSucceeded)

	v = opView(t, e.call(webBot, "detach_worker_domain", map[string]any{"hostname": "web-say.dev", "reason": reason}))
	if got := happens(v.OperationID); !strings.Contains(got, "web-say.dev stops answering as soon as it is detached") {
		t.Errorf("detach: what will happen:\n%s", got)
	}
	e.approve(v.OperationID, "bob")
	e.waitState(v.OperationID, ledger.StateSucceeded)

	v = opView(t, e.call(webBot, "deploy_worker", map[string]any{
		"script_name": "web-say", "module": strings.Replace(okModule, "'ok'", "'ok, v2'", 1), "environment": "production", "reason": reason,
	}))
	if got := happens(v.OperationID); !strings.Contains(got, "replaces the one live in production (web-say)") {
		t.Errorf("production deploy: what will happen:\n%s", got)
	}
	e.approve(v.OperationID, "bob")
	e.waitState(v.OperationID, ledger.StateSucceeded)

	v = opView(t, e.call(webBot, "rollback_worker", map[string]any{"script_name": "web-say", "reason": reason}))
	if v.Status != "succeeded" {
		t.Fatalf("rollback: %+v", v)
	}
	op, err := newConsoleSource(e.srv).Operation(context.Background(), v.OperationID)
	if err != nil || !strings.Contains(op.Consequence, "All production traffic of web-say moves at once") {
		t.Errorf("rollback's words on the console's operation: %q %v", op.Consequence, err)
	}
}

// TestRollbackApprovalByPolicy: the rule the README gives a team that wants
// production rollbacks approved makes rollback_worker wait for a human, and
// the console says what approving it does.
func TestRollbackApprovalByPolicy(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(readme), "    - name: rollback-needs-approval")
	if i < 0 {
		t.Fatal("the README gives no rollback-needs-approval rule")
	}
	rule := string(readme[i:])
	rule = rule[:strings.Index(rule, "```")]
	dir := filepath.Join(t.TempDir(), "policies")
	if err := os.CopyFS(dir, os.DirFS(filepath.Join("..", "cerbos-policies"))); err != nil {
		t.Fatal(err)
	}
	pol := filepath.Join(dir, "resource_policies", "worker_script.yaml")
	src, err := os.ReadFile(pol)
	if err != nil {
		t.Fatal(err)
	}
	const anchor = "    # --- guardrails"
	if !strings.Contains(string(src), anchor) {
		t.Fatal("worker_script.yaml has no guardrails section to put the rule before")
	}
	if err := os.WriteFile(pol, []byte(strings.Replace(string(src), anchor, rule+"\n"+anchor, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := authz.StartManaged(context.Background(), authz.ManagedConfig{
		PolicyDir: dir, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
	})
	if err != nil {
		t.Fatalf("managed PDP with the README's rule: %v", err)
	}
	t.Cleanup(func() { _ = m.Stop() })

	e, base := consoleEnv(t, withPDP(m.Addr()), withConfig(func(c *Config) { c.Approvals.Wait = 0 }))
	liveSite(t, e, "web-back.dev", "web-back")
	v := opView(t, e.call(webBot, "deploy_worker", map[string]any{
		"script_name": "web-back", "module": strings.Replace(okModule, "'ok'", "'ok, v2'", 1), "environment": "production", "reason": reason,
	}))
	e.approve(v.OperationID, "bob")
	e.waitState(v.OperationID, ledger.StateSucceeded)

	v = opView(t, e.call(webBot, "rollback_worker", map[string]any{"script_name": "web-back", "reason": reason}))
	if v.Status != "awaiting_approval" {
		t.Fatalf("rollback under the rule: %+v", v)
	}
	req := e.pendingApproval(v.OperationID)
	if !strings.Contains(req.Policy, "production rollbacks of web-back wait for a human") {
		t.Errorf("the approval does not say why: %q", req.Policy)
	}
	browser := httpSignIn(t, base, e.link(t, "bob", "", 0))
	if _, body := get(t, browser, base+"/console/approvals/"+req.ID); !strings.Contains(body, "All production traffic of web-back moves at once") {
		t.Errorf("the console does not say what approving the rollback does:\n%s", body)
	}
	e.approve(v.OperationID, "bob")
	e.waitState(v.OperationID, ledger.StateSucceeded)
}
