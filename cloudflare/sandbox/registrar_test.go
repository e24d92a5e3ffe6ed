package sandbox

import (
	"net/http"
	"strings"
	"testing"
)

func TestDomainCheckTable(t *testing.T) {
	t.Parallel()
	s, _ := newTestSandbox(t, Options{})
	tok, _ := mint(t, s, []string{pgRegistrarRead})
	tests := []struct {
		name, want                 string
		registrable                bool
		reason, tier, reg, renewal string
		omitted                    bool
	}{
		{name: "tollgate-free.com", registrable: true, tier: "standard", reg: "10.44", renewal: "10.44"},
		{name: "Tollgate-Upper.NET.", want: "tollgate-upper.net", registrable: true, tier: "standard", reg: "11.84", renewal: "11.84"},
		{name: "tollgate.org", registrable: true, tier: "standard", reg: "10.11", renewal: "10.11"},
		{name: "tollgate-x.dev", registrable: true, tier: "standard", reg: "12.18", renewal: "12.18"},
		{name: "tollgate-x.app", registrable: true, tier: "standard", reg: "14.18", renewal: "14.18"},
		{name: "tollgate-x.io", registrable: true, tier: "standard", reg: "50.00", renewal: "50.00"},
		{name: "tollgate-x.xyz", registrable: true, tier: "standard", reg: "2.00", renewal: "13.18"},
		{name: "tollgate-x.co.uk", registrable: true, tier: "standard", reg: "4.52", renewal: "4.52"},
		{name: "xn--bcher-kva.dev", registrable: true, tier: "standard", reg: "12.18", renewal: "12.18"},
		{name: "google.com", reason: reasonTaken},
		{name: "example.com", reason: reasonTaken},
		{name: "taken.dev", reason: reasonTaken},
		{name: "premium.com", reason: reasonPremium, tier: "premium"},
		{name: "crypto.xyz", reason: reasonPremium, tier: "premium"},
		{name: "tollgate.ai", reason: reasonNotViaAPI},
		{name: "tollgate.sh", reason: reasonNotViaAPI},
		{name: "tollgate.tk", reason: reasonDisallows},
		{name: "tollgate.museum", reason: reasonNotSupport},
		{name: "tollgate.com.au", reason: reasonNotSupport},
		{name: "a..com", omitted: true},
		{name: "co.uk", omitted: true},
		{name: "www.tollgate.com", omitted: true},
		{name: "-bad.com", omitted: true},
		{name: strings.Repeat("a", 64) + ".com", omitted: true},
		{name: "com", omitted: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := call(t, s, "POST", acctPath("registrar/domain-check"), tok, jsonBody(t, map[string]any{"domains": []string{tc.name}}), "")
			if r.Status != http.StatusOK {
				t.Fatalf("status %d: %s", r.Status, r.Raw)
			}
			var res struct{ Domains []map[string]any }
			r.result(t, &res)
			if tc.omitted {
				if len(res.Domains) != 0 {
					t.Fatalf("malformed name answered: %v", res.Domains)
				}
				return
			}
			if len(res.Domains) != 1 {
				t.Fatalf("got %d answers", len(res.Domains))
			}
			d := res.Domains[0]
			want := tc.want
			if want == "" {
				want = tc.name
			}
			if d["name"] != want || d["registrable"] != tc.registrable {
				t.Fatalf("got %v", d)
			}
			if got, _ := d["reason"].(string); got != tc.reason {
				t.Errorf("reason %q, want %q", got, tc.reason)
			}
			if got, _ := d["tier"].(string); got != tc.tier {
				t.Errorf("tier %q, want %q", got, tc.tier)
			}
			p, hasPricing := d["pricing"].(map[string]any)
			if hasPricing != tc.registrable {
				t.Fatalf("pricing present = %v, registrable = %v", hasPricing, tc.registrable)
			}
			if tc.registrable && (p["registration_cost"] != tc.reg || p["renewal_cost"] != tc.renewal || p["currency"] != "USD") {
				t.Errorf("pricing %v", p)
			}
		})
	}
}

func TestDomainCheckBodyErrors(t *testing.T) {
	t.Parallel()
	s, _ := newTestSandbox(t, Options{})
	tok, _ := mint(t, s, []string{pgRegistrarRead})
	many := make([]string, 21)
	for i := range many {
		many[i] = "n.com"
	}
	tests := []struct {
		name string
		body string
		code int
	}{
		{"not json", `{"domains":`, codeMalformedJSON},
		{"wrong type", `{"domains":"a.com"}`, codeMalformedJSON},
		{"missing", `{}`, codeRegistrarInvalid},
		{"empty", `{"domains":[]}`, codeRegistrarInvalid},
		{"too many", string(jsonBody(t, map[string]any{"domains": many})), codeRegistrarInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := call(t, s, "POST", acctPath("registrar/domain-check"), tok, []byte(tc.body), "")
			if r.Status != 400 || r.code() != tc.code {
				t.Fatalf("got %d code %d: %s", r.Status, r.code(), r.Raw)
			}
		})
	}
}

func TestRegistrationLifecycle(t *testing.T) {
	t.Parallel()
	s, _ := newTestSandbox(t, Options{})
	admin, _ := mint(t, s, []string{pgRegistrarAdmin})
	reg := func(body string) reply {
		return call(t, s, "POST", acctPath("registrar/registrations"), admin, []byte(body), "")
	}
	r := reg(`{"domain_name":"tollgate-life.xyz","years":3,"auto_renew":true}`)
	if r.Status != http.StatusCreated {
		t.Fatalf("register: %d %s", r.Status, r.Raw)
	}
	var wf struct {
		Completed bool
		State     string
		Links     struct{ Self, Resource string }
		Context   map[string]any
	}
	r.result(t, &wf)
	if !wf.Completed || wf.State != "succeeded" || !strings.HasSuffix(wf.Links.Self, "/registrar/registrations/tollgate-life.xyz/registration-status") {
		t.Fatalf("workflow %+v", wf)
	}
	charge := wf.Context["charge"].(map[string]any)
	if charge["amount"] != "28.36" || charge["currency"] != "USD" { // 2.00 + 2 x 13.18
		t.Fatalf("charge %v", charge)
	}
	regCtx := wf.Context["registration"].(map[string]any)
	if regCtx["status"] != "active" || regCtx["auto_renew"] != true {
		t.Fatalf("context.registration %v", regCtx)
	}

	// The name is now taken, for domain-check and for a second registration.
	r = call(t, s, "POST", acctPath("registrar/domain-check"), admin, []byte(`{"domains":["tollgate-life.xyz"]}`), "")
	if !strings.Contains(string(r.Raw), `"reason":"domain_unavailable"`) {
		t.Fatalf("after registering, domain-check says %s", r.Raw)
	}
	r = reg(`{"domain_name":"tollgate-life.xyz"}`)
	if r.Status != http.StatusConflict || r.code() != codeDomainTaken || !strings.HasPrefix(r.Env.Errors[0].Message, "domain_unavailable") {
		t.Fatalf("second register: %d %s", r.Status, r.Raw)
	}

	r = call(t, s, "GET", acctPath("registrar/registrations/tollgate-life.xyz"), admin, nil, "")
	var got map[string]any
	r.result(t, &got)
	if r.Status != 200 || got["domain_name"] != "tollgate-life.xyz" || got["expires_at"] == nil || got["privacy_mode"] != "redaction" {
		t.Fatalf("get: %d %s", r.Status, r.Raw)
	}
	r = call(t, s, "GET", acctPath("registrar/registrations/nothere.com"), admin, nil, "")
	if r.Status != 404 || r.code() != codeRegistrationGone {
		t.Fatalf("get missing: %d %s", r.Status, r.Raw)
	}

	for _, body := range []string{
		`{"domain_name":"premium.com"}`, `{"domain_name":"tollgate.ai"}`, `{"domain_name":"tollgate.museum"}`,
	} {
		if r := reg(body); r.Status != 400 || r.code() != codeNotRegistrable {
			t.Errorf("%s: %d %s", body, r.Status, r.Raw)
		}
	}
	for _, body := range []string{
		`{}`, `{"domain_name":"a..com"}`, `{"domain_name":"x.com","years":0}`, `{"domain_name":"x.com","years":11}`,
		`{"domain_name":"x.com","years":1.5}`, `{"domain_name":"x.com","privacy_mode":"full"}`,
		`{"domain_name":"x.com","contacts":{"registrant":{"email":"nope"}}}`,
	} {
		if r := reg(body); r.Status != 400 || r.code() != codeRegistrarInvalid {
			t.Errorf("%s: %d %s", body, r.Status, r.Raw)
		}
	}
	if recs := s.Registrations(); len(recs) != 1 || recs[0].Charged != "28.36" || recs[0].Years != 3 {
		t.Fatalf("Registrations() = %+v", recs)
	}
}

func TestRegistrationWorkflows(t *testing.T) {
	t.Parallel()
	s, _ := newTestSandbox(t, Options{})
	admin, _ := mint(t, s, []string{pgRegistrarAdmin})
	tests := []struct {
		domain  string
		prefer  bool
		initial string
		polls   []string
	}{
		{"slow-one.com", false, "in_progress", []string{"in_progress", "succeeded", "succeeded"}},
		{"blocked-one.com", false, "blocked", []string{"blocked", "succeeded"}},
		{"action-one.com", false, "action_required", []string{"action_required", "action_required"}},
		{"fail-one.com", false, "in_progress", []string{"in_progress", "failed"}},
		{"async-one.com", true, "pending", []string{"succeeded"}},
	}
	for _, tc := range tests {
		t.Run(tc.domain, func(t *testing.T) {
			t.Parallel()
			req := jsonBody(t, map[string]any{"domain_name": tc.domain})
			var r reply
			if tc.prefer {
				r = callPrefer(t, s, admin, req)
			} else {
				r = call(t, s, "POST", acctPath("registrar/registrations"), admin, req, "")
			}
			var wf struct {
				State     string
				Completed bool
				Error     *struct{ Code, Message string }
			}
			r.result(t, &wf)
			if r.Status != http.StatusAccepted || wf.State != tc.initial || wf.Completed {
				t.Fatalf("POST: %d %s", r.Status, r.Raw)
			}
			// Pending names are taken while the workflow runs.
			if got := s.Registrations(); !hasDomain(got, tc.domain) {
				t.Fatalf("pending registration missing: %+v", got)
			}
			for i, want := range tc.polls {
				r := call(t, s, "GET", acctPath("registrar/registrations/"+tc.domain+"/registration-status"), admin, nil, "")
				r.result(t, &wf)
				if wf.State != want {
					t.Fatalf("poll %d: state %s, want %s", i+1, wf.State, want)
				}
			}
			switch wf.State {
			case "failed":
				if !wf.Completed || wf.Error == nil || wf.Error.Code == "" {
					t.Fatalf("failed workflow %+v", wf)
				}
				if hasDomain(s.Registrations(), tc.domain) {
					t.Fatal("failed registration still holds the name")
				}
			case "succeeded":
				if !wf.Completed {
					t.Fatal("succeeded but not completed")
				}
			}
		})
	}
}

func hasDomain(recs []RegistrationRecord, d string) bool {
	for _, r := range recs {
		if r.Domain == d {
			return true
		}
	}
	return false
}

func callPrefer(t testing.TB, s *Sandbox, token string, body []byte) reply {
	t.Helper()
	h := &preferHandler{s}
	return callVia(t, h, "POST", acctPath("registrar/registrations"), token, body)
}

type preferHandler struct{ s *Sandbox }

func (p *preferHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r.Header.Set("Prefer", "respond-async")
	p.s.ServeHTTP(w, r)
}

func TestRegistrationList(t *testing.T) {
	t.Parallel()
	s, clk := newTestSandbox(t, Options{})
	admin, _ := mint(t, s, []string{pgRegistrarAdmin})
	for _, d := range []string{"list-c.com", "list-a.com", "list-b.com"} {
		clk.advance(2e9)
		if r := call(t, s, "POST", acctPath("registrar/registrations"), admin, jsonBody(t, map[string]string{"domain_name": d}), ""); r.Status != 201 {
			t.Fatalf("register %s: %s", d, r.Raw)
		}
	}
	var seen []string
	cursor := ""
	for page := 0; page < 5; page++ {
		q := "registrar/registrations?per_page=1"
		if cursor != "" {
			q += "&cursor=" + cursor
		}
		r := call(t, s, "GET", acctPath(q), admin, nil, "")
		var regs []map[string]any
		r.result(t, &regs)
		for _, g := range regs {
			seen = append(seen, g["domain_name"].(string))
		}
		cursor, _ = r.Env.ResultInfo["cursor"].(string)
		if cursor == "" {
			break
		}
	}
	if strings.Join(seen, ",") != "list-c.com,list-a.com,list-b.com" {
		t.Fatalf("pages by creation: %v", seen)
	}
	r := call(t, s, "GET", acctPath("registrar/registrations?sort_by=name&direction=desc"), admin, nil, "")
	var regs []map[string]any
	r.result(t, &regs)
	if len(regs) != 3 || regs[0]["domain_name"] != "list-c.com" || regs[2]["domain_name"] != "list-a.com" {
		t.Fatalf("sorted by name desc: %v", regs)
	}
	for _, q := range []string{"per_page=0", "cursor=@@@", "sort_by=price", "direction=up"} {
		if r := call(t, s, "GET", acctPath("registrar/registrations?"+q), admin, nil, ""); r.Status != 400 {
			t.Errorf("%s: %d", q, r.Status)
		}
	}
}

func TestSetPrice(t *testing.T) {
	t.Parallel()
	s, _ := newTestSandbox(t, Options{})
	tok, _ := mint(t, s, []string{pgRegistrarRead})
	if err := s.SetPrice("com", "12.00", "13.00"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPrice("ai", "80.00", "80.00"); err != nil {
		t.Fatal(err)
	}
	r := call(t, s, "POST", acctPath("registrar/domain-check"), tok, []byte(`{"domains":["price-rose.com","still-not.ai"]}`), "")
	raw := string(r.Raw)
	if !strings.Contains(raw, `"registration_cost":"12.00"`) || !strings.Contains(raw, `"renewal_cost":"13.00"`) {
		t.Fatalf("price not applied: %s", raw)
	}
	if !strings.Contains(raw, reasonNotViaAPI) {
		t.Fatalf("a price does not make .ai registrable via the API: %s", raw)
	}
	for _, bad := range [][3]string{{"com", "12", "13.00"}, {"com", "12.00", "-1.00"}, {"", "1.00", "1.00"}, {"com", "1.005", "1.00"}} {
		if err := s.SetPrice(bad[0], bad[1], bad[2]); err == nil {
			t.Errorf("SetPrice%v accepted", bad)
		}
	}
}
