package sandbox

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudflare/cloudflare-go/v6/accounts"
	"github.com/cloudflare/cloudflare-go/v6/packages/pagination"
	"github.com/cloudflare/cloudflare-go/v6/registrar"
	"github.com/cloudflare/cloudflare-go/v6/shared"
	"github.com/cloudflare/cloudflare-go/v6/workers"
	"github.com/cloudflare/cloudflare-go/v6/zones"
)

// answerTypes is, per route, the cloudflare-go type its successful answer
// decodes into: the whole body (envelope or page), as cloudflare-go reads it.
var answerTypes = map[string]func() any{
	"POST accounts/{account_id}/registrar/domain-check":                              func() any { return &registrar.RegistrarCheckResponseEnvelope{} },
	"POST accounts/{account_id}/registrar/registrations":                             func() any { return &registrar.RegistrationNewResponseEnvelope{} },
	"GET accounts/{account_id}/registrar/registrations":                              func() any { return &pagination.CursorPagination[registrar.Registration]{} },
	"GET accounts/{account_id}/registrar/registrations/{domain}":                     func() any { return &registrar.RegistrationGetResponseEnvelope{} },
	"GET accounts/{account_id}/registrar/registrations/{domain}/registration-status": func() any { return &registrar.RegistrationStatusGetResponseEnvelope{} },
	"GET zones":           func() any { return &pagination.V4PagePaginationArray[zones.Zone]{} },
	"GET zones/{zone_id}": func() any { return &zones.ZoneGetResponseEnvelope{} },
	"PUT accounts/{account_id}/workers/scripts/{script}":                                func() any { return &workers.ScriptUpdateResponseEnvelope{} },
	"GET accounts/{account_id}/workers/scripts":                                         func() any { return &pagination.SinglePage[workers.ScriptListResponse]{} },
	"GET accounts/{account_id}/workers/scripts/{script}":                                nil, // multipart content, not JSON
	"DELETE accounts/{account_id}/workers/scripts/{script}":                             func() any { return &workers.ScriptDeleteResponseEnvelope{} },
	"GET accounts/{account_id}/workers/subdomain":                                       func() any { return &workers.SubdomainGetResponseEnvelope{} },
	"POST accounts/{account_id}/workers/scripts/{script}/subdomain":                     func() any { return &workers.ScriptSubdomainNewResponseEnvelope{} },
	"GET accounts/{account_id}/workers/scripts/{script}/subdomain":                      func() any { return &workers.ScriptSubdomainGetResponseEnvelope{} },
	"POST accounts/{account_id}/workers/scripts/{script}/versions":                      func() any { return &workers.ScriptVersionNewResponseEnvelope{} },
	"GET accounts/{account_id}/workers/scripts/{script}/versions":                       func() any { return &pagination.V4PagePagination[workers.ScriptVersionListResponse]{} },
	"GET accounts/{account_id}/workers/scripts/{script}/versions/{version_id}":          func() any { return &workers.ScriptVersionGetResponseEnvelope{} },
	"POST accounts/{account_id}/workers/scripts/{script}/deployments":                   func() any { return &workers.ScriptDeploymentNewResponseEnvelope{} },
	"GET accounts/{account_id}/workers/scripts/{script}/deployments":                    func() any { return &workers.ScriptDeploymentListResponseEnvelope{} },
	"GET accounts/{account_id}/workers/scripts/{script}/deployments/{deployment_id}":    func() any { return &workers.ScriptDeploymentGetResponseEnvelope{} },
	"DELETE accounts/{account_id}/workers/scripts/{script}/deployments/{deployment_id}": func() any { return &workers.ScriptDeploymentDeleteResponse{} },
	"PUT accounts/{account_id}/workers/domains":                                         func() any { return &workers.DomainUpdateResponseEnvelope{} },
	"GET accounts/{account_id}/workers/domains":                                         func() any { return &pagination.SinglePage[workers.DomainListResponse]{} },
	"GET accounts/{account_id}/workers/domains/{domain_id}":                             func() any { return &workers.DomainGetResponseEnvelope{} },
	"DELETE accounts/{account_id}/workers/domains/{domain_id}":                          func() any { return &workers.DomainDeleteResponse{} },
	"POST accounts/{account_id}/tokens":                                                 func() any { return &accounts.TokenNewResponseEnvelope{} },
	"GET accounts/{account_id}/tokens":                                                  func() any { return &pagination.V4PagePaginationArray[shared.Token]{} },
	"GET accounts/{account_id}/tokens/verify":                                           func() any { return &accounts.TokenVerifyResponseEnvelope{} },
	"GET accounts/{account_id}/tokens/permission_groups":                                func() any { return &pagination.SinglePage[accounts.TokenPermissionGroupListResponse]{} },
	"GET accounts/{account_id}/tokens/{token_id}":                                       func() any { return &accounts.TokenGetResponseEnvelope{} },
	"DELETE accounts/{account_id}/tokens/{token_id}":                                    func() any { return &accounts.TokenDeleteResponseEnvelope{} },
	"PUT accounts/{account_id}/tokens/{token_id}/value":                                 func() any { return &accounts.TokenValueUpdateResponseEnvelope{} },
}

// errorAnswer is what every error answer decodes into.
type errorAnswer = accounts.TokenGetResponseEnvelope

// TestAnswersCarryEveryRequiredField sends a request to every endpoint,
// decodes each answer with cloudflare-go's own type for it and checks, by
// reflection over the `json:",required"` / `api:"required"` tags and
// cloudflare-go's per-field presence metadata, that every field
// cloudflare-go marks required is present (and not null unless nullable),
// at every depth. Error answers are checked against the envelope's
// required fields. Every route must have been answered successfully.
func TestAnswersCarryEveryRequiredField(t *testing.T) {
	t.Parallel()
	s, _ := newTestSandbox(t, Options{})
	patterns := http.NewServeMux()
	for _, rt := range routeTable {
		patterns.Handle(rt.method+" "+APIPrefix+rt.path, http.NotFoundHandler())
		if _, ok := answerTypes[rt.method+" "+rt.path]; !ok {
			t.Errorf("route %s %s has no cloudflare-go answer type in answerTypes", rt.method, rt.path)
		}
	}
	admin := mintAdmin(t, s)
	answered := map[string]bool{}
	send := func(method, path string, body []byte, ctype string) reply {
		t.Helper()
		r := call(t, s, method, path, admin, body, ctype)
		req := httptest.NewRequest(method, "http://sandbox.test"+APIPrefix+path, nil)
		_, pattern := patterns.Handler(req)
		key := method + " " + strings.TrimPrefix(pattern, method+" "+APIPrefix)
		newT, ok := answerTypes[key]
		if !ok {
			t.Fatalf("%s %s: no route pattern (%q)", method, path, pattern)
		}
		if r.Status >= 400 {
			checkDecoded(t, key+" (error)", r.Raw, &errorAnswer{})
			return r
		}
		answered[key] = true
		if newT == nil {
			return r
		}
		checkDecoded(t, key, r.Raw, newT())
		return r
	}
	mustOK := func(r reply, what string) reply {
		t.Helper()
		if r.Status >= 300 {
			t.Fatalf("%s: %d %s", what, r.Status, r.Raw)
		}
		return r
	}
	id := func(r reply) string {
		t.Helper()
		var v struct{ ID string }
		r.result(t, &v)
		return v.ID
	}

	mustOK(send("POST", acctPath("registrar/domain-check"), []byte(`{"domains":["conform.dev","premium.com"]}`), ""), "domain-check")
	mustOK(send("POST", acctPath("registrar/registrations"), []byte(`{"domain_name":"conform.dev"}`), ""), "register")
	mustOK(send("POST", acctPath("registrar/registrations"), []byte(`{"domain_name":"slow-conform.dev"}`), ""), "register slow")
	send("POST", acctPath("registrar/registrations"), []byte(`{"domain_name":"conform.dev"}`), "") // 409
	mustOK(send("GET", acctPath("registrar/registrations"), nil, ""), "list registrations")
	mustOK(send("GET", acctPath("registrar/registrations/conform.dev"), nil, ""), "get registration")
	mustOK(send("GET", acctPath("registrar/registrations/slow-conform.dev/registration-status"), nil, ""), "status")

	mustOK(send("GET", "zones?name=conform.dev", nil, ""), "zones")
	zone := zoneID("conform.dev")
	mustOK(send("GET", "zones/"+zone, nil, ""), "zone")
	send("GET", "zones/"+zoneID("nope.dev"), nil, "") // 404

	body, ct := goodUpload(t)
	mustOK(send("PUT", acctPath("workers/scripts/conform"), body, ct), "upload")
	mustOK(send("GET", acctPath("workers/scripts"), nil, ""), "scripts")
	mustOK(send("GET", acctPath("workers/scripts/conform"), nil, ""), "content")
	mustOK(send("GET", acctPath("workers/subdomain"), nil, ""), "account subdomain")
	mustOK(send("POST", acctPath("workers/scripts/conform/subdomain"), []byte(`{"enabled":true}`), ""), "enable subdomain")
	mustOK(send("GET", acctPath("workers/scripts/conform/subdomain"), nil, ""), "subdomain")

	vbody, vct := uploadBody(t, map[string]any{"main_module": "worker.js", "compatibility_date": "2025-01-01", "annotations": map[string]string{"workers/tag": "op_1"}},
		upPart{form: "files", file: "worker.js", ctype: "application/javascript+module", content: []byte(helloModule + "//v2")})
	v2 := id(mustOK(send("POST", acctPath("workers/scripts/conform/versions"), vbody, vct), "version upload"))
	mustOK(send("GET", acctPath("workers/scripts/conform/versions"), nil, ""), "versions")
	mustOK(send("GET", acctPath("workers/scripts/conform/versions/"+v2), nil, ""), "version")
	deps := s.Deployments("conform")
	v1 := deps[0].Traffic[0].VersionID
	split := fmt.Sprintf(`{"strategy":"percentage","versions":[{"version_id":%q,"percentage":10},{"version_id":%q,"percentage":90}],"annotations":{"workers/message":"step 1"}}`, v2, v1)
	mustOK(send("POST", acctPath("workers/scripts/conform/deployments"), []byte(split), ""), "deploy split")
	send("POST", acctPath("workers/scripts/conform/deployments"), []byte(`{"strategy":"percentage","versions":[]}`), "") // 400
	mustOK(send("GET", acctPath("workers/scripts/conform/deployments"), nil, ""), "deployments")
	mustOK(send("GET", acctPath("workers/scripts/conform/deployments/"+deps[0].ID), nil, ""), "deployment")
	mustOK(send("DELETE", acctPath("workers/scripts/conform/deployments/"+deps[0].ID), nil, ""), "delete old deployment")

	dom := id(mustOK(send("PUT", acctPath("workers/domains"), []byte(`{"hostname":"www.conform.dev","service":"conform","zone_id":"`+zone+`"}`), ""), "attach"))
	send("PUT", acctPath("workers/domains"), []byte(`{"hostname":"www.elsewhere.dev","service":"conform"}`), "") // 400
	mustOK(send("GET", acctPath("workers/domains?zone_id="+zone), nil, ""), "domains")
	mustOK(send("GET", acctPath("workers/domains/"+dom), nil, ""), "domain")
	mustOK(send("DELETE", acctPath("workers/domains/"+dom), nil, ""), "detach")

	mustOK(send("GET", acctPath("tokens/verify"), nil, ""), "verify")
	mustOK(send("GET", acctPath("tokens/permission_groups"), nil, ""), "groups")
	_, tokID := mint(t, s, []string{pgRegistrarRead})
	mustOK(send("GET", acctPath("tokens?per_page=50"), nil, ""), "tokens")
	mustOK(send("GET", acctPath("tokens/"+tokID), nil, ""), "token")
	mustOK(send("PUT", acctPath("tokens/"+tokID+"/value"), []byte(`{}`), ""), "roll")
	mustOK(send("DELETE", acctPath("tokens/"+tokID), nil, ""), "delete token")
	mustOK(send("POST", acctPath("tokens"), jsonBody(t, map[string]any{
		"name": "conform", "policies": []map[string]any{{"effect": "allow",
			"permission_groups": []map[string]string{{"id": permissionGroupID(pgZoneRead)}},
			"resources":         map[string]string{zoneResourcePrefix + zone: "*"}}},
	}), ""), "mint zone token")
	mustOK(send("DELETE", acctPath("workers/scripts/conform"), nil, ""), "delete script")

	for key := range answerTypes {
		if !answered[key] {
			t.Errorf("no successful answer from %s: add it to the scenario", key)
		}
	}
}

// mintAdmin mints a token holding every permission group: the account
// groups on the account and the zone groups on all of its zones.
func mintAdmin(t testing.TB, s *Sandbox) string {
	t.Helper()
	var acct, zone []map[string]string
	for _, g := range permissionGroups {
		if g.Scopes[0] == scopeZone {
			zone = append(zone, map[string]string{"id": g.ID})
		} else {
			acct = append(acct, map[string]string{"id": g.ID})
		}
	}
	body := map[string]any{"name": "test:admin", "policies": []map[string]any{
		{"effect": "allow", "permission_groups": acct, "resources": map[string]string{accountResource: "*"}},
		{"effect": "allow", "permission_groups": zone, "resources": map[string]any{accountResource: map[string]string{allZonesResource: "*"}}},
	}}
	r := call(t, s, "POST", acctPath("tokens"), s.ParentToken(), jsonBody(t, body), "")
	if r.Status != http.StatusOK {
		t.Fatalf("mint admin: %d %s", r.Status, r.Raw)
	}
	var tok struct{ Value string }
	r.result(t, &tok)
	return tok.Value
}

// checkDecoded decodes raw with cloudflare-go into v and checks its
// required fields.
func checkDecoded(t *testing.T, what string, raw []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(raw, v); err != nil {
		t.Errorf("%s: cloudflare-go cannot decode the answer: %v\n%s", what, err, raw)
		return
	}
	for _, p := range missingRequired(reflect.ValueOf(v).Elem(), "") {
		t.Errorf("%s: required field %s\n%s", what, p, raw)
	}
}

// presence is what cloudflare-go's apijson.Field (an internal type) tells
// about one decoded field.
type presence interface {
	IsMissing() bool
	IsNull() bool
}

var timeType = reflect.TypeOf(time.Time{})

// missingRequired walks a decoded cloudflare-go value and lists the
// required fields that were absent, or null without being nullable.
func missingRequired(v reflect.Value, path string) []string {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return nil
		}
		return missingRequired(v.Elem(), path)
	case reflect.Slice, reflect.Array:
		var out []string
		for i := 0; i < v.Len(); i++ {
			out = append(out, missingRequired(v.Index(i), fmt.Sprintf("%s[%d]", path, i))...)
		}
		return out
	case reflect.Map:
		var out []string
		for _, k := range v.MapKeys() {
			out = append(out, missingRequired(v.MapIndex(k), fmt.Sprintf("%s[%v]", path, k))...)
		}
		return out
	case reflect.Struct:
	default:
		return nil
	}
	if v.Type() == timeType {
		return nil
	}
	meta := v.FieldByName("JSON")
	var out []string
	for i := 0; i < v.NumField(); i++ {
		f := v.Type().Field(i)
		if !f.IsExported() || f.Name == "JSON" {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			name = f.Name
		}
		here := path + "." + name
		required := strings.Contains(f.Tag.Get("json"), ",required") || hasWord(f.Tag.Get("api"), "required")
		nullable := hasWord(f.Tag.Get("api"), "nullable")
		var p presence
		if meta.IsValid() {
			if m := meta.FieldByName(f.Name); m.IsValid() && m.CanInterface() {
				p, _ = m.Interface().(presence)
			}
		}
		if p != nil {
			switch {
			case required && p.IsMissing():
				out = append(out, here+" is missing")
				continue
			case required && p.IsNull() && !nullable:
				out = append(out, here+" is null")
				continue
			case p.IsNull():
				continue
			}
		}
		out = append(out, missingRequired(v.Field(i), here)...)
	}
	return out
}

func hasWord(tag, word string) bool {
	for _, w := range strings.Split(tag, ",") {
		if w == word {
			return true
		}
	}
	return false
}

// TestMissingRequiredFinds proves the checker sees what it must: missing and
// null required fields at depth, while nullable nulls and optional fields
// pass.
func TestMissingRequiredFinds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		raw  string
		v    any
		want []string
	}{
		{"missing in result", `{"success":true,"errors":[],"messages":[],"result":{"id":"x","hostname":"a.dev"}}`, &workers.DomainGetResponseEnvelope{},
			[]string{".result.cert_id is missing", ".result.environment is missing", ".result.service is missing", ".result.zone_id is missing", ".result.zone_name is missing"}},
		{"null not nullable", `{"success":true,"errors":[],"messages":[],"result":null}`, &workers.DomainGetResponseEnvelope{}, []string{".result is null"}},
		{"nested in slice", `{"success":true,"errors":[],"messages":[],"result":{"id":"d","created_on":"2025-01-01T00:00:00Z","source":"api","strategy":"percentage","versions":[{"percentage":100}]}}`,
			&workers.ScriptDeploymentGetResponseEnvelope{}, []string{".result.versions[0].version_id is missing"}},
		{"nullable null is fine", `{"success":true,"errors":[],"messages":[]}`, &zones.ZoneGetResponseEnvelope{}, nil},
		{"envelope", `{"result":{}}`, &workers.ScriptDeploymentListResponseEnvelope{},
			[]string{".errors is missing", ".messages is missing", ".success is missing", ".result.deployments is missing"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if err := json.Unmarshal([]byte(tc.raw), tc.v); err != nil {
				t.Fatal(err)
			}
			got := missingRequired(reflect.ValueOf(tc.v).Elem(), "")
			slices.Sort(got)
			slices.Sort(tc.want)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}
