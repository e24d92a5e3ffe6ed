package sandbox

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// mintPolicies mints a token from raw policies with the parent token.
func mintPolicies(t testing.TB, s *Sandbox, policies ...map[string]any) (string, reply) {
	t.Helper()
	r := call(t, s, "POST", acctPath("tokens"), s.ParentToken(), jsonBody(t, map[string]any{"name": "test:policies", "policies": policies}), "")
	if r.Status != http.StatusOK {
		return "", r
	}
	var tok struct{ Value string }
	r.result(t, &tok)
	return tok.Value, r
}

func policy(groups []string, resources any) map[string]any {
	var pgs []map[string]string
	for _, g := range groups {
		pgs = append(pgs, map[string]string{"id": permissionGroupID(g)})
	}
	return map[string]any{"effect": "allow", "permission_groups": pgs, "resources": resources}
}

func zoneRes(ids ...string) map[string]string {
	out := map[string]string{}
	for _, id := range ids {
		out[zoneResourcePrefix+id] = "*"
	}
	return out
}

var (
	accountRes  = map[string]string{accountResource: "*"}
	allZonesRes = map[string]any{accountResource: map[string]string{allZonesResource: "*"}}
)

// register registers a domain with a registrar-admin token and fails the
// test otherwise.
func register(t testing.TB, s *Sandbox, domain string) {
	t.Helper()
	admin, _ := mint(t, s, []string{pgRegistrarAdmin})
	if r := call(t, s, "POST", acctPath("registrar/registrations"), admin, []byte(`{"domain_name":"`+domain+`"}`), ""); r.Status != http.StatusCreated {
		t.Fatalf("register %s: %d %s", domain, r.Status, r.Raw)
	}
}

func TestRegistrationCreatesZone(t *testing.T) {
	t.Parallel()
	s, _ := newTestSandbox(t, Options{})
	register(t, s, "zoned.dev")
	// A workflow that has not succeeded yet has no zone; one that fails never gets one.
	admin, _ := mint(t, s, []string{pgRegistrarAdmin})
	call(t, s, "POST", acctPath("registrar/registrations"), admin, []byte(`{"domain_name":"slow-zoned.dev"}`), "")
	zs := s.Zones()
	if len(zs) != 1 || zs[0].Name != "zoned.dev" || zs[0].ID != zoneID("zoned.dev") || zs[0].Status != "active" {
		t.Fatalf("zones after one registration: %+v", zs)
	}
	for range 2 {
		call(t, s, "GET", acctPath("registrar/registrations/slow-zoned.dev/registration-status"), admin, nil, "")
	}
	if zs := s.Zones(); len(zs) != 2 {
		t.Fatalf("the slow registration's zone is missing once it succeeded: %+v", zs)
	}
	reader, _ := mintPolicies(t, s, policy([]string{pgZoneRead}, allZonesRes))
	r := call(t, s, "GET", "zones?name=zoned.dev", reader, nil, "")
	var got []struct {
		ID, Name, Status string
		Account          struct{ ID string }
	}
	r.result(t, &got)
	if r.Status != 200 || len(got) != 1 || got[0].ID != zoneID("zoned.dev") || got[0].Account.ID != accountID {
		t.Fatalf("zones?name=zoned.dev: %d %s", r.Status, r.Raw)
	}
}

// TestZoneScopedTokens: a token's zone groups work on its zones alone, its
// account groups on the account alone.
func TestZoneScopedTokens(t *testing.T) {
	t.Parallel()
	s, _ := newTestSandbox(t, Options{})
	register(t, s, "zone-a.dev")
	register(t, s, "zone-b.dev")
	a, b := zoneID("zone-a.dev"), zoneID("zone-b.dev")
	tokA, r := mintPolicies(t, s, policy([]string{pgZoneRead}, zoneRes(a)))
	if tokA == "" {
		t.Fatalf("mint zone-a token: %s", r.Raw)
	}
	var list []struct{ ID string }
	r = call(t, s, "GET", "zones", tokA, nil, "")
	r.result(t, &list)
	if len(list) != 1 || list[0].ID != a {
		t.Fatalf("zone-a token lists %s", r.Raw)
	}
	if r := call(t, s, "GET", "zones/"+a, tokA, nil, ""); r.Status != 200 {
		t.Fatalf("zone-a token on zone a: %d %s", r.Status, r.Raw)
	}
	if r := call(t, s, "GET", "zones/"+b, tokA, nil, ""); r.Status != http.StatusForbidden || r.code() != codeUnauthorized {
		t.Fatalf("zone-a token on zone b: %d %s", r.Status, r.Raw)
	}
	if r := call(t, s, "POST", acctPath("registrar/domain-check"), tokA, []byte(`{"domains":["x.dev"]}`), ""); r.Status != http.StatusForbidden {
		t.Fatalf("zone-a token on the registrar: %d %s", r.Status, r.Raw)
	}
	// An account token with the account's zone groups on the account
	// resource only sees no zone: zone groups count on zones.
	none, _ := mintPolicies(t, s, policy([]string{pgWorkersRead}, accountRes))
	r = call(t, s, "GET", "zones", none, nil, "")
	r.result(t, &list)
	if r.Status != 200 || len(list) != 0 {
		t.Fatalf("token without Zone Read lists %s", r.Raw)
	}
	// Nested named zones work like single zone resources.
	nested, r := mintPolicies(t, s, policy([]string{pgZoneRead}, map[string]any{accountResource: map[string]string{zoneResourcePrefix + b: "*"}}))
	if nested == "" {
		t.Fatalf("mint nested: %s", r.Raw)
	}
	if r := call(t, s, "GET", "zones/"+b, nested, nil, ""); r.Status != 200 {
		t.Fatalf("nested zone-b token on zone b: %d %s", r.Status, r.Raw)
	}
	if r := call(t, s, "GET", "zones/"+a, nested, nil, ""); r.Status != http.StatusForbidden {
		t.Fatalf("nested zone-b token on zone a: %d %s", r.Status, r.Raw)
	}
}

func TestTokenResourcesRefused(t *testing.T) {
	t.Parallel()
	s, _ := newTestSandbox(t, Options{})
	register(t, s, "known.dev")
	unknown := zoneID("unknown.dev")
	tests := []struct {
		name string
		pol  map[string]any
		want string
	}{
		{"unknown zone", policy([]string{pgZoneRead}, zoneRes(unknown)), "not a zone of this account"},
		{"zone group on the account", policy([]string{pgZoneRead}, accountRes), "zone permission groups need zones"},
		{"account group on a zone", policy([]string{pgWorkersWrite}, zoneRes(zoneID("known.dev"))), "account permission groups need the account"},
		{"another account", policy([]string{pgWorkersWrite}, map[string]string{scopeAccount + ".00000000000000000000000000000000": "*"}), "is not allowed"},
		{"bad zone id", policy([]string{pgZoneRead}, map[string]string{zoneResourcePrefix + "x": "*"}), "is not allowed"},
		{"nested non-zone", policy([]string{pgZoneRead}, map[string]any{accountResource: map[string]string{"com.cloudflare.api.user.1": "*"}}), "want"},
		{"not star", policy([]string{pgZoneRead}, zoneResFor(zoneID("known.dev"), "read")), `got \"read\"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tok, r := mintPolicies(t, s, tc.pol)
			if tok != "" || r.Status != http.StatusBadRequest || !strings.Contains(string(r.Raw), tc.want) {
				t.Fatalf("got %d %s, want 400 naming %q", r.Status, r.Raw, tc.want)
			}
		})
	}
}

func zoneResFor(id, v string) map[string]string {
	return map[string]string{zoneResourcePrefix + id: v}
}

// TestZoneListQuery covers the zones list's filters and paging.
func TestZoneListQuery(t *testing.T) {
	t.Parallel()
	s, _ := newTestSandbox(t, Options{})
	for i := range 7 {
		if _, err := s.AddZone(fmt.Sprintf("q%d.dev", i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.AddZone("not a domain"); err == nil {
		t.Fatal("AddZone accepted a malformed name")
	}
	reader, _ := mintPolicies(t, s, policy([]string{pgZoneRead}, allZonesRes))
	names := func(q string) (int, string) {
		r := call(t, s, "GET", "zones"+q, reader, nil, "")
		var list []struct{ Name string }
		if r.Status == 200 {
			r.result(t, &list)
		}
		var out []string
		for _, z := range list {
			out = append(out, z.Name)
		}
		return r.Status, strings.Join(out, ",")
	}
	tests := []struct{ q, want string }{
		{"?per_page=5", "q0.dev,q1.dev,q2.dev,q3.dev,q4.dev"},
		{"?per_page=5&page=2", "q5.dev,q6.dev"},
		{"?name=q3.dev", "q3.dev"},
		{"?name=starts_with:q1", "q1.dev"},
		{"?name=contains:5", "q5.dev"},
		{"?status=pending", ""},
		{"?account.id=" + accountID + "&name=ends_with:6.dev", "q6.dev"},
		{"?account.id=00000000000000000000000000000000", ""},
		{"?direction=desc&per_page=5", "q6.dev,q5.dev,q4.dev,q3.dev,q2.dev"},
	}
	for _, tc := range tests {
		if status, got := names(tc.q); status != 200 || got != tc.want {
			t.Errorf("zones%s: %d %q, want %q", tc.q, status, got, tc.want)
		}
	}
	for _, q := range []string{"?per_page=2", "?page=0", "?status=gone", "?direction=up"} {
		if status, _ := names(q); status != http.StatusBadRequest {
			t.Errorf("zones%s: %d, want 400", q, status)
		}
	}
}
