package tools

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
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
