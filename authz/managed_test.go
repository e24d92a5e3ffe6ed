package authz

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestManagedKilledDeniesThenRecovers(t *testing.T) {
	t.Parallel()
	// A slow restart keeps the PDP down long enough to observe the deny:
	// the check after the kill gives up after 300ms, 30 times sooner than
	// the restart, so only a machine stalled for 10s could let it through.
	m := startManaged(t, ManagedConfig{PolicyDir: repoPolicies(t), RestartBackoff: 10 * time.Second})
	c := newClientT(t, m.Addr(), WithTimeout(300*time.Millisecond))
	// A patient client for what must be allowed: it waits for the PDP
	// instead of racing a busy machine.
	patient := newClientT(t, m.Addr())
	r := domain("tollgate-demo", "dev", 1, 12_000_000, "standard")

	if d := patient.Check(context.Background(), webAgent(), r, "register")["register"]; !d.Allowed {
		t.Fatalf("before the kill: %v", d)
	}
	oldPID := m.PID()
	if err := syscall.Kill(oldPID, syscall.SIGKILL); err != nil {
		t.Fatalf("kill cerbos %d: %v", oldPID, err)
	}

	d := c.Check(context.Background(), webAgent(), r, "register")["register"]
	if d.Allowed || !d.Unavailable || len(d.Reasons) != 1 || !strings.HasPrefix(d.Reasons[0], "policy engine unavailable: ") {
		t.Fatalf("while the PDP is dead: %v, want an unavailable deny", d)
	}
	if d.Policy != "" {
		t.Errorf("an unavailable deny names policy %q", d.Policy)
	}

	eventually(t, hangGuard, "recovery after the managed restart", func() (bool, string) {
		d := patient.Check(context.Background(), webAgent(), r, "register")["register"]
		return d.Allowed, d.String()
	})
	if m.Restarts() != 1 {
		t.Errorf("Restarts() = %d, want 1", m.Restarts())
	}
	if pid := m.PID(); pid == 0 || pid == oldPID {
		t.Errorf("PID() = %d after restart, old pid was %d", pid, oldPID)
	}
}

func TestManagedCrashLoopBacksOffAndRecovers(t *testing.T) {
	t.Parallel()
	dir := copyPolicies(t)
	rec := &logRecorder{}
	m := startManaged(t, ManagedConfig{
		PolicyDir: dir, Logger: slog.New(rec),
		RestartBackoff: 100 * time.Millisecond, MaxRestartBackoff: 400 * time.Millisecond,
	})
	c := newClientT(t, m.Addr(), WithTimeout(300*time.Millisecond))
	opFile := filepath.Join(dir, "resource_policies", "operation.yaml")
	good, err := os.ReadFile(opFile)
	if err != nil {
		t.Fatal(err)
	}
	// With a policy that does not compile on disk, a restarted PDP cannot
	// start: the supervisor must keep retrying, with backoff, and deny.
	writeFile(t, opFile, strings.Replace(string(good), `expr: R.attr.agent != P.id && !("auditor" in P.roles)`, "expr: R.attr.agent !=== P.id", 1))
	if err := syscall.Kill(m.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, hangGuard, "several failed restarts", func() (bool, string) {
		return m.Restarts() >= 3, fmt.Sprintf("restarts=%d", m.Restarts())
	})
	if _, ok := rec.find(slog.LevelError, "cerbos did not come back; retrying", func(a map[string]string) bool {
		return strings.Contains(a["error"], "resource_policies/operation.yaml")
	}); !ok {
		t.Error("failed restarts were not logged with the broken file")
	}
	if d := c.Check(context.Background(), webAgent(), operation("op_1", "web-bot"), "read")["read"]; d.Allowed || !d.Unavailable {
		t.Fatalf("while crash-looping: %v, want an unavailable deny", d)
	}

	writeFile(t, opFile, string(good))
	patient := newClientT(t, m.Addr()) // waits for the PDP instead of racing it
	eventually(t, hangGuard, "recovery once the policy is fixed", func() (bool, string) {
		d := patient.Check(context.Background(), webAgent(), operation("op_1", "web-bot"), "read")["read"]
		return d.Allowed, d.String()
	})
}

func TestManagedPolicyEditedLive(t *testing.T) {
	t.Parallel()
	dir := copyPolicies(t)
	m := startManaged(t, ManagedConfig{PolicyDir: dir})
	c := newClientT(t, m.Addr())
	pid := m.PID()
	demo := domain("tollgate-demo", "dev", 1, 12_000_000, "standard")
	only := domain("only-this", "dev", 1, 12_000_000, "standard")

	if d := c.Check(context.Background(), webAgent(), demo, "register")["register"]; !d.Allowed {
		t.Fatalf("before the edit: %v", d)
	}
	// Turn on the exact-domain allowlist, as a platform team would.
	editFile(t, filepath.Join(dir, "export_constants", "tollgate_guardrails.yaml"),
		"    allowed_domains: []", `    allowed_domains: ["only-this.dev"]`)

	want := "tollgate-demo.dev is not on the domain allowlist: only-this.dev"
	eventually(t, hangGuard, "the edited policy to take effect", func() (bool, string) {
		d := c.Check(context.Background(), webAgent(), demo, "register")["register"]
		return !d.Allowed && len(d.Reasons) > 0 && d.Reasons[0] == want, d.String()
	})
	if d := c.Check(context.Background(), webAgent(), only, "register")["register"]; !d.Allowed {
		t.Errorf("the allowlisted domain is denied: %v", d)
	}
	if m.Restarts() != 0 || m.PID() != pid {
		t.Errorf("the edit restarted the PDP: restarts=%d pid %d -> %d", m.Restarts(), pid, m.PID())
	}
}

func TestManagedBrokenPolicyKeepsLastGoodSet(t *testing.T) {
	t.Parallel()
	dir := copyPolicies(t)
	rec := &logRecorder{}
	seenCh := make(chan PolicyError, 16)
	m := startManaged(t, ManagedConfig{
		PolicyDir:     dir,
		Logger:        slog.New(rec),
		OnPolicyError: func(pe PolicyError) { seenCh <- pe },
	})
	c := newClientT(t, m.Addr())
	other := operation("op_9", "ops-bot")
	oldReason := "operation op_9 belongs to agent ops-bot; agents can read only their own operations"
	readOther := func() Decision { return c.Check(context.Background(), webAgent(), other, "read")["read"] }
	if d := readOther(); d.Allowed || d.Reasons[0] != oldReason {
		t.Fatalf("before the edit: %v", d)
	}

	// A broken edit that, were any of it applied, would let every agent read
	// every operation: the deny rule is gone and the owner rule allows all.
	opFile := filepath.Join(dir, "resource_policies", "operation.yaml")
	good, err := os.ReadFile(opFile)
	if err != nil {
		t.Fatal(err)
	}
	broken := strings.Replace(string(good), "expr: R.attr.agent != P.id && !(\"auditor\" in P.roles)", "expr: R.attr.agent !=== P.id", 1)
	broken = strings.Replace(broken, "derivedRoles: [\"operation_owner\"]", "roles: [\"*\"]", 1)
	if broken == string(good) {
		t.Fatal("the edit did not change operation.yaml")
	}
	writeFile(t, opFile, broken)

	eventually(t, hangGuard, "the refused policy to be logged at ERROR", func() (bool, string) {
		_, ok := rec.find(slog.LevelError, "still serving the last good policy set", func(a map[string]string) bool {
			return a["file"] == "resource_policies/operation.yaml" && strings.Contains(a["error"], "Invalid expression")
		})
		return ok, fmt.Sprintf("%d records", rec.count())
	})
	select {
	case pe := <-seenCh:
		if pe.File != "resource_policies/operation.yaml" {
			t.Errorf("OnPolicyError saw %+v", pe)
		}
	case <-time.After(hangGuard):
		t.Error("OnPolicyError was not called")
	}
	if pe, ok := m.LastPolicyError(); !ok || pe.File != "resource_policies/operation.yaml" || pe.At.IsZero() {
		t.Errorf("LastPolicyError() = %+v, %v", pe, ok)
	}
	if d := readOther(); d.Allowed || d.Reasons[0] != oldReason {
		t.Fatalf("after the broken edit: %v, want the last good policy (deny with %q)", d, oldReason)
	}

	// A malformed file next to it is refused and logged too.
	writeFile(t, filepath.Join(dir, "resource_policies", "scratch.yaml"), "resourcePolicy: [not, a, policy\n")
	eventually(t, hangGuard, "the unparsable file to be logged", func() (bool, string) {
		_, ok := rec.find(slog.LevelError, "still serving the last good policy set", func(a map[string]string) bool {
			return a["file"] == "resource_policies/scratch.yaml"
		})
		return ok, ""
	})

	// Fixing the file takes effect: the watcher survived the errors.
	writeFile(t, opFile, strings.Replace(string(good), "agents can read only their own operations", "agents read only their own operations", 1))
	eventually(t, hangGuard, "the fixed policy to take effect", func() (bool, string) {
		d := readOther()
		return !d.Allowed && len(d.Reasons) > 0 && strings.HasSuffix(d.Reasons[0], "agents read only their own operations"), d.String()
	})
	if m.Restarts() != 0 {
		t.Errorf("Restarts() = %d, want 0", m.Restarts())
	}
}

func TestManagedStopKillsAndCleansUp(t *testing.T) {
	t.Parallel()
	m := startManaged(t, ManagedConfig{PolicyDir: repoPolicies(t)})
	c := newClientT(t, m.Addr(), WithTimeout(300*time.Millisecond))
	pid := m.PID()
	dir := filepath.Dir(strings.TrimPrefix(m.Addr(), "unix:"))

	st, err := os.Stat(dir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("private dir %s: mode %v, err %v; want 0700", dir, st.Mode().Perm(), err)
	}
	for _, name := range []string{grpcSockName, httpSockName} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil || st.Mode().Type() != os.ModeSocket || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v, want a 0600 socket", name, st, err)
		}
	}
	// The PDP gets no secrets: its environment is exactly what childEnv allows.
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatalf("read the PDP's environment: %v", err)
	}
	for _, kv := range strings.Split(strings.TrimRight(string(env), "\x00"), "\x00") {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "TMPDIR", "CERBOS_NO_TELEMETRY", "PATH", "TZ":
		default:
			t.Errorf("the PDP inherited %s", k)
		}
	}

	if err := m.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if alive(pid) {
		t.Errorf("cerbos %d still alive after Stop", pid)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("private dir %s left behind: %v", dir, err)
	}
	if err := m.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if m.PID() != 0 {
		t.Errorf("PID() = %d after Stop", m.PID())
	}
	if d := c.Check(context.Background(), webAgent(), operation("op_1", "web-bot"), "read")["read"]; d.Allowed || !d.Unavailable {
		t.Errorf("check after Stop: %v, want an unavailable deny", d)
	}
}

func TestStartManagedBrokenPoliciesFails(t *testing.T) {
	t.Parallel()
	dir := copyPolicies(t)
	editFile(t, filepath.Join(dir, "resource_policies", "operation.yaml"),
		`expr: R.attr.agent != P.id && !("auditor" in P.roles)`, "expr: R.attr.agent !=== P.id")
	tmp := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := StartManaged(ctx, ManagedConfig{
		Binary: cerbosBin(t), PolicyDir: dir, TempDir: tmp,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err == nil {
		_ = m.Stop()
		t.Fatal("StartManaged succeeded on a policy that does not compile")
	}
	for _, s := range []string{"cerbos exited before it was ready", "resource_policies/operation.yaml", "Invalid expression"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
	left, _ := os.ReadDir(tmp)
	if len(left) != 0 {
		t.Errorf("a failed start left %v in %s", left, tmp)
	}
}

func TestStartManagedMissingBinary(t *testing.T) {
	t.Parallel()
	_, err := StartManaged(context.Background(), ManagedConfig{
		Binary: filepath.Join(t.TempDir(), "cerbos"), PolicyDir: repoPolicies(t),
	})
	if err == nil || !strings.Contains(err.Error(), "go tool task setup") || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("err = %v, want it to say the binary is missing and how to install it", err)
	}
}

func TestManagedConfigValidate(t *testing.T) {
	t.Parallel()
	notDir := filepath.Join(t.TempDir(), "file")
	writeFile(t, notDir, "x")
	tests := []struct {
		name     string
		cfg      ManagedConfig
		contains []string
	}{
		{"defaults resolve", ManagedConfig{PolicyDir: repoPolicies(t)}, nil},
		{"everything wrong at once", ManagedConfig{
			Binary:            notDir,
			PolicyDir:         filepath.Join(t.TempDir(), "missing"),
			ReadyTimeout:      -1,
			RestartBackoff:    time.Minute,
			MaxRestartBackoff: time.Second,
			StopTimeout:       -time.Second,
			LogLevel:          "loud",
			TempDir:           notDir,
		}, []string{
			"is not executable", "policy dir", "TOLLGATE_POLICIES", "ready timeout -1ns must not be negative",
			"stop timeout -1s must not be negative", "restart backoff 1m0s exceeds max restart backoff 1s",
			`log level "loud"`, "is not a directory",
		}},
		{"policy dir is a file", ManagedConfig{PolicyDir: notDir}, []string{"is not a directory"}},
		{"temp dir too long", ManagedConfig{PolicyDir: repoPolicies(t), TempDir: longDir(t)}, []string{"too long"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.cfg.Validate()
			if len(tt.contains) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate accepted a bad config")
			}
			for _, s := range tt.contains {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
}

// TestManagedNoOrphanOnSIGKILL runs a helper process (this test binary in
// helper mode, see TestMain) that starts a managed PDP, SIGKILLs the helper,
// and checks the kernel took the PDP down with it.
func TestManagedNoOrphanOnSIGKILL(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		helperEnv+"=1",
		EnvCerbosBin+"="+cerbosBin(t),
		"TOLLGATE_AUTHZ_HELPER_POLICIES="+repoPolicies(t),
		"TOLLGATE_AUTHZ_HELPER_TMP="+t.TempDir(),
	)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	lines := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		lines <- line
	}()
	var line string
	select {
	case line = <-lines:
	case <-time.After(hangGuard):
		t.Fatal("the helper did not report a started PDP")
	}
	var pid int
	var dir string
	if _, err := fmt.Sscanf(strings.TrimSpace(line), "cerbos pid=%d dir=%s", &pid, &dir); err != nil || pid <= 0 {
		t.Fatalf("helper said %q: %v", line, err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if !alive(pid) {
		t.Fatalf("cerbos %d is not running before the helper is killed", pid)
	}
	if ppid := parentPID(pid); ppid != cmd.Process.Pid {
		t.Fatalf("cerbos %d has parent %d, want the helper %d", pid, ppid, cmd.Process.Pid)
	}

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	eventually(t, hangGuard, fmt.Sprintf("cerbos %d to die with its parent", pid), func() (bool, string) {
		return !alive(pid), procState(pid)
	})

	// The next start sweeps the dead helper's private dir.
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("expected the killed helper to leave %s behind: %v", dir, err)
	}
	sweepStaleDirs(filepath.Dir(dir), slog.New(slog.DiscardHandler))
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("sweepStaleDirs left %s: %v", dir, err)
	}
}

// alive reports whether pid is a live process; a zombie (dead, not yet
// reaped by whatever adopted it) counts as dead.
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	return procState(pid) != "Z"
}

// procState returns the state letter from /proc/<pid>/stat ("" if gone).
func procState(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return ""
	}
	return s[i+2 : i+3]
}

func parentPID(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 2 {
		return 0
	}
	n, _ := strconv.Atoi(fields[1])
	return n
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func editFile(t testing.TB, path, old, new string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.Fatalf("%s does not contain %q", path, old)
	}
	writeFile(t, path, strings.Replace(string(b), old, new, 1))
}

func longDir(t testing.TB) string {
	t.Helper()
	d := filepath.Join(t.TempDir(), strings.Repeat("d", 90))
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}
