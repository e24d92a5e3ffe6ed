package server

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tollgatehq/tollgate/authz"
)

// ownPDP starts a managed PDP on a private copy of the default policies.
func ownPDP(t *testing.T, restartBackoff time.Duration) (*authz.Managed, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "policies")
	if err := os.CopyFS(dir, os.DirFS(filepath.Join("..", "cerbos-policies"))); err != nil {
		t.Fatal(err)
	}
	m, err := authz.StartManaged(context.Background(), authz.ManagedConfig{
		PolicyDir:      dir,
		Logger:         slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
		RestartBackoff: restartBackoff,
	})
	if err != nil {
		t.Fatalf("managed PDP (go tool task setup): %v", err)
	}
	t.Cleanup(func() { _ = m.Stop() })
	return m, dir
}

// TestPDPDownDeniesThenRecovers: with the PDP killed, tool calls are denied
// with a reason that says the policy engine is unavailable, and nothing
// reaches Cloudflare; after the managed restart, calls pass again.
func TestPDPDownDeniesThenRecovers(t *testing.T) {
	t.Parallel()
	// The restart waits 15s, 15 times a decision's 1s timeout, so the first
	// call after the kill is denied unless the machine stalls for 14s.
	m, _ := ownPDP(t, 15*time.Second)
	e := newEnv(t, withPDP(m.Addr()), withAuthzTimeout(time.Second))
	// The short timeout may deny a healthy check on a busy machine: retry
	// until one passes.
	waitAllowed := func(what string) {
		t.Helper()
		for deadline := time.Now().Add(hangGuard); ; time.Sleep(100 * time.Millisecond) {
			res := e.call(webBot, "check_domain", map[string]any{"domain": "up-again.dev"})
			if !res.IsError {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %s (restarts %d)", what, text(res), m.Restarts())
			}
		}
	}
	waitAllowed("healthy PDP")
	before := len(e.sb.Requests())
	pid := m.PID()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Until the supervisor notices and restarts it, every call is denied.
	res := e.call(webBot, "register_domain", registerArgs("while-down.dev"))
	v := opView(t, res)
	if !res.IsError || v.Status != "denied" || v.ErrorCode != "policy_unavailable" || !strings.Contains(v.Error, "policy engine unavailable") {
		t.Fatalf("want a deny saying the policy engine is unavailable, got %+v", v)
	}
	if len(e.sb.Requests()) != before {
		t.Fatal("a call reached Cloudflare while the PDP was down")
	}
	waitAllowed("PDP did not come back")
	if m.PID() == pid || m.Restarts() < 1 {
		t.Fatal("expected a managed restart")
	}
}

// TestPolicyEditedLiveTakesEffect: adding xyz to the extension allowlist
// while the server runs lets the next call through, without a restart.
func TestPolicyEditedLiveTakesEffect(t *testing.T) {
	t.Parallel()
	m, dir := ownPDP(t, 0)
	e := newEnv(t, withPDP(m.Addr()), withConfig(func(c *Config) { c.Approvals.Wait = 0 }))
	args := map[string]any{"action": "register_domain", "params": map[string]any{"domain": "cheap-launch.xyz"}}
	est := e.call(webBot, "estimate_cost", args)
	if est.IsError || !strings.Contains(text(est), "not on the allowlist") {
		t.Fatalf("before the edit the estimate should report the deny: %s", text(est))
	}
	file := filepath.Join(dir, "export_constants", "tollgate_guardrails.yaml")
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(b), `registrable_tlds: ["dev", "app", "com"]`, `registrable_tlds: ["dev", "app", "com", "xyz"]`, 1)
	if edited == string(b) {
		t.Fatal("allowlist line not found in the guardrails")
	}
	if err := os.WriteFile(file, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(hangGuard)
	for {
		res := e.call(webBot, "register_domain", registerArgs("cheap-launch.xyz"))
		v := opView(t, res)
		if v.Status == "awaiting_approval" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("policy edit not applied: %s", text(res))
		}
		time.Sleep(250 * time.Millisecond)
	}
}
