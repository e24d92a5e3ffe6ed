package authz

import (
	"os"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
)

func TestReadPoliciesOfTheRepository(t *testing.T) {
	t.Parallel()
	r, err := ReadPolicies(os.DirFS(repoPolicies(t)))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		kind string
		want []string
	}{
		// The domain policy reads every quote field; the derived roles
		// (shared by every kind) read agent and owner.
		{"domain", []string{"agent", "auto_renew", "currency", "owner", "price_micros", "sld", "tier", "tld", "years"}},
		// The schema constrains team, tool and state even though no rule
		// reads them: with schema enforcement the PDP reads them too.
		{"operation", []string{"agent", "owner", "state", "team", "tool"}},
		{"spend", []string{"agent", "owner", "team"}},
		// Rollouts: the policy caps the first step and the interval.
		{"worker_script", []string{"agent", "environment", "module_sha256", "owner", "rollout_interval_seconds", "rollout_steps", "size_bytes"}},
		{"no_such_kind", []string{"agent", "owner"}},
	}
	for _, tt := range tests {
		names, all := r.ResourceAttrs(tt.kind)
		if all || !slices.Equal(names, tt.want) {
			t.Errorf("%s: reads %v (all=%v), want %v", tt.kind, names, all, tt.want)
		}
		if r.ReadsClock(tt.kind) {
			t.Errorf("%s: reads the clock", tt.kind)
		}
	}
	// Identity and audit attributes (client, session) are not read; the
	// sandbox flag is (the two-approver tier).
	if names, all := r.PrincipalAttrs(); all || !slices.Equal(names, []string{"sandbox", "team"}) {
		t.Errorf("principal: reads %v (all=%v), want [sandbox team]", names, all)
	}
}

// policy is a resource policy for kind "thing" whose one rule has expr as
// its condition and output as its output.
func policy(expr, output string) string {
	return `apiVersion: api.cerbos.dev/v1
description: "R.attr.in_a_description P.attr.nor_here now()"
resourcePolicy:
  resource: thing
  version: default
  rules:
    - name: r
      actions: ["read"]
      effect: EFFECT_ALLOW
      roles: ["*"]
      condition:
        match:
          expr: >-
            ` + expr + `
      output:
        when:
          ruleActivated: >-
            ` + output + `
`
}

func TestReadPoliciesExpressions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		expr, out string
		resource  []string
		resAll    bool
		principal []string
		prinAll   bool
		clock     bool
	}{
		{name: "dotted attributes", expr: `R.attr.a == P.attr.b && has(R.attr.c)`, out: `"x"`, resource: []string{"a", "c"}, principal: []string{"b"}},
		{name: "long form", expr: `request.resource.attr.a == request.principal.attr.b`, out: `request.auxData.jwt.sub`, resource: []string{"a"}, principal: []string{"b"}},
		{name: "index with a literal", expr: `R.attr["a-b"] == P.attr['c']`, out: `"x"`, resource: []string{"a-b"}, principal: []string{"c"}},
		{name: "id, kind, roles are keys already", expr: `R.id == P.id && R.kind == "thing" && "x" in P.roles`, out: `P.id`},
		{name: "output reads too", expr: `true`, out: `"size " + string(R.attr.size)`, resource: []string{"size"}},
		{name: "computed attribute name", expr: `R.attr[P.attr.key] == 1`, out: `"x"`, resAll: true, principal: []string{"key"}},
		{name: "macro over the whole map", expr: `R.attr.all(k, k != "")`, out: `"x"`, resAll: true},
		{name: "the whole map", expr: `size(P.attr) > 2`, out: `"x"`, prinAll: true},
		{name: "the whole resource", expr: `R != null`, out: `"x"`, resAll: true},
		{name: "principal kind is not a thing", expr: `P.kind == "x"`, out: `"x"`, prinAll: true},
		{name: "now", expr: `now() > timestamp("2020-01-01T00:00:00Z")`, out: `"x"`, clock: true},
		{name: "timeSince", expr: `timestamp(R.attr.at).timeSince() > duration("1h")`, out: `"x"`, resource: []string{"at"}, clock: true},
		{name: "a method named now is not the clock", expr: `V.now == 1`, out: `"now playing"`},
		{name: "R in another name", expr: `V.R == 1 && myR == 2 && CR.attr.x == 3`, out: `"x"`},
		{name: "the word request in prose", expr: `true`, out: `"made this request"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, err := ReadPolicies(fstest.MapFS{"p/thing.yaml": {Data: []byte(policy(tt.expr, tt.out))}})
			if err != nil {
				t.Fatal(err)
			}
			names, all := r.ResourceAttrs("thing")
			if all != tt.resAll || (!all && !slices.Equal(names, nonNil(tt.resource))) {
				t.Errorf("resource reads %v (all=%v), want %v (all=%v)", names, all, tt.resource, tt.resAll)
			}
			names, all = r.PrincipalAttrs()
			if all != tt.prinAll || (!all && !slices.Equal(names, nonNil(tt.principal))) {
				t.Errorf("principal reads %v (all=%v), want %v (all=%v)", names, all, tt.principal, tt.prinAll)
			}
			if got := r.ReadsClock("thing"); got != tt.clock {
				t.Errorf("ReadsClock = %v, want %v", got, tt.clock)
			}
		})
	}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func TestReadPoliciesFiles(t *testing.T) {
	t.Parallel()
	derived := `apiVersion: api.cerbos.dev/v1
derivedRoles:
  name: roles
  definitions:
    - name: owner
      parentRoles: ["user"]
      condition:
        match:
          expr: R.attr.owner == P.id
`
	other := `apiVersion: api.cerbos.dev/v1
resourcePolicy:
  resource: other
  version: default
  schemas:
    resourceSchema:
      ref: cerbos:///resources/other.json
  rules:
    - actions: ["read"]
      effect: EFFECT_ALLOW
      roles: ["*"]
      condition:
        match:
          expr: now() > timestamp(R.attr.from)
`
	schema := `{"type": "object", "required": ["from"], "properties": {"from": {"type": "string"}, "note": {"type": "string"}}, "additionalProperties": false}`
	fsys := fstest.MapFS{
		"resource_policies/thing.yaml":    {Data: []byte(policy(`R.attr.a == 1`, `"x"`))},
		"resource_policies/other.yml":     {Data: []byte(other)},
		"derived_roles/roles.yaml":        {Data: []byte(derived)},
		"_schemas/resources/other.json":   {Data: []byte(schema)},
		"tests/thing_test.yaml":           {Data: []byte(`name: t` + "\n" + `tests: [{input: {expr: R.attr.test_only}}]`)},
		"tests/testdata/resources.yaml":   {Data: []byte(`resources: {x: {attr: {fixture: R.attr.fixture}}}`)},
		".hidden/thing.yaml":              {Data: []byte(policy(`R.attr.hidden == 1`, `"x"`))},
		"README.md":                       {Data: []byte("R.attr.readme")},
		"resource_policies/two-docs.yaml": {Data: []byte(policy(`R.attr.b == 1`, `"x"`) + "---\n" + policy(`R.attr.c == 1`, `"y"`))},
	}
	r, err := ReadPolicies(fsys)
	if err != nil {
		t.Fatal(err)
	}
	if names, all := r.ResourceAttrs("thing"); all || !slices.Equal(names, []string{"a", "b", "c", "owner"}) {
		t.Errorf("thing reads %v (all=%v), want [a b c owner]: its policies, both documents, the derived roles; not tests, fixtures, hidden files or the README", names, all)
	}
	if names, _ := r.ResourceAttrs("other"); !slices.Equal(names, []string{"from", "note", "owner"}) {
		t.Errorf("other reads %v, want [from note owner] (its schema's properties count)", names)
	}
	if !r.ReadsClock("other") || r.ReadsClock("thing") {
		t.Errorf("clock: other=%v thing=%v, want only other", r.ReadsClock("other"), r.ReadsClock("thing"))
	}

	broken := fstest.MapFS{
		"resource_policies/thing.yaml": {Data: []byte("resourcePolicy: [unclosed")},
	}
	if _, err := ReadPolicies(broken); err == nil || !strings.Contains(err.Error(), "resource_policies/thing.yaml") {
		t.Errorf("a file that does not parse: err = %v, want one naming the file", err)
	}
	missingSchema := fstest.MapFS{"resource_policies/other.yaml": {Data: []byte(other)}}
	if _, err := ReadPolicies(missingSchema); err == nil || !strings.Contains(err.Error(), "cerbos:///resources/other.json") {
		t.Errorf("a missing schema: err = %v, want one naming it", err)
	}
	complexSchema := fstest.MapFS{
		"resource_policies/other.yaml":  {Data: []byte(other)},
		"_schemas/resources/other.json": {Data: []byte(`{"type": "object", "patternProperties": {"^x": {}}}`)},
	}
	r, err = ReadPolicies(complexSchema)
	if err != nil {
		t.Fatal(err)
	}
	if _, all := r.ResourceAttrs("other"); !all {
		t.Error("a schema with patternProperties must count as reading every attribute")
	}
}

func FuzzReadPolicies(f *testing.F) {
	f.Add(policy(`R.attr.a == P.attr.b`, `"x"`))
	f.Add(policy(`R.attr["a"] && request.resource.attr.b`, `now()`))
	f.Add("resourcePolicy: {resource: x, rules: [{condition: {match: {expr: 'R.attr.all(k, true)'}}}]}")
	f.Add("---\n---\n[1, 2]")
	f.Fuzz(func(t *testing.T, doc string) {
		r, err := ReadPolicies(fstest.MapFS{"p.yaml": {Data: []byte(doc)}})
		if err != nil {
			return
		}
		// Whatever was read, the answers are well formed.
		names, _ := r.ResourceAttrs("x")
		if !slices.IsSorted(names) {
			t.Fatalf("unsorted names %v", names)
		}
		_ = r.ReadsClock("x")
		_, _ = r.PrincipalAttrs()
	})
}
