package sandbox

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func FuzzParseDomainCheck(f *testing.F) {
	for _, s := range []string{`{"domains":["a.com"]}`, `{"domains":[]}`, `{}`, `[]`, `{"domains":"x"}`, `{"domains":["a","b"]} x`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		names, err := parseDomainCheck(body)
		if err == nil && (len(names) < 1 || len(names) > 20) {
			t.Fatalf("accepted %d names", len(names))
		}
	})
}

func FuzzParseRegistrationNew(f *testing.F) {
	for _, s := range []string{
		`{"domain_name":"a.com"}`, `{"domain_name":"a.com","years":10,"auto_renew":true,"privacy_mode":"off"}`,
		`{"domain_name":"a.com","years":1e3}`, `{"domain_name":"a.com","contacts":{"registrant":{"email":"a@b.c"}}}`,
		`{"domain_name":""}`, `{"years":"2"}`, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := parseRegistrationNew(body)
		if err != nil {
			return
		}
		if req.Domain == "" || req.Years < 1 || req.Years > 10 {
			t.Fatalf("accepted %+v", req)
		}
	})
}

func FuzzParseTokenCreate(f *testing.F) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	good := map[string]any{
		"name": "tollgate:quote:x:1",
		"policies": []map[string]any{{
			"effect": "allow", "permission_groups": []map[string]string{{"id": permissionGroupID(pgRegistrarRead)}},
			"resources": map[string]string{accountResource: "*"},
		}},
		"expires_on": "2026-01-01T00:05:00Z",
		"condition":  map[string]any{"request_ip": map[string]any{"in": []string{"127.0.0.1", "10.0.0.0/8"}, "not_in": []string{"::1"}}},
	}
	b, _ := json.Marshal(good)
	f.Add(b)
	for _, s := range []string{`{}`, `{"name":"x","policies":[]}`, `{"name":"x","policies":[{"effect":"allow"}]}`, `{"expires_on":"nope"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := parseTokenCreate(body, now)
		if err != nil {
			return
		}
		if req.Name == "" || len(req.Policies) == 0 {
			t.Fatalf("accepted %+v", req)
		}
		for _, p := range req.Policies {
			if len(p.PermissionGroups) == 0 || len(p.Resources) != 1 || p.Resources[accountResource] != "*" {
				t.Fatalf("accepted policy %+v", p)
			}
		}
		if req.ExpiresOn != nil && !req.ExpiresOn.After(now) {
			t.Fatalf("accepted an expired token")
		}
	})
}

func FuzzParseScriptUpload(f *testing.F) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	body, ct := goodUpload(f)
	f.Add(body, ct)
	b2, ct2 := uploadBody(f, map[string]string{"body_part": "script.js"}, upPart{form: "script.js", ctype: "application/javascript", content: []byte("addEventListener('fetch', e => {})")})
	f.Add(b2, ct2)
	f.Add([]byte("--x\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\n{}\r\n--x--\r\n"), "multipart/form-data; boundary=x")
	f.Add([]byte("garbage"), "text/plain")
	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		up, err := parseScriptUpload(contentType, body, now)
		if err != nil {
			return
		}
		entry := up.Meta.MainModule
		if entry == "" {
			entry = up.Meta.BodyPart
		}
		total, found := 0, false
		for _, m := range up.Modules {
			total += len(m.Content)
			found = found || m.Name == entry
		}
		if !found || total > maxScriptBytes {
			t.Fatalf("accepted upload: entry %q found=%v total=%d", entry, found, total)
		}
	})
}

// FuzzHandlerBodies sends arbitrary bodies to every endpoint that reads one,
// with a token allowed everything: the sandbox must answer a Cloudflare
// envelope, never panic and never 5xx.
func FuzzHandlerBodies(f *testing.F) {
	s, err := New(Options{})
	if err != nil {
		f.Fatal(err)
	}
	tok, _ := mint(f, s, allGroups)
	up, ct := goodUpload(f)
	f.Add(uint8(0), []byte(`{"domains":["fuzz.com"]}`), "application/json")
	f.Add(uint8(1), []byte(`{"domain_name":"fuzz.com"}`), "application/json")
	f.Add(uint8(2), up, ct)
	f.Add(uint8(3), []byte(`{"enabled":true}`), "application/json")
	f.Add(uint8(4), []byte(`{"name":"x","policies":[]}`), "application/json")
	f.Add(uint8(5), []byte(`{}`), "application/json")
	endpoints := []struct{ method, path string }{
		{"POST", acctPath("registrar/domain-check")},
		{"POST", acctPath("registrar/registrations")},
		{"PUT", acctPath("workers/scripts/fuzzed")},
		{"POST", acctPath("workers/scripts/fuzzed/subdomain")},
		{"POST", acctPath("tokens")},
		{"GET", acctPath("registrar/registrations?per_page=3")},
	}
	f.Fuzz(func(t *testing.T, which uint8, body []byte, contentType string) {
		ep := endpoints[int(which)%len(endpoints)]
		req := httptest.NewRequest(ep.method, "http://sandbox.test"+APIPrefix+ep.path, bytes.NewReader(body))
		req.RemoteAddr = "127.0.0.1:1"
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", contentType)
		w := httptest.NewRecorder()
		s.ServeHTTP(w, req)
		if w.Code >= 500 {
			t.Fatalf("%s %s: %d %s", ep.method, ep.path, w.Code, w.Body.String())
		}
		if !strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") {
			t.Fatalf("answer is %q", w.Header().Get("Content-Type"))
		}
		var env map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &env); err != nil {
			t.Fatalf("answer is not JSON: %v", err)
		}
		for _, k := range []string{"success", "errors", "messages", "result"} {
			if _, ok := env[k]; !ok {
				t.Fatalf("envelope without %q: %s", k, w.Body.String())
			}
		}
		if w.Code == http.StatusOK || w.Code == http.StatusCreated || w.Code == http.StatusAccepted {
			if env["success"] != true {
				t.Fatalf("2xx without success: %s", w.Body.String())
			}
		}
	})
}
