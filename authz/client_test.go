package authz

import (
	"context"
	"math"
	"net"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	effectv1 "github.com/cerbos/cerbos/api/genpb/cerbos/effect/v1"
	requestv1 "github.com/cerbos/cerbos/api/genpb/cerbos/request/v1"
	responsev1 "github.com/cerbos/cerbos/api/genpb/cerbos/response/v1"
	svcv1 "github.com/cerbos/cerbos/api/genpb/cerbos/svc/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestCheckAgainstRealPDP(t *testing.T) {
	t.Parallel()
	c := sharedClient(t)
	tests := []struct {
		name        string
		principal   Principal
		resource    Resource
		action      string
		allowed     bool
		reason      string // exact first reason when denied
		approvals   int    // ApprovalNeed.Approvals when allowed
		policyMatch string
	}{
		{
			name: "cheap registration on an allowed extension", principal: webAgent(),
			resource: domain("tollgate-demo", "dev", 1, 12_000_000, "standard"), action: "register",
			allowed: true, policyMatch: "resource.domain.vdefault",
		},
		{
			name: "registration above 30 USD needs two approvers", principal: webAgent(),
			resource: domain("pricey", "com", 3, 35_500_000, "standard"), action: "register",
			allowed: true, approvals: 2, policyMatch: "resource.domain.vdefault",
		},
		{
			name: "extension off the allowlist", principal: webAgent(),
			resource: domain("example", "xyz", 1, 2_000_000, "standard"), action: "register",
			reason: "extension .xyz is not on the allowlist: dev, app, com", policyMatch: "resource.domain.vdefault",
		},
		{
			name: "above the price ceiling", principal: webAgent(),
			resource: domain("big", "app", 1, 60_050_000, "standard"), action: "register",
			reason: "registering big.app costs 60.05 USD, above the per-registration ceiling of 50 USD",
		},
		{
			name: "premium refused", principal: webAgent(),
			resource: domain("shop", "com", 1, 45_000_000, "premium"), action: "register",
			reason: "shop.com is a premium domain; premium registrations are refused, pick a standard-priced name",
		},
		{
			name: "lookup needs only tld and sld", principal: webAgent(),
			resource: Resource{Kind: "domain", ID: "example.dev", Attr: map[string]any{"tld": "dev", "sld": "example"}},
			action:   "check", allowed: true,
		},
		{
			name: "large preview deploy asks for approval", principal: webAgent(),
			resource: workerScript("web-assets", "preview", 600*1024), action: "deploy",
			allowed: true, approvals: 1,
		},
		{
			name: "production deploy without the deployer role", principal: webAgent(),
			resource: workerScript("web-api", "production", 20_000), action: "deploy",
			reason: "production deploys need the deployer role; web-bot has agent (deploy to preview instead)",
		},
		{
			name: "someone else's operation", principal: webAgent(),
			resource: operation("op_9", "ops-bot"), action: "read",
			reason: "operation op_9 belongs to agent ops-bot; agents can read only their own operations",
		},
		{
			name:      "no rule for the role gives a default reason",
			principal: Principal{ID: "ci", Roles: []string{"deployer"}, Attr: map[string]any{"team": "web"}},
			resource:  domain("tollgate-demo", "dev", 1, 12_000_000, "standard"), action: "register",
			reason: `resource.domain.vdefault has no rule allowing "register" on domain "tollgate-demo.dev" for roles [deployer]; denied by default`,
		},
		{
			name: "a kind without a policy", principal: webAgent(),
			resource: Resource{Kind: "dns_record", ID: "x"}, action: "create",
			reason: `no policy covers "create" on dns_record "x"; denied by default`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := c.Check(context.Background(), tt.principal, tt.resource, tt.action)
			d, ok := got[tt.action]
			if !ok || len(got) != 1 {
				t.Fatalf("Check returned %v, want exactly one decision for %q", got, tt.action)
			}
			if d.Action != tt.action || d.Allowed != tt.allowed || d.Unavailable {
				t.Fatalf("decision = %v, want allowed=%v from a reachable PDP", d, tt.allowed)
			}
			if tt.policyMatch != "" && d.Policy != tt.policyMatch {
				t.Errorf("Policy = %q, want %q", d.Policy, tt.policyMatch)
			}
			if tt.allowed {
				if len(d.Reasons) != 0 {
					t.Errorf("allowed decision has reasons %q", d.Reasons)
				}
				if need := d.Approval(); need.Approvals != tt.approvals || need.Required != (tt.approvals > 0) {
					t.Errorf("Approval() = %+v, want %d approvals (outputs %+v)", need, tt.approvals, d.Outputs)
				}
				return
			}
			if len(d.Reasons) == 0 || d.Reasons[0] != tt.reason {
				t.Errorf("Reasons = %q, want first %q", d.Reasons, tt.reason)
			}
		})
	}
}

func TestCheckReturnsOutputSources(t *testing.T) {
	t.Parallel()
	c := sharedClient(t)
	d := c.Check(context.Background(), webAgent(), domain("pricey", "com", 3, 35_500_000, "standard"), "register")["register"]
	want := Output{
		Source: "resource.domain.vdefault#register-quorum-above-30-usd",
		Value: map[string]any{
			"require_approval":   true,
			"approvals_required": float64(2),
			"why":                "registration of pricey.com costs 35.50 USD, above 30 USD: two distinct approvers must agree",
		},
	}
	if !slices.ContainsFunc(d.Outputs, func(o Output) bool { return reflect.DeepEqual(o, want) }) {
		t.Fatalf("Outputs = %+v, want to contain %+v", d.Outputs, want)
	}
	need := d.Approval()
	if !need.Required || need.Approvals != 2 || len(need.Why) != 1 || need.Why[0] != want.Value.(map[string]any)["why"] {
		t.Errorf("Approval() = %+v", need)
	}
}

func TestCheckSeveralActionsOneResource(t *testing.T) {
	t.Parallel()
	c := sharedClient(t)
	r := Resource{Kind: "domain", ID: "noquote.xyz", Attr: map[string]any{"tld": "xyz", "sld": "noquote"}}
	got := c.Check(context.Background(), webAgent(), r, "check", "estimate", "register", "check")
	if len(got) != 3 {
		t.Fatalf("got %d decisions, want 3 distinct actions: %v", len(got), got)
	}
	if !got["check"].Allowed || !got["estimate"].Allowed {
		t.Errorf("check/estimate should be allowed: %v / %v", got["check"], got["estimate"])
	}
	reg := got["register"]
	// Before it is priced, a registration is judged on its terms alone.
	want := "extension .xyz is not on the allowlist: dev, app, com"
	if reg.Allowed || len(reg.Reasons) == 0 || reg.Reasons[0] != want {
		t.Errorf("register = %v, want denied with %q", reg, want)
	}
}

func TestCheckBatchAgainstRealPDP(t *testing.T) {
	t.Parallel()
	c := sharedClient(t)
	checks := []Check{
		{Resource: domain("tollgate-demo", "dev", 1, 12_000_000, "standard"), Actions: []string{"check", "register"}},
		{Resource: domain("example", "xyz", 1, 2_000_000, "standard"), Actions: []string{"register"}},
		{Resource: workerScript("web-api", "preview", 20_000), Actions: []string{"estimate", "deploy"}},
		{Resource: workerScript("ops-cron", "preview", 4_096), Actions: []string{"deploy"}},
		{Resource: operation("op_1", "web-bot"), Actions: []string{"read"}},
		{Resource: Resource{Kind: "", ID: "broken"}, Actions: []string{"read"}},
		{Resource: operation("op_2", "web-bot"), Actions: nil},
	}
	got := c.CheckBatch(context.Background(), webAgent(), checks)
	if len(got) != len(checks) {
		t.Fatalf("got %d results for %d checks", len(got), len(checks))
	}
	want := [][]bool{{true, true}, {false}, {true, true}, {false}, {true}, {false}, {}}
	for i := range checks {
		if len(got[i]) != len(want[i]) {
			t.Fatalf("check %d: %d decisions, want %d", i, len(got[i]), len(want[i]))
		}
		for j, allowed := range want[i] {
			d := got[i][j]
			if d.Action != checks[i].Actions[j] || d.Allowed != allowed || d.Unavailable {
				t.Errorf("check %d action %d = %v, want %s allowed=%v", i, j, d, checks[i].Actions[j], allowed)
			}
			if !d.Allowed && len(d.Reasons) == 0 {
				t.Errorf("check %d action %d denied without a reason", i, j)
			}
		}
	}
	if r := got[3][0].Reasons[0]; r != "worker name ops-cron must start with your team prefix web-" {
		t.Errorf("prefix reason = %q", r)
	}
	if r := got[5][0].Reasons[0]; !strings.HasPrefix(r, "invalid authorization request: resource") || !strings.Contains(r, "kind") {
		t.Errorf("invalid resource reason = %q, want it to name the empty kind", r)
	}
}

func TestSchemaRejectsBadAttributes(t *testing.T) {
	t.Parallel()
	c := sharedClient(t)
	tests := []struct {
		name      string
		principal Principal
		resource  Resource
		contains  []string
	}{
		{
			name: "years below the minimum", principal: webAgent(),
			resource: domain("zero", "dev", 0, 12_000_000, "standard"),
			contains: []string{`resource attribute "years" rejected by the policy schema`},
		},
		{
			name: "unknown tier", principal: webAgent(),
			resource: domain("gold", "dev", 1, 12_000_000, "gold"),
			contains: []string{`resource attribute "tier" rejected by the policy schema`},
		},
		{
			name: "misspelt attribute", principal: webAgent(),
			resource: Resource{Kind: "domain", ID: "typo.dev", Attr: map[string]any{"tld": "dev", "sld": "typo", "price_micro": 1}},
			contains: []string{"resource attributes rejected by the policy schema", "price_micro"},
		},
		{
			name: "fractional money", principal: webAgent(),
			resource: Resource{Kind: "domain", ID: "float.dev", Attr: map[string]any{"tld": "dev", "sld": "float", "price_micros": 12.5}},
			contains: []string{`resource attribute "price_micros" rejected by the policy schema`},
		},
		{
			name:      "agent without a team",
			principal: Principal{ID: "stray", Roles: []string{"agent"}, Attr: map[string]any{"environment": "dev"}},
			resource:  domain("tollgate-demo", "dev", 1, 12_000_000, "standard"),
			contains:  []string{"principal attributes rejected by the policy schema", "team"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := c.Check(context.Background(), tt.principal, tt.resource, "register")["register"]
			if d.Allowed || d.Unavailable {
				t.Fatalf("decision = %v, want a policy deny", d)
			}
			joined := strings.Join(d.Reasons, "\n")
			for _, s := range tt.contains {
				if !strings.Contains(joined, s) {
					t.Errorf("reasons %q do not mention %q", d.Reasons, s)
				}
			}
		})
	}
}

func TestInvalidRequestsAreDeniedWithoutThePDP(t *testing.T) {
	t.Parallel()
	// A PDP that counts its calls and allows everything: none of these may
	// even try to call it.
	pdp, addr := startEdgePDP(t, func(req *requestv1.CheckResourcesRequest) (*responsev1.CheckResourcesResponse, error) {
		return allowAll(req), nil
	})
	c := newClientT(t, addr, WithTimeout(time.Minute))
	r := domain("tollgate-demo", "dev", 1, 12_000_000, "standard")
	tests := []struct {
		name     string
		p        Principal
		r        Resource
		action   string
		contains string
	}{
		{"empty principal id", Principal{Roles: []string{"agent"}}, r, "register", "principal"},
		{"no roles", Principal{ID: "x"}, r, "register", "roles"},
		{"unsupported attribute type", Principal{ID: "x", Roles: []string{"agent"}, Attr: map[string]any{"ch": make(chan int)}}, r, "register", `attribute "ch": unsupported type chan int`},
		{"integer beyond 2^53", webAgent(), Resource{Kind: "domain", ID: "a.dev", Attr: map[string]any{"price_micros": int64(1) << 60}}, "register", "would lose precision"},
		{"not a number", webAgent(), Resource{Kind: "domain", ID: "a.dev", Attr: map[string]any{"price_micros": math.NaN()}}, "register", "not finite"},
		{"empty action", webAgent(), r, "", "action names must not be empty"},
		{"empty resource id", webAgent(), Resource{Kind: "domain"}, "check", "resource domain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := c.Check(context.Background(), tt.p, tt.r, tt.action)[tt.action]
			if d.Allowed || d.Unavailable || len(d.Reasons) != 1 {
				t.Fatalf("decision = %v, want one invalid-request reason", d)
			}
			if !strings.HasPrefix(d.Reasons[0], "invalid authorization request: ") || !strings.Contains(d.Reasons[0], tt.contains) {
				t.Errorf("reason = %q, want it to mention %q", d.Reasons[0], tt.contains)
			}
		})
	}
	t.Cleanup(func() {
		if n := pdp.calls.Load(); n != 0 {
			t.Errorf("invalid requests reached the PDP %d times", n)
		}
	})
}

func TestUnreachablePDPFailsClosed(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(t.TempDir(), "nobody.sock")
	c := newClientT(t, "unix:"+sock, WithTimeout(150*time.Millisecond))
	got := c.CheckBatch(context.Background(), webAgent(), []Check{
		{Resource: domain("tollgate-demo", "dev", 1, 12_000_000, "standard"), Actions: []string{"check", "register"}},
		{Resource: operation("op_1", "web-bot"), Actions: []string{"read"}},
	})
	for i, ds := range got {
		for _, d := range ds {
			if d.Allowed || !d.Unavailable || len(d.Reasons) != 1 || !strings.HasPrefix(d.Reasons[0], "policy engine unavailable: ") {
				t.Errorf("check %d: %v, want unavailable deny", i, d)
			}
		}
	}
	if err := c.Ready(context.Background()); err == nil {
		t.Error("Ready succeeded with nothing listening")
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d := c.Check(ctx, webAgent(), operation("op_1", "web-bot"), "read")["read"]
	if d.Allowed || !d.Unavailable || !strings.Contains(d.Reasons[0], "cancelled") {
		t.Errorf("cancelled check = %v, want unavailable deny naming the cancellation", d)
	}
}

// edgePDP is a fake Cerbos at the network edge: it answers CheckResources
// the way a broken or hostile PDP might, to prove the client never trusts a
// malformed answer.
type edgePDP struct {
	svcv1.UnimplementedCerbosServiceServer
	calls  atomic.Int64
	answer func(*requestv1.CheckResourcesRequest) (*responsev1.CheckResourcesResponse, error)
}

func (e *edgePDP) CheckResources(ctx context.Context, req *requestv1.CheckResourcesRequest) (*responsev1.CheckResourcesResponse, error) {
	e.calls.Add(1)
	return e.answer(req)
}

func (e *edgePDP) ServerInfo(context.Context, *requestv1.ServerInfoRequest) (*responsev1.ServerInfoResponse, error) {
	return &responsev1.ServerInfoResponse{Version: "fake"}, nil
}

func startEdgePDP(t *testing.T, answer func(*requestv1.CheckResourcesRequest) (*responsev1.CheckResourcesResponse, error)) (*edgePDP, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "edge.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	e := &edgePDP{answer: answer}
	svcv1.RegisterCerbosServiceServer(srv, e)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return e, "unix:" + sock
}

// allowAll echoes every requested resource and action as allowed.
func allowAll(req *requestv1.CheckResourcesRequest) *responsev1.CheckResourcesResponse {
	resp := &responsev1.CheckResourcesResponse{RequestId: req.GetRequestId()}
	for _, e := range req.GetResources() {
		acts := map[string]effectv1.Effect{}
		for _, a := range e.GetActions() {
			acts[a] = effectv1.Effect_EFFECT_ALLOW
		}
		resp.Results = append(resp.Results, &responsev1.CheckResourcesResponse_ResultEntry{
			Resource: &responsev1.CheckResourcesResponse_ResultEntry_Resource{Id: e.GetResource().GetId(), Kind: e.GetResource().GetKind()},
			Actions:  acts,
		})
	}
	return resp
}

func TestMalformedResponsesFailClosed(t *testing.T) {
	t.Parallel()
	never := make(chan struct{})
	t.Cleanup(func() { close(never) })
	tests := []struct {
		name        string
		answer      func(*requestv1.CheckResourcesRequest) (*responsev1.CheckResourcesResponse, error)
		unavailable bool
		reason      string
		timeout     time.Duration // default a minute: a hang guard only
	}{
		{
			name: "no results",
			answer: func(req *requestv1.CheckResourcesRequest) (*responsev1.CheckResourcesResponse, error) {
				return &responsev1.CheckResourcesResponse{}, nil
			},
			unavailable: true, reason: "policy engine unavailable: unexpected response: 0 results for 1 resources",
		},
		{
			name: "result for another resource",
			answer: func(req *requestv1.CheckResourcesRequest) (*responsev1.CheckResourcesResponse, error) {
				resp := allowAll(req)
				resp.Results[0].Resource.Id = "someone-else.dev"
				return resp, nil
			},
			unavailable: true, reason: `policy engine unavailable: unexpected response: result 0 is for domain "someone-else.dev", want domain "tollgate-demo.dev"`,
		},
		{
			name: "action missing from the result",
			answer: func(req *requestv1.CheckResourcesRequest) (*responsev1.CheckResourcesResponse, error) {
				resp := allowAll(req)
				delete(resp.Results[0].Actions, "register")
				return resp, nil
			},
			unavailable: true, reason: `policy engine unavailable: unexpected response: no effect for action "register" on domain "tollgate-demo.dev"`,
		},
		{
			name: "effect other than allow",
			answer: func(req *requestv1.CheckResourcesRequest) (*responsev1.CheckResourcesResponse, error) {
				resp := allowAll(req)
				resp.Results[0].Actions["register"] = effectv1.Effect_EFFECT_NO_MATCH
				return resp, nil
			},
			reason: `policy engine returned EFFECT_NO_MATCH for "register" on domain "tollgate-demo.dev"; only an explicit allow permits it`,
		},
		{
			name: "server error",
			answer: func(*requestv1.CheckResourcesRequest) (*responsev1.CheckResourcesResponse, error) {
				return nil, status.Error(codes.Internal, "index corrupted")
			},
			unavailable: true, reason: "policy engine unavailable: index corrupted (Internal)",
		},
		{
			name: "request rejected",
			answer: func(*requestv1.CheckResourcesRequest) (*responsev1.CheckResourcesResponse, error) {
				return nil, status.Error(codes.InvalidArgument, "too many resources")
			},
			reason: "policy engine rejected the request: too many resources",
		},
		{
			name: "too slow",
			// Never answers (until the test ends): only the client
			// timeout can end the check.
			answer: func(req *requestv1.CheckResourcesRequest) (*responsev1.CheckResourcesResponse, error) {
				<-never
				return allowAll(req), nil
			},
			timeout:     200 * time.Millisecond,
			unavailable: true, reason: "policy engine unavailable: no answer from unix:",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, addr := startEdgePDP(t, tt.answer)
			// Every other answer arrives: a generous timeout only guards
			// against a hang, so a busy machine cannot turn it into "no answer".
			timeout := time.Minute
			if tt.timeout > 0 {
				timeout = tt.timeout
			}
			c := newClientT(t, addr, WithTimeout(timeout))
			d := c.Check(context.Background(), webAgent(), domain("tollgate-demo", "dev", 1, 12_000_000, "standard"), "register")["register"]
			if d.Allowed || d.Unavailable != tt.unavailable || len(d.Reasons) != 1 {
				t.Fatalf("decision = %v, want deny with unavailable=%v and one reason", d, tt.unavailable)
			}
			if !strings.HasPrefix(d.Reasons[0], tt.reason) {
				t.Errorf("reason = %q, want prefix %q", d.Reasons[0], tt.reason)
			}
		})
	}
}

func TestCheckBatchIsOneCall(t *testing.T) {
	t.Parallel()
	e, addr := startEdgePDP(t, func(req *requestv1.CheckResourcesRequest) (*responsev1.CheckResourcesResponse, error) {
		if !req.GetIncludeMeta() {
			return nil, status.Error(codes.InvalidArgument, "include meta please")
		}
		return allowAll(req), nil
	})
	c := newClientT(t, addr)
	got := c.CheckBatch(context.Background(), webAgent(), []Check{
		{Resource: domain("a", "dev", 1, 1, "standard"), Actions: []string{"check", "register"}},
		{Resource: workerScript("web-a", "preview", 1), Actions: []string{"deploy"}},
		{Resource: operation("op_1", "web-bot"), Actions: []string{"read", "read"}},
	})
	if n := e.calls.Load(); n != 1 {
		t.Fatalf("CheckBatch made %d CheckResources calls, want 1", n)
	}
	for i, ds := range got {
		for _, d := range ds {
			if !d.Allowed {
				t.Errorf("check %d: %v", i, d)
			}
		}
	}
	if len(got[2]) != 2 || got[2][1].Action != "read" {
		t.Errorf("duplicate actions must each get a decision: %v", got[2])
	}
}

func TestClosedClientFailsClosed(t *testing.T) {
	t.Parallel()
	_, addr := startEdgePDP(t, func(req *requestv1.CheckResourcesRequest) (*responsev1.CheckResourcesResponse, error) {
		return allowAll(req), nil
	})
	c, err := NewClient(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	if d := c.Check(context.Background(), webAgent(), operation("op_1", "web-bot"), "read")["read"]; !d.Allowed {
		t.Fatalf("before Close: %v", d)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	d := c.Check(context.Background(), webAgent(), operation("op_1", "web-bot"), "read")["read"]
	if d.Allowed || !d.Unavailable {
		t.Errorf("after Close: %v, want unavailable deny", d)
	}
}

func TestNewClientRejectsBadConfig(t *testing.T) {
	t.Parallel()
	missingCA := filepath.Join(t.TempDir(), "missing-ca.pem")
	tests := []struct {
		name     string
		addr     string
		opts     []Option
		contains string
	}{
		{"empty", "", nil, `want "host:port"`},
		{"scheme", "https://pdp:3593", nil, "URL schemes are not supported"},
		{"relative unix path", "unix:cerbos.sock", nil, "socket path must be absolute"},
		{"no port", "localhost", nil, "missing port"},
		{"bad port", "localhost:http", nil, `port "http" must be a number`},
		{"port out of range", "localhost:70000", nil, "must be a number 1-65535"},
		{"long unix path", "unix:/" + strings.Repeat("a", 120), nil, "the limit is 107"},
		{"zero timeout", "localhost:3593", []Option{WithTimeout(0)}, "timeout 0s must be positive"},
		{"tls and plaintext", "localhost:3593", []Option{WithTLS(""), WithPlaintext()}, "mutually exclusive"},
		{"missing CA", "localhost:3593", []Option{WithTLS(missingCA)}, "read CA bundle"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := NewClient(context.Background(), tt.addr, tt.opts...)
			if err == nil {
				_ = c.Close()
				t.Fatalf("NewClient(%q) succeeded", tt.addr)
			}
			if !strings.Contains(err.Error(), tt.contains) {
				t.Errorf("error %q does not mention %q", err, tt.contains)
			}
		})
	}
}

func TestParseAddr(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, target, str string
	}{
		{"unix:/tmp/cerbos.sock", "unix:///tmp/cerbos.sock", "unix:/tmp/cerbos.sock"},
		{"unix:///tmp/cerbos.sock", "unix:///tmp/cerbos.sock", "unix:/tmp/cerbos.sock"},
		{"localhost:3593", "dns:///localhost:3593", "localhost:3593"},
		{"[::1]:3593", "dns:///[::1]:3593", "[::1]:3593"},
		{"10.0.0.7:443", "dns:///10.0.0.7:443", "10.0.0.7:443"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			a, err := parseAddr(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if a.target != tt.target || a.String() != tt.str {
				t.Errorf("parseAddr(%q) = target %q str %q, want %q %q", tt.in, a.target, a.String(), tt.target, tt.str)
			}
		})
	}
}

func TestApprovalNeed(t *testing.T) {
	t.Parallel()
	out := func(v any) Output { return Output{Source: "resource.x.vdefault#r", Value: v} }
	tests := []struct {
		name    string
		outputs []Output
		want    ApprovalNeed
	}{
		{"none", nil, ApprovalNeed{}},
		{"string outputs are not requirements", []Output{out("some sentence")}, ApprovalNeed{}},
		{"require approval", []Output{out(map[string]any{"require_approval": true, "why": "big"})}, ApprovalNeed{Required: true, Approvals: 1, Why: []string{"big"}}},
		{"explicit false", []Output{out(map[string]any{"require_approval": false})}, ApprovalNeed{}},
		{"quorum wins", []Output{
			out(map[string]any{"require_approval": true, "why": "a"}),
			out(map[string]any{"approvals_required": float64(3), "why": "b"}),
			out(map[string]any{"approvals_required": float64(2)}),
		}, ApprovalNeed{Required: true, Approvals: 3, Why: []string{"a", "b"}}},
		{"malformed count fails closed", []Output{out(map[string]any{"approvals_required": "two"})}, ApprovalNeed{
			Required: true, Approvals: 1,
			Why: []string{"policy output resource.x.vdefault#r has an invalid approvals_required (two), want an integer 1..100; treated as requiring approval"},
		}},
		{"fractional count fails closed", []Output{out(map[string]any{"approvals_required": 1.5})}, ApprovalNeed{
			Required: true, Approvals: 1,
			Why: []string{"policy output resource.x.vdefault#r has an invalid approvals_required (1.5), want an integer 1..100; treated as requiring approval"},
		}},
		{"malformed flag fails closed", []Output{out(map[string]any{"require_approval": "yes"})}, ApprovalNeed{
			Required: true, Approvals: 1,
			Why: []string{"policy output resource.x.vdefault#r has a non-boolean require_approval (yes); treated as requiring approval"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := Decision{Allowed: true, Outputs: tt.outputs}.Approval()
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Approval() = %+v, want %+v", got, tt.want)
			}
		})
	}
}
