package cloudflare

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/cloudflare/cloudflare-go/v6/workers"
	"github.com/cloudflare/cloudflare-go/v6/zones"

	"github.com/tollgatehq/tollgate/cloudflare/sandbox"
)

// register buys a domain through a register session (so its zone exists)
// and returns the zone's id.
func (e *env) register(t testing.TB, domain string) string {
	t.Helper()
	s := e.session(t, PurposeRegister, "reg-"+strings.ReplaceAll(domain, ".", "-"))
	if _, err := s.Register(context.Background(), RegisterParams{Domain: domain}); err != nil {
		t.Fatalf("register %s: %v", domain, err)
	}
	for _, z := range e.sb.Zones() {
		if z.Name == domain {
			return z.ID
		}
	}
	t.Fatalf("no zone for %s", domain)
	return ""
}

func (e *env) open(t testing.TB, spec SessionSpec) *Session {
	t.Helper()
	s, err := e.b.Open(context.Background(), spec)
	if err != nil {
		t.Fatalf("Open(%+v): %v", spec, err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

func (e *env) deployScript(t testing.TB, name, src string) {
	t.Helper()
	s := e.session(t, PurposeDeploy, "deploy-"+name)
	if _, err := s.DeployWorker(context.Background(), DeployParams{ScriptName: name, Module: []byte(src), CompatibilityDate: "2025-01-01"}); err != nil {
		t.Fatal(err)
	}
}

// attachPermissions is what attaching a Worker to a hostname takes.
var attachPermissions = Permissions{Account: []string{GroupWorkersWrite}, Zone: []string{GroupRoutesWrite}}

// TestZoneScopedSession is the acceptance case: a token minted to attach a
// Worker on one zone attaches there, and is refused on another zone and on
// the registrar — locally by the Session, and by Cloudflare (the sandbox)
// when its value is used directly.
func TestZoneScopedSession(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	zoneA := e.register(t, "scope-a.dev")
	zoneB := e.register(t, "scope-b.dev")
	e.deployScript(t, "scoped", workerSrc)

	s := e.open(t, SessionSpec{Name: "attach_worker_domain", Label: "op_attach", Permissions: attachPermissions, Zones: []string{zoneA}})
	tokens := e.sb.LiveTokens()
	var minted []string
	for _, tk := range tokens {
		if tk.ID == s.TokenID {
			minted = tk.Resources
			if strings.Join(tk.PermissionGroups, ",") != GroupRoutesWrite+","+GroupWorkersWrite {
				t.Errorf("minted groups %v", tk.PermissionGroups)
			}
		}
	}
	if strings.Join(minted, ",") != "com.cloudflare.api.account."+e.sb.AccountID()+",com.cloudflare.api.account.zone."+zoneA {
		t.Fatalf("minted resources %v", minted)
	}
	if !strings.HasPrefix(findName(e, s.TokenID), "tollgate:attach_worker_domain:op_attach:") {
		t.Fatalf("token name %q", findName(e, s.TokenID))
	}

	apex, err := s.AttachDomain(ctx, AttachParams{Hostname: "scope-a.dev", Script: "scoped", ZoneID: zoneA})
	if err != nil || apex.ZoneID != zoneA || apex.Script != "scoped" || apex.Hostname != "scope-a.dev" || apex.ID == "" || apex.CertID == "" {
		t.Fatalf("attach apex: %+v, %v", apex, err)
	}
	if _, err := s.AttachDomain(ctx, AttachParams{Hostname: "WWW.scope-a.dev", Script: "scoped", ZoneID: zoneA}); err != nil {
		t.Fatalf("attach www: %v", err)
	}

	before := len(e.sb.Requests())
	if _, err := s.AttachDomain(ctx, AttachParams{Hostname: "scope-b.dev", Script: "scoped", ZoneID: zoneB}); !errors.Is(err, ErrWrongPurpose) {
		t.Fatalf("attach on zone b through the session: %v", err)
	}
	if _, err := s.CheckDomains(ctx, "x.dev"); !errors.Is(err, ErrWrongPurpose) {
		t.Fatalf("registrar through the attach session: %v", err)
	}
	if n := len(e.sb.Requests()); n != before {
		t.Fatalf("refused calls made %d requests", n-before)
	}

	// The token's value, used directly, is refused by Cloudflare too: on
	// zone b (naming zone a's id or not), and on the registrar.
	raw := workers.NewDomainService(rawClient(e, s.token)...)
	for _, zoneID := range []string{zoneB, zoneA} {
		var q workers.DomainUpdateParams
		q.AccountID.Value, q.AccountID.Present = e.sb.AccountID(), true
		q.Hostname.Value, q.Hostname.Present = "www.scope-b.dev", true
		q.Service.Value, q.Service.Present = "scoped", true
		q.ZoneID.Value, q.ZoneID.Present = zoneID, true
		_, err := raw.Update(ctx, q)
		if status, _ := statusOf(t, err); status != http.StatusForbidden && status != http.StatusBadRequest {
			t.Fatalf("raw attach on zone b naming %s: %v", zoneID, err)
		}
	}
	if status, code := statusOf(t, domainCheck(ctx, e, s.token)); status != http.StatusForbidden || code != 10000 {
		t.Fatalf("raw attach token on domain-check: %d %d", status, code)
	}
	if status, _ := statusOf(t, registerWith(ctx, e, s.token, "attach-buys.dev")); status != http.StatusForbidden {
		t.Fatalf("raw attach token registering: %d", status)
	}
	if d := e.sb.Domains(); len(d) != 2 || d[0].ZoneID != zoneA || d[1].ZoneID != zoneA {
		t.Fatalf("domains after the refusals: %+v", d)
	}
	var zq zones.ZoneGetParams
	zq.ZoneID.Value, zq.ZoneID.Present = zoneB, true
	if _, err := zones.NewZoneService(rawClient(e, s.token)...).Get(ctx, zq); err == nil {
		t.Fatal("the attach token reads zone b")
	}
}

func findName(e *env, id string) string {
	for _, t := range e.sb.LiveTokens() {
		if t.ID == id {
			return t.Name
		}
	}
	return ""
}

func TestCustomDomainLifecycle(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	zone := e.register(t, "life.dev")
	e.deployScript(t, "life", workerSrc)
	e.deployScript(t, "life-next", workerSrc+"// next")

	lookup := e.open(t, SessionSpec{Name: "zones", Label: "lookup", Permissions: Permissions{Zone: []string{GroupZoneRead}}, AllZones: true})
	for _, h := range []string{"life.dev", "www.life.dev", "a.b.life.dev."} {
		z, err := lookup.ZoneFor(ctx, h)
		if err != nil || z.ID != zone || z.Name != "life.dev" || z.Status != "active" {
			t.Fatalf("ZoneFor(%s) = %+v, %v", h, z, err)
		}
	}
	if _, err := lookup.ZoneFor(ctx, "www.nobody.dev"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ZoneFor on no zone: %v", err)
	}
	for _, bad := range []string{"*.life.dev", "life", "li fe.dev", "-x.life.dev"} {
		if _, err := lookup.ZoneFor(ctx, bad); err == nil || errors.Is(err, ErrNotFound) {
			t.Errorf("ZoneFor(%q) = %v, want a syntax error", bad, err)
		}
	}
	all, err := lookup.ListZones(ctx)
	if err != nil || len(all) != 1 || all[0].ID != zone {
		t.Fatalf("ListZones = %+v, %v", all, err)
	}

	s := e.open(t, SessionSpec{Name: "attach", Label: "op_1", Permissions: attachPermissions, Zones: []string{zone}})
	www, err := s.AttachDomain(ctx, AttachParams{Hostname: "www.life.dev", Script: "life", ZoneID: zone})
	if err != nil {
		t.Fatal(err)
	}
	moved, err := s.AttachDomain(ctx, AttachParams{Hostname: "www.life.dev", Script: "life-next", ZoneID: zone})
	if err != nil || moved.ID != www.ID || moved.Script != "life-next" {
		t.Fatalf("re-attach: %+v, %v", moved, err)
	}
	if _, err := s.AttachDomain(ctx, AttachParams{Hostname: "api.life.dev", Script: "ghost", ZoneID: zone}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("attach a missing Worker: %v", err)
	}

	read := e.open(t, SessionSpec{Name: "list_domains", Label: "op_2", Permissions: Permissions{Account: []string{GroupWorkersRead}}})
	list, err := read.ListDomains(ctx, DomainFilter{ZoneID: zone})
	if err != nil || len(list) != 1 || list[0] != *moved {
		t.Fatalf("ListDomains = %+v, %v", list, err)
	}
	if list, err := read.ListDomains(ctx, DomainFilter{Script: "life"}); err != nil || len(list) != 0 {
		t.Fatalf("ListDomains(script life) = %+v, %v", list, err)
	}
	got, err := read.GetDomain(ctx, www.ID)
	if err != nil || *got != *moved {
		t.Fatalf("GetDomain = %+v, %v", got, err)
	}
	if _, err := read.GetDomain(ctx, "0123"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetDomain(unknown): %v", err)
	}
	if err := read.DetachDomain(ctx, *got); !errors.Is(err, ErrWrongPurpose) {
		t.Fatalf("detach with a read session: %v", err)
	}
	if err := s.DetachDomain(ctx, *got); err != nil {
		t.Fatal(err)
	}
	if err := s.DetachDomain(ctx, *got); !errors.Is(err, ErrNotFound) {
		t.Fatalf("detach twice: %v", err)
	}
	workersList, err := read.ListWorkers(ctx)
	if err != nil || len(workersList) != 2 || workersList[0].Name != "life" || workersList[0].Etag == "" {
		t.Fatalf("ListWorkers = %+v, %v", workersList, err)
	}
}

// TestGradualRollout uploads a version, moves traffic 10/50/100 %, rolls
// back, and finds the version again by its tag.
func TestGradualRollout(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.deployScript(t, "gradual", workerSrc)
	s := e.session(t, PurposeDeploy, "op_roll")
	deps, err := s.Deployments(ctx, "gradual")
	if err != nil || len(deps) != 1 || len(deps[0].Traffic) != 1 || deps[0].Traffic[0].Percentage != 100 {
		t.Fatalf("Deployments = %+v, %v", deps, err)
	}
	prev := deps[0].Traffic[0].VersionID
	v, err := s.UploadVersion(ctx, VersionParams{ScriptName: "gradual", Module: []byte(workerSrc + "// v2"), CompatibilityDate: "2025-01-01", Tag: "op_roll", Message: "rollout"})
	if err != nil || v.ID == "" || v.Number != 2 || v.Tag != "op_roll" || v.Message != "rollout" || v.CreatedOn.IsZero() {
		t.Fatalf("UploadVersion = %+v, %v", v, err)
	}
	if e.sb.Scripts()[0].VersionID != prev {
		t.Fatal("an uploaded version serves before any deployment")
	}
	for _, pct := range []int{10, 50, 100} {
		d, err := s.RolloutStep(ctx, "gradual", prev, v.ID, pct, "step")
		if err != nil || d.Traffic[0] != (TrafficShare{VersionID: v.ID, Percentage: float64(pct)}) || d.Message != "step" {
			t.Fatalf("step %d: %+v, %v", pct, d, err)
		}
	}
	if got := e.sb.Scripts()[0]; got.VersionID != v.ID || len(got.Traffic) != 1 {
		t.Fatalf("after 100 %%: %+v", got)
	}
	if _, err := s.Rollback(ctx, "gradual", prev, "rollback"); err != nil {
		t.Fatal(err)
	}
	if got := e.sb.Scripts()[0]; got.VersionID != prev {
		t.Fatalf("after rollback: %+v", got)
	}
	deps, err = s.Deployments(ctx, "gradual")
	if err != nil || len(deps) != 5 || deps[0].Message != "rollback" || deps[0].Traffic[0].VersionID != prev {
		t.Fatalf("Deployments after rollback = %+v, %v", deps, err)
	}
	vs, err := s.Versions(ctx, "gradual")
	if err != nil || len(vs) != 2 || vs[0].ID != v.ID || vs[0].Tag != "op_roll" || vs[1].ID != prev {
		t.Fatalf("Versions = %+v, %v", vs, err)
	}
	// Bad splits fail locally.
	before := len(e.sb.Requests())
	for _, bad := range [][]TrafficShare{
		nil,
		{{VersionID: prev, Percentage: 50}},
		{{VersionID: prev, Percentage: 50}, {VersionID: prev, Percentage: 50}},
		{{VersionID: prev, Percentage: 101}, {VersionID: v.ID, Percentage: -1}},
		{{VersionID: prev, Percentage: 30}, {VersionID: v.ID, Percentage: 30}, {VersionID: "x", Percentage: 40}},
	} {
		if _, err := s.Deploy(ctx, "gradual", bad, ""); err == nil {
			t.Errorf("Deploy(%+v) accepted", bad)
		}
	}
	if _, err := s.RolloutStep(ctx, "gradual", prev, v.ID, 0, ""); err == nil {
		t.Error("RolloutStep 0 % accepted")
	}
	if n := len(e.sb.Requests()); n != before {
		t.Fatalf("bad splits made %d requests", n-before)
	}
	if _, err := s.Deploy(ctx, "gradual", []TrafficShare{{VersionID: "00000000-0000-4000-8000-000000000000", Percentage: 100}}, ""); err == nil {
		t.Fatal("Deploy of an unknown version accepted")
	}
	if _, err := s.Deployments(ctx, "ghost"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Deployments(ghost): %v", err)
	}
}

// TestVersionUploadInDoubt: an upload whose answer is lost is in doubt, and
// is found again by its tag.
func TestVersionUploadInDoubt(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.deployScript(t, "doubt", workerSrc)
	s := e.session(t, PurposeDeploy, "op_doubt")
	e.sb.SetFaults(sandbox.Faults{ErrorRate: 1, FailAfterEffect: true, PathContains: "/versions", Method: "POST"})
	_, err := s.UploadVersion(ctx, VersionParams{ScriptName: "doubt", Module: []byte(workerSrc + "//2"), CompatibilityDate: "2025-01-01", Tag: "op_doubt"})
	if !errors.Is(err, ErrInDoubt) {
		t.Fatalf("lost answer: %v", err)
	}
	e.sb.SetFaults(sandbox.Faults{})
	vs, err := s.Versions(ctx, "doubt")
	if err != nil || len(vs) != 2 || vs[0].Tag != "op_doubt" {
		t.Fatalf("the in-doubt version is not findable by its tag: %+v, %v", vs, err)
	}
}

func TestSessionSpecRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	zone := e.register(t, "spec.dev")
	tests := []struct {
		name string
		spec SessionSpec
		want string
	}{
		{"bad name", SessionSpec{Name: "Attach:x", Label: "l", Permissions: attachPermissions, Zones: []string{zone}}, "name"},
		{"bad label", SessionSpec{Name: "a", Label: "a:b", Permissions: attachPermissions, Zones: []string{zone}}, "label"},
		{"no permissions", SessionSpec{Name: "a", Label: "l"}, "permissions: none"},
		{"zone groups without zones", SessionSpec{Name: "a", Label: "l", Permissions: attachPermissions}, "need the zones"},
		{"zones without zone groups", SessionSpec{Name: "a", Label: "l", Permissions: Permissions{Account: []string{GroupWorkersRead}}, Zones: []string{zone}}, "without zone permission"},
		{"both zones and all", SessionSpec{Name: "a", Label: "l", Permissions: attachPermissions, Zones: []string{zone}, AllZones: true}, "not both"},
		{"bad zone id", SessionSpec{Name: "a", Label: "l", Permissions: attachPermissions, Zones: []string{"nope"}}, `zone "nope"`},
		{"zone group on the account", SessionSpec{Name: "a", Label: "l", Permissions: Permissions{Account: []string{GroupZoneRead}}}, "is a zone permission group"},
		{"account group on zones", SessionSpec{Name: "a", Label: "l", Permissions: Permissions{Zone: []string{GroupWorkersWrite}}, Zones: []string{zone}}, "is an account permission group"},
		{"unknown group", SessionSpec{Name: "a", Label: "l", Permissions: Permissions{Account: []string{"Everything Write"}}}, `no permission group named "Everything Write"`},
	}
	before := len(e.sb.LiveTokens())
	for _, tc := range tests {
		if _, err := e.b.Open(context.Background(), tc.spec); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming %q", tc.name, err, tc.want)
		}
	}
	if n := len(e.sb.LiveTokens()); n != before {
		t.Fatalf("refused specs minted %d tokens", n-before)
	}
}
