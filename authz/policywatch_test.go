package authz

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParseSignal(t *testing.T) {
	t.Parallel()
	text := `# HELP cerbos_dev_store_poll_count_total polls
# TYPE cerbos_dev_store_poll_count_total counter
cerbos_dev_compiler_compile_duration_milliseconds_bucket{status="success",le="0.01"} 1
cerbos_dev_compiler_compile_duration_milliseconds_count{status="failure"} 2
cerbos_dev_compiler_compile_duration_milliseconds_count{status="success"} 11
cerbos_dev_index_crud_count_total{kind="update"} 4
cerbos_dev_index_entry_count 7
cerbos_dev_store_last_successful_refresh{driver="disk"} 1.795839700595e+12
cerbos_dev_store_poll_count_total{driver="disk"} 5
cerbos_dev_store_sync_error_count_total{driver="disk"} 1
go_goroutines 29
`
	sig, err := parseSignal(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if sig.failures != 3 {
		t.Errorf("failures = %v, want 3 (1 sync error + 2 compile failures)", sig.failures)
	}
	if want := time.UnixMilli(1795839700595); !sig.refreshed.Equal(want) {
		t.Errorf("refreshed = %v, want %v", sig.refreshed, want)
	}
	if strings.Contains(sig.key, "go_goroutines") || strings.Contains(sig.key, "bucket") {
		t.Errorf("key holds series that change without a reload: %q", sig.key)
	}
	again, _ := parseSignal(strings.NewReader(strings.Replace(text, "go_goroutines 29", "go_goroutines 31", 1)))
	if again.key != sig.key {
		t.Error("a series unrelated to reloads changed the key")
	}
	moved, _ := parseSignal(strings.NewReader(strings.Replace(text, `{driver="disk"} 5`, `{driver="disk"} 6`, 1)))
	if moved.key == sig.key {
		t.Error("a new poll did not change the key")
	}
	for _, bad := range []string{"go_goroutines 3\n", "cerbos_dev_index_entry_count seven\n"} {
		if _, err := parseSignal(strings.NewReader(bad)); err == nil {
			t.Errorf("parseSignal(%q) succeeded", bad)
		}
	}
}

// fakePDP is the metrics side of a PDP, changed by the test.
type fakePDP struct {
	mu  sync.Mutex
	sig pdpSignal
	err error
}

func (f *fakePDP) metrics(context.Context) (pdpSignal, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sig, f.err
}

// reload is a batch the PDP processed at refreshed with failures so far.
func (f *fakePDP) reload(key string, refreshed time.Time, failures float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sig = pdpSignal{key: key, refreshed: refreshed, failures: failures}
	f.err = nil
}

func (f *fakePDP) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

// watchT is a PolicyWatch on a temp copy of the policies with a fake PDP and
// clock, ticked by hand.
type watchT struct {
	t   *testing.T
	w   *PolicyWatch
	pdp *fakePDP
	dir string
	now time.Time
}

func newWatchT(t *testing.T) *watchT {
	dir := copyPolicies(t)
	pdp := &fakePDP{}
	start := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	pdp.reload("boot", time.Time{}, 0)
	wt := &watchT{t: t, pdp: pdp, dir: dir, now: start}
	wt.w = newPolicyWatch(dir, pdp.metrics, func() time.Time { return start.Add(-time.Second) }, slog.New(slog.DiscardHandler), time.Hour)
	wt.w.now = func() time.Time { return wt.now }
	wt.w.tick(context.Background(), true)
	return wt
}

func (wt *watchT) after(d time.Duration) *watchT {
	wt.now = wt.now.Add(d)
	wt.w.tick(context.Background(), false)
	return wt
}

// edit changes a policy file and moves its time stamp past the last one, as a
// real edit would, whatever the file system's time resolution.
func (wt *watchT) edit() {
	p := filepath.Join(wt.dir, "export_constants", "tollgate_guardrails.yaml")
	editFile(wt.t, p, "max_registration_years_agent: 5", "max_registration_years_agent: 4")
	mt := wt.now.Add(time.Millisecond)
	if err := os.Chtimes(p, mt, mt); err != nil {
		wt.t.Fatal(err)
	}
}

func (wt *watchT) settled() bool { return wt.w.PolicyState().Reads != nil }

func TestPolicyWatch(t *testing.T) {
	t.Parallel()
	t.Run("settled at start, off at once on an edit, on again after the reload", func(t *testing.T) {
		t.Parallel()
		wt := newWatchT(t)
		if !wt.settled() {
			t.Fatal("a clean PDP at start is not trusted")
		}
		gen := wt.w.PolicyState().Generation
		wt.edit()
		wt.after(100 * time.Millisecond)
		if wt.settled() || wt.w.PolicyState().Generation == gen {
			t.Fatal("an edit on disk did not stop caching with a new generation")
		}
		// Quiet for long, but the PDP has not reloaded: stay off.
		wt.after(5 * time.Second)
		if wt.settled() {
			t.Fatal("settled before the PDP reloaded the edit")
		}
		// A reload that started before the edit was seen does not count.
		wt.pdp.reload("batch-old", wt.now.Add(-6*time.Second), 0)
		wt.after(time.Second).after(time.Second)
		if wt.settled() {
			t.Fatal("settled on a reload older than the edit")
		}
		wt.pdp.reload("batch-1", wt.now, 0)
		wt.after(100 * time.Millisecond)
		if wt.settled() {
			t.Fatal("settled before the reload was quiet for a moment")
		}
		off := wt.w.PolicyState().Generation
		wt.after(policySettleAfter)
		st := wt.w.PolicyState()
		if st.Reads == nil || st.Generation <= off {
			t.Fatalf("not settled after a clean, quiet reload: %+v", st)
		}
	})
	t.Run("a refused change keeps caching off until a clean reload", func(t *testing.T) {
		t.Parallel()
		wt := newWatchT(t)
		wt.edit()
		wt.after(100 * time.Millisecond)
		wt.pdp.reload("batch-1", wt.now, 1) // one more failure
		wt.after(time.Second).after(time.Minute)
		if wt.settled() {
			t.Fatal("settled after the PDP refused the change")
		}
		wt.pdp.reload("batch-2", wt.now, 1) // the fix: no new failure
		wt.after(time.Second).after(time.Second)
		if !wt.settled() {
			t.Fatal("not settled after the clean reload that fixed it")
		}
	})
	t.Run("a refusal in the PDP's log stops caching at once", func(t *testing.T) {
		t.Parallel()
		wt := newWatchT(t)
		wt.w.refused(wt.now)
		if wt.settled() {
			t.Fatal("still caching after a refused policy change")
		}
		wt.after(time.Minute)
		if wt.settled() {
			t.Fatal("settled with no reload after the refusal")
		}
		wt.pdp.reload("batch-1", wt.now, 0)
		wt.after(time.Second).after(time.Second)
		if wt.settled() {
			t.Fatal("the batch the refusal belonged to counts as clean")
		}
		wt.pdp.reload("batch-2", wt.now, 0)
		wt.after(time.Second).after(time.Second)
		if !wt.settled() {
			t.Fatal("not settled after a later clean reload")
		}
	})
	t.Run("metrics unreachable stops caching", func(t *testing.T) {
		t.Parallel()
		wt := newWatchT(t)
		wt.pdp.fail(errors.New("connection refused"))
		wt.after(time.Second)
		if wt.settled() {
			t.Fatal("caching while the PDP's metrics cannot be read")
		}
		wt.pdp.reload("restarted", time.Time{}, 0)
		wt.after(time.Second).after(time.Second)
		if !wt.settled() {
			t.Fatal("not settled once the metrics answer again")
		}
	})
	t.Run("a change the PDP ignores is given up on", func(t *testing.T) {
		t.Parallel()
		wt := newWatchT(t)
		wt.edit()
		wt.after(time.Second)
		wt.after(policyIgnoredAfter - 2*time.Second)
		if wt.settled() {
			t.Fatal("gave up too early")
		}
		wt.after(2 * time.Second)
		if !wt.settled() {
			t.Fatal("never settles after a change the PDP did not reload for")
		}
	})
	t.Run("a broken file on disk is never trusted", func(t *testing.T) {
		t.Parallel()
		wt := newWatchT(t)
		writeFile(t, filepath.Join(wt.dir, "resource_policies", "broken.yaml"), "resourcePolicy: [")
		wt.after(time.Second)
		wt.pdp.reload("batch-1", wt.now, 0)
		wt.after(time.Second).after(time.Minute)
		if wt.settled() {
			t.Fatal("settled with a policy file that does not parse")
		}
	})
}

func TestWatchPoliciesRejectsBadConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tt := range []struct{ dir, addr, want string }{
		{dir, "tcp://x:1", `want "http://host:port"`},
		{dir, "unix:relative.sock", "must be absolute"},
		{filepath.Join(dir, "missing"), "http://127.0.0.1:1", "not a readable folder"},
	} {
		_, err := WatchPolicies(context.Background(), PolicyWatchConfig{PolicyDir: tt.dir, MetricsAddr: tt.addr})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("WatchPolicies(%q, %q) = %v, want an error containing %q", tt.dir, tt.addr, err, tt.want)
		}
	}
}
