package authz

import (
	"bufio"
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// helperEnv switches the test binary into the orphan-test helper: it starts
// a managed PDP, prints its pid and waits to be SIGKILLed.
const helperEnv = "TOLLGATE_AUTHZ_ORPHAN_HELPER"

var shared struct {
	once sync.Once
	m    *Managed
	c    *Client
	err  error
}

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		os.Exit(runOrphanHelper())
	}
	code := m.Run()
	if shared.c != nil {
		_ = shared.c.Close()
	}
	if shared.m != nil {
		if err := shared.m.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop shared PDP:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// runOrphanHelper is the body of the helper process in TestManagedNoOrphanOnSIGKILL.
func runOrphanHelper() int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	m, err := StartManaged(context.Background(), ManagedConfig{
		PolicyDir: os.Getenv("TOLLGATE_AUTHZ_HELPER_POLICIES"),
		// A temp dir of its own: other test processes sweep stale dirs in
		// the shared one and would remove this one before the test looks.
		TempDir: os.Getenv("TOLLGATE_AUTHZ_HELPER_TMP"),
		Logger:  log,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 3
	}
	w := bufio.NewWriter(os.Stdout)
	fmt.Fprintf(w, "cerbos pid=%d dir=%s\n", m.PID(), filepath.Dir(strings.TrimPrefix(m.Addr(), "unix:")))
	_ = w.Flush()
	select {} // wait for SIGKILL
}

// moduleRootT returns the tollgate checkout the tests run in.
func moduleRootT(t testing.TB) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	root, ok := moduleRoot(wd)
	if !ok {
		t.Fatalf("no go.mod above %s", wd)
	}
	return root
}

// cerbosBin finds the real binary; a missing one fails the test, because
// every integration test here is about the real PDP.
func cerbosBin(t testing.TB) string {
	t.Helper()
	bin, err := FindBinary()
	if err != nil {
		t.Fatalf("the real cerbos binary is required: %v", err)
	}
	return bin
}

func repoPolicies(t testing.TB) string {
	t.Helper()
	return filepath.Join(moduleRootT(t), "cerbos-policies")
}

// copyPolicies copies cerbos-policies/ into a temp dir the test may edit.
func copyPolicies(t testing.TB) string {
	t.Helper()
	src := repoPolicies(t)
	dst := filepath.Join(t.TempDir(), "policies")
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
	if err != nil {
		t.Fatalf("copy policies: %v", err)
	}
	return dst
}

// sharedClient returns a client of one managed PDP over the repository's
// policies, shared by the read-only tests and benchmarks of this package.
func sharedClient(t testing.TB) *Client {
	t.Helper()
	bin := cerbosBin(t)
	policies := repoPolicies(t)
	shared.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
		defer cancel()
		shared.m, shared.err = StartManaged(ctx, ManagedConfig{
			Binary:    bin,
			PolicyDir: policies,
			Logger:    slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		})
		if shared.err != nil {
			return
		}
		// The tests sharing it assert decisions, never latency: a busy
		// machine must not turn a slow answer into "unavailable".
		shared.c, shared.err = NewClient(ctx, shared.m.Addr(), WithTimeout(hangGuard))
	})
	if shared.err != nil {
		t.Fatalf("shared PDP: %v", shared.err)
	}
	return shared.c
}

// startManaged starts a PDP owned by one test and stops it at cleanup.
func startManaged(t testing.TB, cfg ManagedConfig) *Managed {
	t.Helper()
	if cfg.Binary == "" {
		cfg.Binary = cerbosBin(t)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	m, err := StartManaged(ctx, cfg)
	if err != nil {
		t.Fatalf("StartManaged: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return m
}

func newClientT(t testing.TB, addr string, opts ...Option) *Client {
	t.Helper()
	// By default a check may take as long as the hang guard: tests assert
	// decisions, and a busy machine must not turn one into "unavailable".
	// Tests of the timeout pass their own WithTimeout, which wins.
	c, err := NewClient(context.Background(), addr, append([]Option{WithTimeout(hangGuard)}, opts...)...)
	if err != nil {
		t.Fatalf("NewClient(%q): %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// hangGuard bounds every wait for something that must happen: it only stops
// a hung test, so it is generous for a busy machine and is never the thing
// a test measures.
const hangGuard = 2 * time.Minute

// eventually polls cond every 50ms until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s; last state: %s", what, timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Fixtures shaped like the planners in tools/ send them.

func webAgent() Principal {
	return Principal{ID: "web-bot", Roles: []string{"agent"}, Attr: map[string]any{
		"team": "web", "environment": "dev", "trust_tier": "standard", "owner": "alice",
		"client_name": "claude-code", "client_version": "2.1.0", "session_id": "s-1", "transport": "stdio",
	}}
}

func domain(name, tld string, years int, priceMicros int64, tier string) Resource {
	return Resource{Kind: "domain", ID: name + "." + tld, Attr: map[string]any{
		"tld": tld, "sld": name, "years": years, "auto_renew": true,
		"price_micros": priceMicros, "currency": "USD", "tier": tier,
	}}
}

func workerScript(name, env string, size int) Resource {
	return Resource{Kind: "worker_script", ID: name, Attr: map[string]any{
		"environment": env, "size_bytes": size,
		"module_sha256": strings.Repeat("ab", 32),
	}}
}

func operation(id, agent string) Resource {
	return Resource{Kind: "operation", ID: id, Attr: map[string]any{
		"agent": agent, "team": "web", "tool": "register_domain", "state": "succeeded",
	}}
}

// logRecorder is a slog.Handler that keeps records for assertions.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec.Clone())
	return nil
}
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *logRecorder) WithGroup(string) slog.Handler      { return r }

func (r *logRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.records)
}

// find returns the attrs of the first record at level with msg containing sub
// for which match holds.
func (r *logRecorder) find(level slog.Level, sub string, match func(map[string]string) bool) (map[string]string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rec := range r.records {
		if rec.Level != level || !strings.Contains(rec.Message, sub) {
			continue
		}
		attrs := map[string]string{}
		rec.Attrs(func(a slog.Attr) bool {
			attrs[a.Key] = a.Value.String()
			return true
		})
		if match == nil || match(attrs) {
			return attrs, true
		}
	}
	return nil, false
}
