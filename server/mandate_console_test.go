package server

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/tollgatehq/tollgate/ledger"
)

// postForm sends a console form from base's origin.
func postForm(t *testing.T, c *http.Client, base, path string, form url.Values) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", base)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (e *testEnv) mandates() []ledger.Mandate {
	e.t.Helper()
	ms, err := e.db.Mandates(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return ms
}

// TestConsoleMandate: "Approve + allow more like this" on the console goes
// through the same core as tollgate mandates create (real Cerbos, real
// ledger): a POST without CSRF or with a mandate the policy refuses changes
// nothing (no vote, no mandate) and says why; the owner sees no form; a good
// one approves the request and creates the mandate together, and the next
// registration like it runs without a human, recorded with the mandate.
func TestConsoleMandate(t *testing.T) {
	t.Parallel()
	e, base := consoleEnv(t, withConfig(func(c *Config) { c.Approvals.Wait = 0 }))
	v := opView(t, e.call(webBot, "register_domain", registerArgs("mandate-one.dev")))
	id := e.pendingApproval(v.OperationID).ID
	bob := httpSignIn(t, base, e.link(t, "bob", "", 0))
	_, page := get(t, bob, base+"/console/approvals/"+id)
	for _, want := range []string{`id="mandate-form"`, `name="resource" value="*.dev"`, `name="max_per_call" value="12.18"`, `name="count" min="1" max="100" value="5"`} {
		if !strings.Contains(page, want) {
			t.Fatalf("the approval page has no %s:\n%s", want, page)
		}
	}
	m := csrfField.FindStringSubmatch(page)
	if m == nil {
		t.Fatal("no CSRF token on the page")
	}
	form := func(perCall, total string) url.Values {
		return url.Values{"csrf": {m[1]}, "count": {"2"}, "resource": {"*.dev"}, "max_per_call": {perCall}, "max_total": {total}, "hours": {"24"}}
	}
	path := "/console/approvals/" + id + "/approve-mandate"

	noCSRF := form("15.00", "30.00")
	noCSRF.Del("csrf")
	if code, _ := postForm(t, bob, base, path, noCSRF); code != http.StatusForbidden {
		t.Fatalf("without CSRF: %d, want 403", code)
	}
	code, page := postForm(t, bob, base, path, form("25.00", "50.00"))
	if code != http.StatusForbidden || !strings.Contains(page, "The standing approval was refused, so nothing was approved") ||
		!strings.Contains(page, "a mandate may cover registrations up to 20 USD") {
		t.Fatalf("a mandate over the policy's cap: %d\n%s", code, page)
	}
	if code, page = postForm(t, bob, base, path, form("15.00", "a lot")); code != http.StatusBadRequest || !strings.Contains(page, "must be an amount like 15.00") {
		t.Fatalf("an unreadable total: %d\n%s", code, page)
	}
	if r := e.pendingApproval(v.OperationID); r.State != "pending" || len(r.Votes) != 0 {
		t.Fatalf("a refused mandate voted: %+v", r)
	}
	if ms := e.mandates(); len(ms) != 0 {
		t.Fatalf("a refused form created %+v", ms)
	}

	// The agent's owner may not approve, so the form is not offered to her.
	alice := httpSignIn(t, base, e.link(t, "alice", "", 0))
	if _, page := get(t, alice, base+"/console/approvals/"+id); strings.Contains(page, `id="mandate-form"`) {
		t.Fatal("the owner is offered a mandate")
	}

	code, _ = postForm(t, bob, base, path, form("15.00", "30.00"))
	if code != http.StatusSeeOther {
		t.Fatalf("approve + mandate: %d", code)
	}
	e.waitState(v.OperationID, ledger.StateSucceeded)
	ms := e.mandates()
	if len(ms) != 1 || ms[0].CreatedBy != "web:bob" || ms[0].Count != 2 || ms[0].Pattern != "*.dev" || ms[0].MaxPerCall.String() != "15.00 USD" {
		t.Fatalf("mandates %+v, want one by web:bob for 2 *.dev calls", ms)
	}
	if r := e.pendingApproval(v.OperationID); len(r.Votes) != 1 || r.Votes[0].Via != "web" {
		t.Fatalf("votes %+v", r.Votes)
	}
	_, page = get(t, bob, base+"/console/approvals/"+id+"?done=mandate&m="+ms[0].ID)
	if !strings.Contains(page, "has a standing approval: "+ms[0].ID) {
		t.Errorf("the page does not confirm the mandate")
	}

	// The next registration like it needs no human.
	v2 := opView(t, e.call(webBot, "register_domain", registerArgs("mandate-two.dev")))
	e.waitState(v2.OperationID, ledger.StateSucceeded)
	if used, err := e.db.MandateOf(context.Background(), v2.OperationID); err != nil || used != ms[0].ID {
		t.Fatalf("second registration used mandate %q (%v), want %s", used, err, ms[0].ID)
	}
	if n := len(e.sb.Registrations()); n != 2 {
		t.Fatalf("%d registrations, want 2", n)
	}
}
