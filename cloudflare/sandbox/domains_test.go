package sandbox

import (
	"net/http"
	"strings"
	"testing"
)

// attachToken is what attaching a Worker to a hostname on zone takes: the
// account's Workers Scripts Write and the zone's Workers Routes Write.
func attachToken(t testing.TB, s *Sandbox, zone string) string {
	t.Helper()
	tok, r := mintPolicies(t, s,
		policy([]string{pgWorkersWrite}, accountRes),
		policy([]string{pgRoutesWrite}, zoneRes(zone)))
	if tok == "" {
		t.Fatalf("mint attach token: %s", r.Raw)
	}
	return tok
}

func attach(t testing.TB, s *Sandbox, tok, hostname, service string) reply {
	t.Helper()
	return call(t, s, "PUT", acctPath("workers/domains"), tok, jsonBody(t, map[string]string{"hostname": hostname, "service": service}), "")
}

func uploadScript(t testing.TB, s *Sandbox, name string) {
	t.Helper()
	tok, _ := mint(t, s, []string{pgWorkersWrite})
	body, ct := goodUpload(t)
	if r := call(t, s, "PUT", acctPath("workers/scripts/"+name), tok, body, ct); r.Status != 200 {
		t.Fatalf("upload %s: %s", name, r.Raw)
	}
}

func TestCustomDomains(t *testing.T) {
	t.Parallel()
	s, _ := newTestSandbox(t, Options{})
	register(t, s, "live.dev")
	register(t, s, "other.dev")
	uploadScript(t, s, "site")
	uploadScript(t, s, "site-v2")
	zone := zoneID("live.dev")
	tok := attachToken(t, s, zone)

	type dom struct {
		ID, Hostname, Service, Environment string
		ZoneID                             string `json:"zone_id"`
		ZoneName                           string `json:"zone_name"`
		CertID                             string `json:"cert_id"`
	}
	var apex, www dom
	r := attach(t, s, tok, "live.dev", "site")
	r.result(t, &apex)
	if r.Status != 200 || apex.Hostname != "live.dev" || apex.ZoneID != zone || apex.ZoneName != "live.dev" || apex.Service != "site" || apex.Environment != "production" || apex.CertID == "" {
		t.Fatalf("attach apex: %d %s", r.Status, r.Raw)
	}
	r = attach(t, s, tok, "WWW.Live.dev.", "site")
	r.result(t, &www)
	if r.Status != 200 || www.Hostname != "www.live.dev" || www.ZoneID != zone {
		t.Fatalf("attach www: %d %s", r.Status, r.Raw)
	}
	// Attaching again moves the hostname to the other Worker, same id.
	var moved dom
	r = attach(t, s, tok, "www.live.dev", "site-v2")
	r.result(t, &moved)
	if moved.ID != www.ID || moved.Service != "site-v2" || moved.CertID != www.CertID || len(s.Domains()) != 2 {
		t.Fatalf("re-attach: %s; domains %+v", r.Raw, s.Domains())
	}

	refused := []struct {
		name, hostname, service string
		token                   string
		status, code            int
	}{
		{"zone b with a zone a token", "other.dev", "site", tok, http.StatusForbidden, codeAuthError},
		{"www on zone b with a zone a token", "www.other.dev", "site", tok, http.StatusForbidden, codeAuthError},
		{"not a zone of the account", "www.elsewhere.dev", "site", tok, http.StatusBadRequest, codeDomainNoZone},
		{"no such Worker", "api.live.dev", "ghost", tok, http.StatusNotFound, codeWorkerNotFound},
		{"wildcard", "*.live.dev", "site", tok, http.StatusBadRequest, codeDomainInvalid},
		{"bad service", "api.live.dev", "Bad Name", tok, http.StatusBadRequest, codeDomainInvalid},
	}
	for _, tc := range refused {
		r := attach(t, s, tc.token, tc.hostname, tc.service)
		if r.Status != tc.status || r.code() != tc.code {
			t.Errorf("%s: %d %s, want %d code %d", tc.name, r.Status, r.Raw, tc.status, tc.code)
		}
	}
	// Without the zone's Workers Routes Write, or without Workers Scripts
	// Write on the account, attaching is refused.
	noRoutes, _ := mint(t, s, []string{pgWorkersWrite})
	noScripts, _ := mintPolicies(t, s, policy([]string{pgRoutesWrite}, zoneRes(zone)))
	for name, tk := range map[string]string{"no routes": noRoutes, "no scripts": noScripts} {
		if r := attach(t, s, tk, "api.live.dev", "site"); r.Status != http.StatusForbidden {
			t.Errorf("%s: %d %s", name, r.Status, r.Raw)
		}
	}
	// The attach token can neither register nor touch the registrar.
	if r := call(t, s, "POST", acctPath("registrar/registrations"), tok, []byte(`{"domain_name":"attach-buys.dev"}`), ""); r.Status != http.StatusForbidden {
		t.Errorf("attach token on registrations: %d %s", r.Status, r.Raw)
	}

	reader, _ := mint(t, s, []string{pgWorkersRead})
	var list []dom
	r = call(t, s, "GET", acctPath("workers/domains?service=site"), reader, nil, "")
	r.result(t, &list)
	if len(list) != 1 || list[0].Hostname != "live.dev" {
		t.Fatalf("list ?service=site: %s", r.Raw)
	}
	r = call(t, s, "GET", acctPath("workers/domains?hostname=www.live.dev"), reader, nil, "")
	r.result(t, &list)
	if len(list) != 1 || list[0].ID != www.ID {
		t.Fatalf("list ?hostname: %s", r.Raw)
	}
	if r := call(t, s, "GET", acctPath("workers/domains/"+apex.ID), reader, nil, ""); r.Status != 200 {
		t.Fatalf("get: %s", r.Raw)
	}
	if r := call(t, s, "GET", acctPath("workers/domains/nope"), reader, nil, ""); r.Status != 404 || r.code() != codeDomainNotFound {
		t.Fatalf("get unknown: %d %s", r.Status, r.Raw)
	}

	// Detach takes the domain's zone too.
	tokB := attachToken(t, s, zoneID("other.dev"))
	if r := call(t, s, "DELETE", acctPath("workers/domains/"+apex.ID), tokB, nil, ""); r.Status != http.StatusForbidden {
		t.Fatalf("detach with zone b's token: %d %s", r.Status, r.Raw)
	}
	if r := call(t, s, "DELETE", acctPath("workers/domains/"+apex.ID), tok, nil, ""); r.Status != 200 {
		t.Fatalf("detach: %d %s", r.Status, r.Raw)
	}
	if r := call(t, s, "DELETE", acctPath("workers/domains/"+apex.ID), tok, nil, ""); r.Status != 404 {
		t.Fatalf("detach twice: %d %s", r.Status, r.Raw)
	}
	// Deleting a Worker detaches its domains.
	del, _ := mint(t, s, []string{pgWorkersWrite})
	call(t, s, "DELETE", acctPath("workers/scripts/site-v2"), del, nil, "")
	if d := s.Domains(); len(d) != 0 {
		t.Fatalf("domains of a deleted Worker: %+v", d)
	}
}

func FuzzParseDomainAttach(f *testing.F) {
	for _, s := range []string{
		`{"hostname":"a.dev","service":"x"}`, `{"hostname":"*.a.dev","service":"x"}`, `{"hostname":"a.dev","service":"x","environment":"staging"}`,
		`{"hostname":"a.dev","service":"x","zone_id":"zz"}`, `{}`, `null`, `{"hostname":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := parseDomainAttach(body)
		if err != nil {
			return
		}
		if !validDomain(req.Hostname) || strings.ContainsAny(req.Hostname, "*/:") || !scriptNameRE.MatchString(req.Service) ||
			req.Environment != "production" || (req.ZoneID != "" && !isHex32(req.ZoneID)) {
			t.Fatalf("accepted %+v", req)
		}
	})
}
