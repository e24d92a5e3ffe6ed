package authz

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	requestv1 "github.com/cerbos/cerbos/api/genpb/cerbos/request/v1"
	responsev1 "github.com/cerbos/cerbos/api/genpb/cerbos/response/v1"
	schemav1 "github.com/cerbos/cerbos/api/genpb/cerbos/schema/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fakeSource is a PolicySource the test moves by hand.
type fakeSource struct{ st atomic.Pointer[PolicyState] }

func newFakeSource(t testing.TB) *fakeSource {
	reads, err := ReadPolicies(os.DirFS(repoPolicies(t)))
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeSource{}
	f.st.Store(&PolicyState{Generation: 1, Reads: reads})
	return f
}

func (f *fakeSource) PolicyState() PolicyState { return *f.st.Load() }

func (f *fakeSource) set(st PolicyState) { f.st.Store(&st) }

// withAttr is p with attribute k set to v (or removed when v is nil).
func withAttr(p Principal, k string, v any) Principal {
	p.Attr = maps.Clone(p.Attr)
	if v == nil {
		delete(p.Attr, k)
	} else {
		p.Attr[k] = v
	}
	return p
}

func TestDecisionCacheAgainstRealPDP(t *testing.T) {
	t.Parallel()
	sharedClient(t)
	demo := domain("tollgate-demo", "dev", 1, 12_000_000, "standard")
	other := domain("tollgate-other", "dev", 2, 24_000_000, "standard")
	tests := []struct {
		name    string
		p       Principal
		r       Resource
		wantHit bool
	}{
		{"same principal, same resource", webAgent(), demo, true},
		{"another session of the same agent", withAttr(webAgent(), "session_id", "s-2"), demo, true},
		{"another client program", withAttr(withAttr(webAgent(), "client_name", "cursor"), "client_version", "9"), demo, true},
		{"an attribute no policy reads", withAttr(webAgent(), "trust_tier", "high"), demo, true},
		{"another team (read by the worker rules)", withAttr(webAgent(), "team", "data"), demo, false},
		{"another role", Principal{ID: "web-bot", Roles: []string{"agent", "deployer"}, Attr: webAgent().Attr}, demo, false},
		{"another agent", Principal{ID: "data-bot", Roles: []string{"agent"}, Attr: webAgent().Attr}, demo, false},
		{"another price", webAgent(), domain("tollgate-demo", "dev", 1, 12_000_001, "standard"), false},
		{"an extra resource attribute", webAgent(), func() Resource { r := demo; r.Attr = maps.Clone(r.Attr); delete(r.Attr, "tier"); return r }(), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newClientT(t, shared.m.Addr(), WithDecisionCache(DecisionCacheConfig{Policies: shared.m}))
			ctx := context.Background()
			// The agent's own first check: its attributes are accepted by
			// the PDP and the decision is kept.
			first := c.Check(ctx, webAgent(), demo, "register")["register"]
			if !first.Allowed {
				t.Fatalf("warm-up: %v", first)
			}
			if n := c.Stats().Requests; n != 1 {
				t.Fatalf("warm-up made %d calls, want 1", n)
			}
			// The principal under test gets its attributes accepted on
			// another resource of the kind (one call), then asks about demo.
			c.Check(ctx, tt.p, other, "register")
			before := c.Stats().Requests
			got := c.Check(ctx, tt.p, tt.r, "register")["register"]
			calls := c.Stats().Requests - before
			if tt.wantHit && calls != 0 {
				t.Errorf("made %d PDP calls, want a cache hit (0)", calls)
			}
			if !tt.wantHit && calls != 1 {
				t.Errorf("made %d PDP calls, want a miss (1)", calls)
			}
			if tt.wantHit && (got.Allowed != first.Allowed || got.Policy != first.Policy) {
				t.Errorf("cached decision %v differs from the PDP's %v", got, first)
			}
			// Whatever came from the cache, the PDP agrees with it.
			fresh := sharedClient(t).Check(ctx, tt.p, tt.r, "register")["register"]
			if got.Allowed != fresh.Allowed || strings.Join(got.Reasons, ";") != strings.Join(fresh.Reasons, ";") {
				t.Errorf("decision %v, the PDP says %v", got, fresh)
			}
		})
	}
}

func TestDecisionCacheHitMakesNoCall(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var sentActions []string
	e, addr := startEdgePDP(t, func(req *requestv1.CheckResourcesRequest) (*responsev1.CheckResourcesResponse, error) {
		mu.Lock()
		defer mu.Unlock()
		sentActions = req.GetResources()[0].GetActions()
		return allowAll(req), nil
	})
	src := newFakeSource(t)
	c := newClientT(t, addr, WithDecisionCache(DecisionCacheConfig{Policies: src}))
	ctx := context.Background()
	checks := []Check{
		{Resource: domain("a", "dev", 1, 1, "standard"), Actions: []string{"estimate"}},
		{Resource: domain("a", "dev", 1, 1, "standard"), Actions: []string{"register"}},
	}
	c.CheckBatch(ctx, webAgent(), checks)
	if n := e.calls.Load(); n != 1 {
		t.Fatalf("first batch: %d calls, want 1", n)
	}
	for range 10 {
		for _, ds := range c.CheckBatch(ctx, webAgent(), checks) {
			if !ds[0].Allowed {
				t.Fatalf("cached: %v", ds[0])
			}
		}
	}
	if n := e.calls.Load(); n != 1 {
		t.Fatalf("10 repeated batches made %d more calls, want 0", n-1)
	}
	if s := c.Stats(); s.Requests != 1 || s.CacheHits != 20 || s.CacheMisses != 2 {
		t.Errorf("stats %+v, want 1 request, 20 hits, 2 misses", s)
	}

	// Half cached: only the new action is sent.
	mixed := []Check{{Resource: domain("a", "dev", 1, 1, "standard"), Actions: []string{"register", "check"}}}
	got := c.CheckBatch(ctx, webAgent(), mixed)
	mu.Lock()
	sent := sentActions
	mu.Unlock()
	if !got[0][0].Allowed || !got[0][1].Allowed || len(sent) != 1 || sent[0] != "check" {
		t.Errorf("half-cached check: decisions %v, sent %v; want both allowed and only check sent", got, sent)
	}

	// A new policy generation: the next call asks the PDP.
	before := e.calls.Load()
	st := src.PolicyState()
	src.set(PolicyState{Generation: st.Generation + 1, Reads: st.Reads})
	c.CheckBatch(ctx, webAgent(), checks)
	if n := e.calls.Load() - before; n != 1 {
		t.Fatalf("after a policy reload: %d calls, want 1", n)
	}
	c.CheckBatch(ctx, webAgent(), checks)
	if n := e.calls.Load() - before; n != 1 {
		t.Fatalf("the new generation is not cached: %d calls, want 1", n)
	}
}

func TestDecisionCacheNeverKeeps(t *testing.T) {
	t.Parallel()
	clockReads, err := ReadPolicies(fstest.MapFS{"p.yaml": {Data: []byte(strings.ReplaceAll(policy(`now() > timestamp("2020-01-01T00:00:00Z")`, `"x"`), "resource: thing", "resource: domain"))}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		answer func(*requestv1.CheckResourcesRequest) (*responsev1.CheckResourcesResponse, error)
		state  func(PolicyState) PolicyState
	}{
		{name: "denies because the PDP failed", answer: func(*requestv1.CheckResourcesRequest) (*responsev1.CheckResourcesResponse, error) {
			return nil, status.Error(codes.Unavailable, "restarting")
		}},
		{name: "answers with schema errors", answer: func(req *requestv1.CheckResourcesRequest) (*responsev1.CheckResourcesResponse, error) {
			resp := allowAll(req)
			resp.Results[0].ValidationErrors = []*schemav1.ValidationError{{Path: "/tier", Message: "bad", Source: schemav1.ValidationError_SOURCE_RESOURCE}}
			return resp, nil
		}},
		{name: "answers with principal schema errors", answer: func(req *requestv1.CheckResourcesRequest) (*responsev1.CheckResourcesResponse, error) {
			resp := allowAll(req)
			resp.Results[0].ValidationErrors = []*schemav1.ValidationError{{Path: "/client_name", Message: "too long", Source: schemav1.ValidationError_SOURCE_PRINCIPAL}}
			return resp, nil
		}},
		{name: "rules that read the clock", state: func(st PolicyState) PolicyState { return PolicyState{Generation: st.Generation, Reads: clockReads} }},
		{name: "policies being reloaded", state: func(st PolicyState) PolicyState { return PolicyState{Generation: st.Generation} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			answer := tt.answer
			if answer == nil {
				answer = func(req *requestv1.CheckResourcesRequest) (*responsev1.CheckResourcesResponse, error) {
					return allowAll(req), nil
				}
			}
			e, addr := startEdgePDP(t, answer)
			src := newFakeSource(t)
			if tt.state != nil {
				src.set(tt.state(src.PolicyState()))
			}
			c := newClientT(t, addr, WithDecisionCache(DecisionCacheConfig{Policies: src}))
			for range 3 {
				c.Check(context.Background(), webAgent(), domain("a", "dev", 1, 1, "standard"), "register")
			}
			if n := e.calls.Load(); n != 3 {
				t.Errorf("3 checks made %d calls, want 3 (nothing kept)", n)
			}
			if s := c.Stats(); s.CacheHits != 0 || s.CacheMisses != 3 {
				t.Errorf("stats %+v, want 0 hits and 3 misses", s)
			}
		})
	}
}

func TestDecisionCacheBoundedInSizeAndAge(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	c := newDecisionCache(DecisionCacheConfig{Size: 2, TTL: time.Minute, Clock: func() time.Time { return now }})
	allow := Decision{Allowed: true, Reasons: []string{"r"}}
	c.put(1, "a", allow)
	c.put(1, "b", allow)
	c.get(1, "a") // a is now the most recent
	c.put(1, "c", allow)
	if _, ok := c.get(1, "b"); ok {
		t.Error("the least recently used entry was kept beyond the size")
	}
	if _, ok := c.get(1, "a"); !ok {
		t.Error("a recently used entry was dropped")
	}
	now = now.Add(time.Minute)
	if _, ok := c.get(1, "a"); ok {
		t.Error("an entry was served at its TTL")
	}
	c.put(2, "d", allow)
	if _, ok := c.get(1, "d"); ok {
		t.Error("an older generation read a newer one's entry")
	}
	if _, ok := c.get(2, "c"); ok {
		t.Error("a newer generation read an older one's entry")
	}
	d, _ := c.get(2, "d")
	d.Reasons[0] = "changed by a caller"
	if again, _ := c.get(2, "d"); again.Reasons[0] != "r" {
		t.Error("a caller's change reached the cached decision")
	}
}

func TestDecisionCachePolicyEditedLive(t *testing.T) {
	t.Parallel()
	dir := copyPolicies(t)
	m := startManaged(t, ManagedConfig{PolicyDir: dir})
	c := newClientT(t, m.Addr(), WithDecisionCache(DecisionCacheConfig{Policies: m}))
	ctx := context.Background()
	demo := domain("tollgate-demo", "dev", 1, 12_000_000, "standard")
	for range 3 {
		if d := c.Check(ctx, webAgent(), demo, "register")["register"]; !d.Allowed {
			t.Fatalf("before the edit: %v", d)
		}
	}
	if n := c.Stats().Requests; n != 1 {
		t.Fatalf("3 checks before the edit made %d calls, want 1", n)
	}
	gen := m.PolicyState().Generation
	editFile(t, filepath.Join(dir, "export_constants", "tollgate_guardrails.yaml"),
		"    allowed_domains: []", `    allowed_domains: ["only-this.dev"]`)

	// The watch sees the edit, waits for the PDP to reload it, then trusts
	// the new policies under a new generation.
	eventually(t, hangGuard, "the policy watch to settle on the edit", func() (bool, string) {
		st := m.PolicyState()
		return st.Reads != nil && st.Generation > gen+1, ""
	})
	before := c.Stats().Requests
	d := c.Check(ctx, webAgent(), demo, "register")["register"]
	if n := c.Stats().Requests - before; n != 1 {
		t.Errorf("the first check after the reload made %d calls, want 1", n)
	}
	if want := "tollgate-demo.dev is not on the domain allowlist: only-this.dev"; d.Allowed || len(d.Reasons) == 0 || d.Reasons[0] != want {
		t.Errorf("after the edit: %v, want denied: %s", d, want)
	}
}

func TestDecisionCacheClockRuleNeverCached(t *testing.T) {
	t.Parallel()
	dir := copyPolicies(t)
	// A guardrail that reads the clock (and never fires).
	editFile(t, filepath.Join(dir, "resource_policies", "domain.yaml"), "  rules:\n", `  rules:
    - name: not-before-2000
      actions: ["register"]
      effect: EFFECT_DENY
      roles: ["*"]
      condition:
        match:
          expr: now() < timestamp("2000-01-01T00:00:00Z")
`)
	m := startManaged(t, ManagedConfig{PolicyDir: dir})
	c := newClientT(t, m.Addr(), WithDecisionCache(DecisionCacheConfig{Policies: m}))
	ctx := context.Background()
	for range 3 {
		if d := c.Check(ctx, webAgent(), domain("tollgate-demo", "dev", 1, 12_000_000, "standard"), "register")["register"]; !d.Allowed {
			t.Fatalf("domain: %v", d)
		}
	}
	if n := c.Stats().Requests; n != 3 {
		t.Errorf("3 checks on a kind whose rules read the clock made %d calls, want 3", n)
	}
	for range 3 {
		if d := c.Check(ctx, webAgent(), workerScript("web-api", "preview", 100), "deploy")["deploy"]; !d.Allowed {
			t.Fatalf("worker: %v", d)
		}
	}
	if n := c.Stats().Requests; n != 4 {
		t.Errorf("3 checks of a clock-free kind made %d calls, want 1", n-3)
	}
}

func TestDecisionCacheSchemaRejectsWhatItDoesNotKey(t *testing.T) {
	t.Parallel()
	sharedClient(t)
	c := newClientT(t, shared.m.Addr(), WithDecisionCache(DecisionCacheConfig{Policies: shared.m}))
	ctx := context.Background()
	demo := domain("tollgate-demo", "dev", 1, 12_000_000, "standard")
	for range 2 {
		if d := c.Check(ctx, webAgent(), demo, "register")["register"]; !d.Allowed {
			t.Fatalf("good principal: %v", d)
		}
	}
	// client_name is not in the key, but the principal schema caps it: the
	// cached allow must not reach a principal the PDP would reject.
	bad := withAttr(webAgent(), "client_name", strings.Repeat("x", 300))
	for range 3 {
		d := c.Check(ctx, bad, demo, "register")["register"]
		if d.Allowed || !strings.Contains(strings.Join(d.Reasons, ";"), "client_name") {
			t.Fatalf("over-long client_name: %v, want the schema's deny", d)
		}
	}
}
