package sandbox

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestAuthMatrix(t *testing.T) {
	t.Parallel()
	s, clk := newTestSandbox(t, Options{})
	reader, _ := mint(t, s, []string{pgRegistrarRead})
	expired, _ := mint(t, s, []string{pgRegistrarRead}, func(b map[string]any) {
		b["expires_on"] = clk.now().Add(time.Minute).UTC().Format(time.RFC3339)
	})
	future, _ := mint(t, s, []string{pgRegistrarRead}, func(b map[string]any) {
		b["not_before"] = clk.now().Add(time.Hour).UTC().Format(time.RFC3339)
	})
	deleted, deletedID := mint(t, s, []string{pgRegistrarRead})
	if r := call(t, s, "DELETE", acctPath("tokens/"+deletedID), s.ParentToken(), nil, ""); r.Status != http.StatusOK {
		t.Fatalf("delete token: %d %s", r.Status, r.Raw)
	}
	elsewhere, _ := mint(t, s, []string{pgRegistrarRead}, func(b map[string]any) {
		b["condition"] = map[string]any{"request_ip": map[string]any{"in": []string{"192.0.2.0/24"}}}
	})
	here, _ := mint(t, s, []string{pgRegistrarRead}, func(b map[string]any) {
		b["condition"] = map[string]any{"request_ip": map[string]any{"in": []string{"127.0.0.1"}}}
	})
	denied, _ := mint(t, s, nil, func(b map[string]any) {
		b["policies"] = []map[string]any{
			{"effect": "allow", "permission_groups": []map[string]string{{"id": permissionGroupID(pgRegistrarRead)}}, "resources": map[string]string{accountResource: "*"}},
			{"effect": "deny", "permission_groups": []map[string]string{{"id": permissionGroupID(pgRegistrarRead)}}, "resources": map[string]string{accountResource: "*"}},
		}
	})
	clk.advance(2 * time.Minute) // past the expired token's expires_on

	check := acctPath("registrar/domain-check")
	body := []byte(`{"domains":["tollgate-auth.com"]}`)
	tests := []struct {
		name   string
		header string
		path   string
		status int
		code   int
		msg    string
	}{
		{"no header", "", check, 400, codeInvalidHeaders, "Invalid request headers"},
		{"not bearer", "Basic abc", check, 400, codeInvalidHeaders, "Invalid request headers"},
		{"malformed token", "Bearer short", check, 400, codeInvalidHeaders, "Invalid request headers"},
		{"unknown token", "Bearer " + strings.Repeat("a", 40), check, 401, codeAuthError, msgAuthError},
		{"unknown token on verify", "Bearer " + strings.Repeat("a", 40), acctPath("tokens/verify"), 401, codeInvalidToken, msgInvalidToken},
		{"expired", "Bearer " + expired, check, 401, codeAuthError, msgAuthError},
		{"not yet valid", "Bearer " + future, check, 401, codeAuthError, msgAuthError},
		{"deleted", "Bearer " + deleted, check, 401, codeAuthError, msgAuthError},
		{"wrong account", "Bearer " + reader, "accounts/00000000000000000000000000000000/registrar/domain-check", 403, codeUnauthorized, msgUnauthorized},
		{"missing permission", "Bearer " + reader, acctPath("registrar/registrations"), 403, codeAuthError, msgAuthError},
		{"parent cannot act", "Bearer " + s.ParentToken(), check, 403, codeAuthError, msgAuthError},
		{"request ip not allowed", "Bearer " + elsewhere, check, 403, codeUnauthorized, "Cannot use the access token from location: 127.0.0.1"},
		{"deny overrides allow", "Bearer " + denied, check, 403, codeAuthError, msgAuthError},
		{"request ip allowed", "Bearer " + here, check, 200, 0, ""},
		{"good", "Bearer " + reader, check, 200, 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			method := "POST"
			if strings.HasSuffix(tc.path, "verify") {
				method = "GET"
			}
			var b []byte
			if method == "POST" {
				b = body
			}
			r := callHeader(t, s, method, tc.path, tc.header, b)
			if r.Status != tc.status || r.code() != tc.code {
				t.Fatalf("got %d code %d, want %d code %d: %s", r.Status, r.code(), tc.status, tc.code, r.Raw)
			}
			if tc.msg != "" && r.Env.Errors[0].Message != tc.msg {
				t.Errorf("message %q, want %q", r.Env.Errors[0].Message, tc.msg)
			}
			if r.Env.Success != (tc.status == 200) {
				t.Errorf("success = %v", r.Env.Success)
			}
			if r.Header.Get("cf-ray") == "" {
				t.Error("no cf-ray header")
			}
		})
	}
	t.Run("header format error has the real error chain", func(t *testing.T) {
		t.Parallel()
		r := callHeader(t, s, "POST", check, "", body)
		if len(r.Env.Errors) != 1 || len(r.Env.Errors[0].ErrorChain) != 1 || r.Env.Errors[0].ErrorChain[0].Code != codeBadAuthHeader {
			t.Fatalf("errors = %+v", r.Env.Errors)
		}
	})
}

// callHeader is call with a raw Authorization header.
func callHeader(t testing.TB, s *Sandbox, method, path, header string, body []byte) reply {
	t.Helper()
	return callAuth(t, s, method, path, header, body, "")
}

func TestVerifyAndPermissionGroups(t *testing.T) {
	t.Parallel()
	s, _ := newTestSandbox(t, Options{})
	r := call(t, s, "GET", acctPath("tokens/verify"), s.ParentToken(), nil, "")
	if r.Status != 200 || len(r.Env.Messages) != 1 || r.Env.Messages[0].Message != "This API Token is valid and active" {
		t.Fatalf("verify: %d %s", r.Status, r.Raw)
	}
	var v struct{ ID, Status string }
	r.result(t, &v)
	if v.Status != "active" || v.ID == "" {
		t.Fatalf("verify result %+v", v)
	}
	r = call(t, s, "GET", acctPath("tokens/permission_groups?name=Workers+Scripts+Write"), s.ParentToken(), nil, "")
	var groups []permissionGroup
	r.result(t, &groups)
	if len(groups) != 1 || groups[0].Name != pgWorkersWrite || groups[0].ID != permissionGroupID(pgWorkersWrite) || groups[0].Scopes[0] != scopeAccount {
		t.Fatalf("groups = %+v", groups)
	}
	r = call(t, s, "GET", acctPath("tokens/permission_groups"), s.ParentToken(), nil, "")
	r.result(t, &groups)
	if len(groups) != len(permissionGroups) {
		t.Fatalf("got %d groups, want %d", len(groups), len(permissionGroups))
	}
}

func TestNoRoute(t *testing.T) {
	t.Parallel()
	s, _ := newTestSandbox(t, Options{})
	r := call(t, s, "GET", "user/tokens", s.ParentToken(), nil, "")
	if r.Status != 404 || r.code() != codeNoRoute || r.Header.Get("cf-ray") == "" {
		t.Fatalf("got %d %s", r.Status, r.Raw)
	}
}
