package tools

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/tollgatehq/tollgate/ledger/money"
)

// TestInventoryIsTheOneList checks that every list of tools is the
// inventory's: the registered tools in inventory order, the executors, the
// rate-limitable actions, estimate_cost's actions; and that every kind a
// tool is checked with has a resource policy.
func TestInventoryIsTheOneList(t *testing.T) {
	t.Parallel()
	inv := Inventory()
	var names, mutating, priced []string
	for _, e := range inv {
		names = append(names, e.Name)
		if e.New == nil || e.Action == "" {
			t.Errorf("%s: no constructor or no Cerbos action", e.Name)
		}
		if e.Mutation != nil {
			mutating = append(mutating, e.Name)
			m := e.Mutation(Config{})
			if m.Name() != e.Name || m.Action() != e.Action {
				t.Errorf("%s: the mutation calls itself %s/%s, the inventory %s/%s", e.Name, m.Name(), m.Action(), e.Name, e.Action)
			}
			acc := m.Access()
			if len(acc.Execute.Account)+len(acc.Execute.Zone) == 0 || len(acc.Reconcile.Account)+len(acc.Reconcile.Zone) == 0 {
				t.Errorf("%s: declares no Cloudflare permissions for execution or reconciliation: %+v", e.Name, acc)
			}
			if _, ok := m.(ZoneScoped); ok != (len(acc.Execute.Zone) > 0) {
				t.Errorf("%s: zone permissions %v, names its zones: %v", e.Name, acc.Execute.Zone, ok)
			}
		}
		if e.EstimateParams != nil {
			if e.Mutation == nil {
				t.Errorf("%s: estimable but not a mutation", e.Name)
			}
			priced = append(priced, e.Name)
		}
		if e.Kind != "" {
			if _, err := os.Stat(filepath.Join("..", "cerbos-policies", "resource_policies", e.Kind+".yaml")); err != nil {
				t.Errorf("%s: checked as kind %s, which has no resource policy: %v", e.Name, e.Kind, err)
			}
		}
	}
	var registered []string
	for _, tl := range All(nil, Config{}) {
		registered = append(registered, tl.Tool.Name)
	}
	if !slices.Equal(registered, names) {
		t.Errorf("registered %v, inventory %v", registered, names)
	}
	var execs []string
	for name := range Mutations(Config{}) {
		execs = append(execs, name)
	}
	slices.Sort(execs)
	sorted := slices.Sorted(slices.Values(mutating))
	if !slices.Equal(execs, sorted) {
		t.Errorf("executors %v, mutating tools %v", execs, sorted)
	}
	if !slices.Equal(RateLimited(), mutating) {
		t.Errorf("rate-limitable %v, mutating tools %v", RateLimited(), mutating)
	}
	est := EstimateCost(nil, Config{})
	for _, n := range priced {
		if !strings.Contains(string(est.Tool.RawInputSchema), `"params for `+n+`"`) {
			t.Errorf("estimate_cost has no params schema for %s", n)
		}
	}
}

// TestApprovalTraits: every mutation says what approving it does, from its
// stored arguments, and the sentences name what changes; a tool whose
// arguments cannot be read says nothing (the console's generic sentence
// stands in). Mandate patterns and quorum probes come from the same entries.
func TestApprovalTraits(t *testing.T) {
	t.Parallel()
	cases := []struct {
		tool, args string
		want       []string
	}{
		{registerDomainName, `{"domain":"shop.dev","years":1,"auto_renew":true}`, []string{"cannot be undone", "renews automatically"}},
		{deployWorkerName, `{"script_name":"web-app","environment":"preview","deployed_name":"web-app-preview"}`, []string{"preview script web-app-preview", "production is not touched"}},
		{deployWorkerName, `{"script_name":"web-app","environment":"production","deployed_name":"web-app"}`, []string{"replaces the one live in production (web-app)", "rollback_worker"}},
		{deployWorkerName, `{"script_name":"web-app","environment":"production","deployed_name":"web-app","rollout":{"steps":[10,50,100],"interval_seconds":300}}`, []string{"step by step (10% → 50% → 100%", "this one approval"}},
		{rollbackWorkerName, `{"script_name":"web-app"}`, []string{"All production traffic of web-app moves at once", "before its latest deploy"}},
		{attachWorkerDomainName, `{"hostname":"shop.dev","domain":"shop.dev","apex":true,"script_name":"web-app","environment":"production","deployed_name":"web-app"}`, []string{"shop.dev answers with Worker web-app", "detach_worker_domain undoes it", "the apex"}},
		{attachWorkerDomainName, `{"hostname":"www.shop.dev","domain":"shop.dev","apex":false,"script_name":"web-app","environment":"preview","deployed_name":"web-app-preview"}`, []string{"www.shop.dev answers with Worker web-app-preview"}},
		{detachWorkerDomainName, `{"hostname":"www.shop.dev","domain":"shop.dev","apex":false}`, []string{"www.shop.dev stops answering", "attach_worker_domain"}},
	}
	covered := map[string]bool{}
	for _, c := range cases {
		covered[c.tool] = true
		e, ok := Find(c.tool)
		if !ok || e.Approval.Consequence == nil {
			t.Fatalf("%s: no Consequence in the inventory", c.tool)
		}
		got := e.Approval.Consequence(json.RawMessage(c.args))
		for _, w := range c.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s %s: %q does not say %q", c.tool, c.args, got, w)
			}
		}
		if e.Approval.Consequence(json.RawMessage(`not json`)) != "" {
			t.Errorf("%s: words for arguments it cannot read", c.tool)
		}
	}
	for _, e := range Inventory() {
		if e.Mutation != nil && !covered[e.Name] {
			t.Errorf("%s: a mutation with no case here; say what approving it does", e.Name)
		}
		if e.Mutation == nil && (e.Approval.Consequence != nil || e.Approval.QuorumProbe != nil) {
			t.Errorf("%s: approval traits on a tool that is never approved", e.Name)
		}
	}

	reg, _ := Find(registerDomainName)
	dep, _ := Find(deployWorkerName)
	if p := reg.Approval.MandatePattern("launch.dev"); p != "*.dev" {
		t.Errorf("registration pattern %q", p)
	}
	if p := dep.Approval.MandatePattern("shop-api"); p != "shop-*" {
		t.Errorf("deploy pattern %q", p)
	}
	if name, err := dep.Approval.ReplacedScript(json.RawMessage(`{"deployed_name":"web-app-preview"}`)); err != nil || name != "web-app-preview" {
		t.Errorf("replaced script %q %v", name, err)
	}
	if _, err := dep.Approval.ReplacedScript(json.RawMessage(`{}`)); err == nil {
		t.Error("a deploy naming no script replaces nothing it can name")
	}
	// Probes are checked with their tool's kind and action, and always wait
	// for a human: every tool with a probe has calls that do.
	env := ProbeEnv{Team: "web", TLD: "dev", RegistrationCeiling: money.Money{Micros: 20_000_000, Currency: "USD"}}
	var probed []string
	for _, e := range Inventory() {
		if e.Approval.QuorumProbe == nil {
			continue
		}
		probed = append(probed, e.Name)
		if p := e.Approval.QuorumProbe(env); p.Resource.Kind != e.Kind || p.Resource.ID == "" {
			t.Errorf("%s: probe %+v is not a %s resource", e.Name, p.Resource, e.Kind)
		}
	}
	if want := []string{registerDomainName, deployWorkerName, attachWorkerDomainName, detachWorkerDomainName}; !slices.Equal(probed, want) {
		t.Errorf("quorum probes for %v, want %v", probed, want)
	}
}

// TestNoToolNamesOutsideTheInventory: the packages under the tools ask the
// inventory what a tool needs instead of naming it (cmd speaks MCP as a
// client does and names tools it calls; test helpers may name them too).
func TestNoToolNamesOutsideTheInventory(t *testing.T) {
	t.Parallel()
	names := map[string]bool{}
	for _, e := range Inventory() {
		names[e.Name] = true
	}
	fset := token.NewFileSet()
	for _, dir := range []string{"server", "approvals", "ledger", "authz", "cloudflare"} {
		err := filepath.WalkDir(filepath.Join("..", dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && strings.HasSuffix(path, "test") { // approvalstest and the like
				return filepath.SkipDir
			}
			if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
			if err != nil {
				return err
			}
			ast.Inspect(f, func(n ast.Node) bool {
				if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
					if s, err := strconv.Unquote(lit.Value); err == nil && names[s] {
						t.Errorf("%s: names tool %s; declare what it needs in its inventory entry", fset.Position(lit.Pos()), s)
					}
				}
				return true
			})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
