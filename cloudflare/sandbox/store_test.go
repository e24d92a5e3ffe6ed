package sandbox

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestSharedStateFile: two sandboxes on one state file (as two tollgate
// processes on one database have) agree on the account, see each other's
// changes at once, and never overwrite them, under concurrent writes.
func TestSharedStateFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "shared.json")
	a, _ := newTestSandbox(t, Options{StateFile: path})
	b, _ := newTestSandbox(t, Options{StateFile: path})
	if a.ParentToken() != b.ParentToken() {
		t.Fatal("two sandboxes on one file have different parent tokens")
	}
	adminA, _ := mint(t, a, []string{pgRegistrarAdmin, pgWorkersWrite})
	adminB, _ := mint(t, b, []string{pgRegistrarAdmin, pgWorkersWrite})

	// The lost-registration bug: A registers, B registers, both stay.
	var wg sync.WaitGroup
	const each = 10
	for i := range each {
		for _, side := range []struct {
			s   *Sandbox
			tok string
			n   string
		}{{a, adminA, "a"}, {b, adminB, "b"}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := call(t, side.s, "POST", acctPath("registrar/registrations"), side.tok, fmt.Appendf(nil, `{"domain_name":"%s%d.dev"}`, side.n, i), "")
				if r.Status != http.StatusCreated {
					t.Errorf("register %s%d: %d %s", side.n, i, r.Status, r.Raw)
				}
			}()
		}
	}
	wg.Wait()
	for _, s := range []*Sandbox{a, b} {
		if got := len(s.Registrations()); got != 2*each {
			t.Fatalf("a sandbox sees %d registrations, want %d", got, 2*each)
		}
		if got := len(s.Zones()); got != 2*each {
			t.Fatalf("a sandbox sees %d zones, want %d", got, 2*each)
		}
	}
	// A name registered through one is taken through the other.
	if r := call(t, b, "POST", acctPath("registrar/registrations"), adminB, []byte(`{"domain_name":"a1.dev"}`), ""); r.Status != http.StatusConflict {
		t.Fatalf("registering a1.dev again through b: %d %s", r.Status, r.Raw)
	}
	// A Worker uploaded through a is served by b.
	body, ct := goodUpload(t)
	if r := call(t, a, "PUT", acctPath("workers/scripts/shared"), adminA, body, ct); r.Status != 200 {
		t.Fatal(string(r.Raw))
	}
	if r := call(t, b, "GET", acctPath("workers/scripts/shared"), adminB, nil, ""); r.Status != 200 {
		t.Fatalf("b does not serve a's Worker: %d %s", r.Status, r.Raw)
	}
	// A fresh sandbox on the file sees everything.
	c, _ := newTestSandbox(t, Options{StateFile: path})
	if len(c.Registrations()) != 2*each || len(c.Scripts()) != 1 {
		t.Fatalf("restart lost state: %d registrations, %d scripts", len(c.Registrations()), len(c.Scripts()))
	}
}

// TestTokenWritesBatched: minting and deleting per-operation tokens does not
// write the file each time; they are written together, after every other
// sandbox's durable writes, and are visible to the other sandbox once
// written.
func TestTokenWritesBatched(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "batched.json")
	a, _ := newTestSandbox(t, Options{StateFile: path, FlushInterval: time.Hour})
	b, _ := newTestSandbox(t, Options{StateFile: path, FlushInterval: time.Hour})
	start := a.StateWrites()
	var ids []string
	for range 100 {
		_, id := mint(t, a, []string{pgRegistrarRead})
		ids = append(ids, id)
	}
	for _, id := range ids[:50] {
		if r := call(t, a, "DELETE", acctPath("tokens/"+id), a.ParentToken(), nil, ""); r.Status != 200 {
			t.Fatal(string(r.Raw))
		}
	}
	if got := a.StateWrites() - start; got != 0 {
		t.Fatalf("100 mints and 50 deletes wrote the state %d times before the flush, want 0", got)
	}
	if n := len(b.LiveTokens()); n != 1 {
		t.Fatalf("b sees %d tokens before a's flush, want the parent alone", n)
	}
	// A durable write elsewhere does not erase a's pending tokens.
	register(t, b, "durable.dev")
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := a.StateWrites() - start; got != 1 {
		t.Fatalf("the flush wrote %d times, want 1", got)
	}
	// b's token minted for register is still pending in b; a's 50 live are written.
	if n := len(b.LiveTokens()); n != 1+50+1 {
		t.Fatalf("b sees %d tokens after a's flush, want parent + 50 + its own", n)
	}
	if len(a.Registrations()) != 1 {
		t.Fatal("a's flush erased b's registration")
	}
	// A durable change carries the pending tokens with it.
	before := b.StateWrites()
	register(t, b, "durable2.dev") // mints (pending) then registers (durable)
	if got := b.StateWrites() - before; got != 1 {
		t.Fatalf("a mint and a registration wrote %d times, want 1", got)
	}
	c, _ := newTestSandbox(t, Options{StateFile: path})
	if n := len(c.LiveTokens()); n != 1+50+2 {
		t.Fatalf("a fresh sandbox sees %d tokens, want parent + 50 + 2", n)
	}
}

// TestFlushIntervalWrites: pending token changes reach the file on their
// own, without a flush call.
func TestFlushIntervalWrites(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "timer.json")
	a, _ := newTestSandbox(t, Options{StateFile: path, FlushInterval: time.Millisecond})
	b, _ := newTestSandbox(t, Options{StateFile: path})
	_, id := mint(t, a, []string{pgRegistrarRead})
	deadline := time.Now().Add(30 * time.Second)
	for !b.hasToken(id) {
		if time.Now().After(deadline) {
			t.Fatal("a's minted token never reached the file")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (s *Sandbox) hasToken(id string) bool {
	for _, t := range s.LiveTokens() {
		if t.ID == id {
			return true
		}
	}
	return false
}

// TestTokenRoll: a rolled token's old value stops working at once and the
// new one works; rolling the parent token changes what every sandbox on the
// file reports, and survives a restart.
func TestTokenRoll(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "roll.json")
	a, _ := newTestSandbox(t, Options{StateFile: path})
	b, _ := newTestSandbox(t, Options{StateFile: path})
	val, id := mint(t, a, []string{pgRegistrarRead})
	r := call(t, a, "PUT", acctPath("tokens/"+id+"/value"), a.ParentToken(), []byte(`{}`), "")
	var rolled string
	r.result(t, &rolled)
	if r.Status != 200 || rolled == val || !validTokenFormat(rolled) {
		t.Fatalf("roll: %d %s", r.Status, r.Raw)
	}
	check := func(tok string) int {
		return call(t, b, "POST", acctPath("registrar/domain-check"), tok, []byte(`{"domains":["x.dev"]}`), "").Status
	}
	if check(val) != http.StatusUnauthorized || check(rolled) != 200 {
		t.Fatalf("after the roll: old %d, new %d", check(val), check(rolled))
	}

	oldParent := a.ParentToken()
	r = call(t, a, "PUT", acctPath("tokens/"+a.st.ParentTokenID+"/value"), oldParent, nil, "")
	var newParent string
	r.result(t, &newParent)
	if r.Status != 200 || b.ParentToken() != newParent || a.ParentToken() != newParent {
		t.Fatalf("parent roll: %d %s; b reports %q", r.Status, r.Raw, b.ParentToken())
	}
	if r := call(t, b, "GET", acctPath("tokens/verify"), oldParent, nil, ""); r.Status != http.StatusUnauthorized || r.code() != codeInvalidToken {
		t.Fatalf("old parent value on verify: %d %s", r.Status, r.Raw)
	}
	c, _ := newTestSandbox(t, Options{StateFile: path})
	if c.ParentToken() != newParent {
		t.Fatal("the rolled parent token did not survive a restart")
	}
	raw, _ := os.ReadFile(path)
	if strings.Contains(string(raw), rolled) || strings.Contains(string(raw), oldParent) {
		t.Fatal("the state file holds a minted token's value or the old parent value")
	}
	for _, tc := range []struct {
		id, body string
		status   int
	}{{"nope", `{}`, 404}, {id, `[`, 400}, {id, `"x"`, 400}} {
		if r := call(t, a, "PUT", acctPath("tokens/"+tc.id+"/value"), newParent, []byte(tc.body), ""); r.Status != tc.status {
			t.Errorf("roll %s %s: %d %s", tc.id, tc.body, r.Status, r.Raw)
		}
	}
	reader, _ := mint(t, a, []string{pgTokensRead})
	if r := call(t, a, "PUT", acctPath("tokens/"+id+"/value"), reader, []byte(`{}`), ""); r.Status != http.StatusForbidden {
		t.Errorf("roll with a read token: %d %s", r.Status, r.Raw)
	}
}

// TestUpgradeV1State: a version-1 snapshot (one upload per script) loads as
// version 1 of each script deployed at 100 %.
func TestUpgradeV1State(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	v2, _ := newTestSandbox(t, Options{})
	parent, parentID := v2.st.ParentToken, v2.st.ParentTokenID
	v1 := fmt.Sprintf(`{"version":1,"account_id":%q,"parent_token":%q,"parent_token_id":%q,
		"tokens":{%q:{"id":%q,"name":"parent","status":"active","policies":[{"id":"1","effect":"allow","permission_groups":[{"id":%q,"name":%q}],"resources":{%q:"*"}}]}},
		"scripts":{"old":{"name":"old","tag":"t","etag":"e1","main_module":"worker.js","compatibility_date":"2025-01-01",
		"modules":[{"name":"worker.js","content_type":"application/javascript+module","content":%q}],"created_on":"2025-01-01T00:00:00Z","modified_on":"2025-01-02T00:00:00Z"}}}`,
		accountID, parent, parentID, parentID, parentID, permissionGroupID(pgTokensWrite), pgTokensWrite, accountResource, base64.StdEncoding.EncodeToString([]byte(helloModule)))
	path := filepath.Join(dir, "v1.json")
	if err := os.WriteFile(path, []byte(v1), 0o600); err != nil {
		t.Fatal(err)
	}
	s, _ := newTestSandbox(t, Options{StateFile: path})
	sc := s.Scripts()
	if len(sc) != 1 || sc[0].Etag != "e1" || sc[0].Versions != 1 || len(sc[0].Traffic) != 1 || sc[0].Traffic[0].Percentage != 100 {
		t.Fatalf("upgraded script: %+v", sc)
	}
	tok, _ := mint(t, s, []string{pgWorkersRead})
	if r := call(t, s, "GET", acctPath("workers/scripts/old"), tok, nil, ""); r.Status != 200 || !strings.Contains(string(r.Raw), helloModule) {
		t.Fatalf("content of an upgraded script: %d %s", r.Status, r.Raw)
	}
}

// TestSharedStateProcesses: several processes (this test binary, re-run as
// helpers) register on one state file at the same time; every registration
// survives.
func TestSharedStateProcesses(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "procs.json")
	const procs, each = 3, 8
	var wg sync.WaitGroup
	errs := make([]error, procs)
	outs := make([][]byte, procs)
	for p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperRegisters$", "-test.count=1")
			cmd.Env = append(os.Environ(), "SANDBOX_HELPER_STATE="+path, "SANDBOX_HELPER_PREFIX=p"+strconv.Itoa(p), "SANDBOX_HELPER_COUNT="+strconv.Itoa(each))
			outs[p], errs[p] = cmd.CombinedOutput()
		}()
	}
	wg.Wait()
	for p := range procs {
		if errs[p] != nil {
			t.Fatalf("helper %d: %v\n%s", p, errs[p], outs[p])
		}
	}
	s, _ := newTestSandbox(t, Options{StateFile: path})
	if got := len(s.Registrations()); got != procs*each {
		t.Fatalf("%d registrations on the shared file, want %d", got, procs*each)
	}
	// Every process used the same parent token: the one in the file.
	parents := map[string]bool{}
	for p := range procs {
		for _, line := range strings.Split(string(outs[p]), "\n") {
			if v, ok := strings.CutPrefix(line, "parent-id "); ok {
				parents[v] = true
			}
		}
	}
	if len(parents) != 1 || !parents[s.st.ParentTokenID] {
		t.Fatalf("helpers used parent tokens %v, the file has %s", parents, s.st.ParentTokenID)
	}
}

// TestHelperRegisters is TestSharedStateProcesses' helper process; it does
// nothing in a normal run.
func TestHelperRegisters(t *testing.T) {
	path := os.Getenv("SANDBOX_HELPER_STATE")
	if path == "" {
		t.Skip("helper process for TestSharedStateProcesses")
	}
	n, _ := strconv.Atoi(os.Getenv("SANDBOX_HELPER_COUNT"))
	s, err := New(Options{StateFile: path})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fmt.Println("parent-id " + s.st.ParentTokenID)
	for i := range n {
		register(t, s, fmt.Sprintf("%s-%d.dev", os.Getenv("SANDBOX_HELPER_PREFIX"), i))
	}
}
