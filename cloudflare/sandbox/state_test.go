package sandbox

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestStateFileRoundTrip(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "sandbox.json")
	s1, _ := newTestSandbox(t, Options{StateFile: path})
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("a fresh sandbox did not write its state: %v", err)
	}
	admin, adminID := mint(t, s1, allGroups)
	if r := call(t, s1, "POST", acctPath("registrar/registrations"), admin, []byte(`{"domain_name":"persist.dev","years":2}`), ""); r.Status != 201 {
		t.Fatalf("register: %s", r.Raw)
	}
	if r := call(t, s1, "POST", acctPath("registrar/registrations"), admin, []byte(`{"domain_name":"slow-persist.dev"}`), ""); r.Status != 202 {
		t.Fatalf("register slow: %s", r.Raw)
	}
	body, ct := goodUpload(t)
	if r := call(t, s1, "PUT", acctPath("workers/scripts/persisted"), admin, body, ct); r.Status != 200 {
		t.Fatalf("upload: %s", r.Raw)
	}
	if err := s1.SetPrice("dev", "99.00", "99.00"); err != nil {
		t.Fatal(err)
	}
	_, goneID := mint(t, s1, []string{pgRegistrarRead})
	call(t, s1, "DELETE", acctPath("tokens/"+goneID), s1.ParentToken(), nil, "")

	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600 (it holds the parent token)", info.Mode().Perm())
	}
	raw, _ := os.ReadFile(path)
	if strings.Contains(string(raw), admin) {
		t.Error("state file holds a minted token value; only its hash belongs there")
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 2 { // the state and its lock file
		t.Errorf("temp files left behind: %v", entries)
	}

	s2, _ := newTestSandbox(t, Options{StateFile: path})
	if s2.ParentToken() != s1.ParentToken() || s2.AccountID() != s1.AccountID() {
		t.Fatal("parent token or account changed across restart")
	}
	if got, want := ids(s2.LiveTokens()), ids(s1.LiveTokens()); got != want || !strings.Contains(got, adminID) || strings.Contains(got, goneID) {
		t.Fatalf("tokens after restart %s, before %s", got, want)
	}
	if len(s2.Registrations()) != 2 || len(s2.Scripts()) != 1 || !reflect.DeepEqual(s2.Scripts()[0], s1.Scripts()[0]) {
		t.Fatalf("state after restart: %+v %+v", s2.Registrations(), s2.Scripts())
	}
	// The old minted token still authenticates, the workflow continues where
	// it was, the price override holds, and the name stays taken.
	r := call(t, s2, "GET", acctPath("registrar/registrations/slow-persist.dev/registration-status"), admin, nil, "")
	if r.Status != 200 || !strings.Contains(string(r.Raw), `"state":"in_progress"`) {
		t.Fatalf("workflow after restart: %d %s", r.Status, r.Raw)
	}
	r = call(t, s2, "POST", acctPath("registrar/domain-check"), admin, []byte(`{"domains":["persist.dev","other.dev"]}`), "")
	if !strings.Contains(string(r.Raw), `"reason":"domain_unavailable"`) || !strings.Contains(string(r.Raw), `"registration_cost":"99.00"`) {
		t.Fatalf("domain-check after restart: %s", r.Raw)
	}
	r = call(t, s2, "GET", acctPath("workers/scripts/persisted"), admin, nil, "")
	if r.Status != 200 || !strings.Contains(string(r.Raw), helloModule) {
		t.Fatalf("script after restart: %d %s", r.Status, r.Raw)
	}
}

func ids(ts []TokenRecord) string {
	var out []string
	for _, t := range ts {
		out = append(out, t.ID)
	}
	return strings.Join(out, ",")
}

func TestStateFileErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tests := []struct{ name, content, want string }{
		{"not json", "{", "not a sandbox snapshot"},
		{"other version", `{"version":99}`, "version 99"},
		{"no parent", `{"version":1,"account_id":"` + accountID + `"}`, "missing the account or its parent token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(dir, tc.name+".json")
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := New(Options{StateFile: path})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if _, err := New(Options{StateFile: filepath.Join(dir, "missing-dir", "x.json")}); err == nil {
		t.Fatal("New wrote state into a directory that does not exist")
	}
}
