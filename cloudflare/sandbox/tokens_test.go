package sandbox

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestTokenCreateValidation(t *testing.T) {
	t.Parallel()
	s, clk := newTestSandbox(t, Options{})
	group := map[string]string{"id": permissionGroupID(pgRegistrarRead)}
	policy := func(mod func(map[string]any)) []map[string]any {
		p := map[string]any{"effect": "allow", "permission_groups": []map[string]string{group}, "resources": map[string]string{accountResource: "*"}}
		if mod != nil {
			mod(p)
		}
		return []map[string]any{p}
	}
	past := clk.now().Add(-time.Minute).UTC().Format(time.RFC3339)
	tests := []struct {
		name string
		body any
		code int
	}{
		{"not json", "{", codeMalformedJSON},
		{"no name", map[string]any{"policies": policy(nil)}, codeTokenRequest},
		{"long name", map[string]any{"name": strings.Repeat("n", 121), "policies": policy(nil)}, codeTokenRequest},
		{"no policies", map[string]any{"name": "x"}, codeTokenRequest},
		{"bad effect", map[string]any{"name": "x", "policies": policy(func(p map[string]any) { p["effect"] = "maybe" })}, codeTokenRequest},
		{"no groups", map[string]any{"name": "x", "policies": policy(func(p map[string]any) { p["permission_groups"] = []any{} })}, codeTokenRequest},
		{"unknown group", map[string]any{"name": "x", "policies": policy(func(p map[string]any) {
			p["permission_groups"] = []map[string]string{{"id": "ffffffffffffffffffffffffffffffff"}}
		})}, codeTokenRequest},
		{"no resources", map[string]any{"name": "x", "policies": policy(func(p map[string]any) { p["resources"] = map[string]string{} })}, codeTokenRequest},
		{"other account", map[string]any{"name": "x", "policies": policy(func(p map[string]any) {
			p["resources"] = map[string]string{"com.cloudflare.api.account.ffffffffffffffffffffffffffffffff": "*"}
		})}, codeTokenRequest},
		{"all accounts", map[string]any{"name": "x", "policies": policy(func(p map[string]any) {
			p["resources"] = map[string]string{"com.cloudflare.api.account.*": "*"}
		})}, codeTokenRequest},
		{"nested resources", map[string]any{"name": "x", "policies": policy(func(p map[string]any) {
			p["resources"] = map[string]any{accountResource: map[string]string{"a": "*"}}
		})}, codeTokenRequest},
		{"expired already", map[string]any{"name": "x", "policies": policy(nil), "expires_on": past}, codeTokenRequest},
		{"not_before after expiry", map[string]any{"name": "x", "policies": policy(nil),
			"expires_on": clk.now().Add(time.Hour).UTC().Format(time.RFC3339), "not_before": clk.now().Add(2 * time.Hour).UTC().Format(time.RFC3339)}, codeTokenRequest},
		{"bad cidr", map[string]any{"name": "x", "policies": policy(nil), "condition": map[string]any{"request_ip": map[string]any{"in": []string{"nowhere"}}}}, codeTokenRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var body []byte
			if s, ok := tc.body.(string); ok {
				body = []byte(s)
			} else {
				body = jsonBody(t, tc.body)
			}
			r := call(t, s, "POST", acctPath("tokens"), s.ParentToken(), body, "")
			if r.Status != 400 || r.code() != tc.code {
				t.Fatalf("got %d code %d: %s", r.Status, r.code(), r.Raw)
			}
		})
	}
	if n := len(s.LiveTokens()); n != 1 {
		t.Fatalf("refused creates left %d tokens (want the parent only)", n)
	}
}

func TestTokenEndpoints(t *testing.T) {
	t.Parallel()
	s, clk := newTestSandbox(t, Options{})
	exp := clk.now().Add(5 * time.Minute).UTC().Truncate(time.Second)
	val, id := mint(t, s, []string{pgWorkersWrite}, func(b map[string]any) {
		b["name"] = "tollgate:deploy:op1:abc"
		b["expires_on"] = exp.Format(time.RFC3339)
		b["condition"] = map[string]any{"request_ip": map[string]any{"in": []string{"127.0.0.1"}}}
	})
	if len(val) != 40 {
		t.Fatalf("token value has %d characters, Cloudflare's have 40", len(val))
	}
	r := call(t, s, "GET", acctPath("tokens/"+id), s.ParentToken(), nil, "")
	var got map[string]any
	r.result(t, &got)
	if got["name"] != "tollgate:deploy:op1:abc" || got["expires_on"] != exp.Format(time.RFC3339) || got["value"] != nil || got["status"] != "active" {
		t.Fatalf("get token: %s", r.Raw)
	}
	if !strings.Contains(string(r.Raw), `"in":["127.0.0.1/32"]`) {
		t.Fatalf("condition not stored as CIDR: %s", r.Raw)
	}
	live := s.LiveTokens()
	var rec *TokenRecord
	for i := range live {
		if live[i].ID == id {
			rec = &live[i]
		}
	}
	if rec == nil || fmt.Sprint(rec.PermissionGroups) != "[Workers Scripts Write]" || fmt.Sprint(rec.Resources) != "["+accountResource+"]" || !rec.ExpiresOn.Equal(exp) || rec.Expired {
		t.Fatalf("LiveTokens record %+v", rec)
	}
	clk.advance(6 * time.Minute)
	for _, tr := range s.LiveTokens() {
		if tr.ID == id && !tr.Expired {
			t.Fatal("expired token not marked expired")
		}
	}
	r = call(t, s, "GET", acctPath("tokens/"+id), s.ParentToken(), nil, "")
	if !strings.Contains(string(r.Raw), `"status":"expired"`) {
		t.Fatalf("expired token status: %s", r.Raw)
	}

	for i := 0; i < 11; i++ {
		mint(t, s, []string{pgRegistrarRead})
	}
	seen := map[string]bool{}
	for page := 1; ; page++ {
		r := call(t, s, "GET", acctPath(fmt.Sprintf("tokens?page=%d&per_page=5", page)), s.ParentToken(), nil, "")
		var toks []map[string]any
		r.result(t, &toks)
		if page == 1 && (r.Env.ResultInfo["total_count"] != float64(13) || r.Env.ResultInfo["total_pages"] != float64(3)) {
			t.Fatalf("result_info %v", r.Env.ResultInfo)
		}
		for _, tk := range toks {
			seen[tk["id"].(string)] = true
		}
		if len(toks) == 0 {
			break
		}
	}
	if len(seen) != 13 {
		t.Fatalf("paged through %d tokens, want 13", len(seen))
	}
	for _, q := range []string{"page=0", "per_page=500", "page=1.5", "direction=sideways"} {
		if r := call(t, s, "GET", acctPath("tokens?"+q), s.ParentToken(), nil, ""); r.Status != 400 {
			t.Errorf("%s: %d", q, r.Status)
		}
	}

	if r := call(t, s, "DELETE", acctPath("tokens/"+id), s.ParentToken(), nil, ""); r.Status != 200 || !strings.Contains(string(r.Raw), id) {
		t.Fatalf("delete: %d %s", r.Status, r.Raw)
	}
	for _, m := range []string{"GET", "DELETE"} {
		if r := call(t, s, m, acctPath("tokens/"+id), s.ParentToken(), nil, ""); r.Status != 404 || r.code() != codeTokenNotFound {
			t.Fatalf("%s deleted token: %d %s", m, r.Status, r.Raw)
		}
	}
	// A minted token without token permissions cannot manage tokens.
	if r := call(t, s, "GET", acctPath("tokens"), val, nil, ""); r.Status == 200 {
		t.Fatalf("deleted token listed tokens: %s", r.Raw)
	}
	other, _ := mint(t, s, []string{pgRegistrarAdmin})
	if r := call(t, s, "POST", acctPath("tokens"), other, jsonBody(t, map[string]any{"name": "escalate"}), ""); r.Status != 403 {
		t.Fatalf("registrar token created a token: %d", r.Status)
	}
}
