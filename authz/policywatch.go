package authz

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// PolicySource tells a decision cache which policy set the PDP serves.
// [Managed] is one; [WatchPolicies] makes one for an external PDP.
type PolicySource interface {
	// PolicyState is the current state. It is called on every check, so it
	// must be cheap (an atomic load).
	PolicyState() PolicyState
}

// PolicyState is the policy set a PDP serves, as far as tollgate knows it.
type PolicyState struct {
	// Generation changes whenever the PDP may have started serving other
	// rules: a cached decision of another generation is never used.
	Generation uint64
	// Reads is what the served policies read from a request. It is nil
	// while that is not known for sure — a change on disk the PDP has not
	// applied yet, a change it refused, its metrics unreachable — and then
	// nothing is cached.
	Reads *PolicyReads
}

// Defaults for the policy watch.
const (
	// DefaultPolicyWatchInterval is how often the policy folder and the
	// PDP's metrics are looked at. Cerbos applies a change 2 to 4 s after
	// the last write, so a change is seen well before it takes effect.
	DefaultPolicyWatchInterval = 250 * time.Millisecond
	// policySettleAfter is how long a reload must be quiet before its
	// policies are trusted: log lines about a refused change arrive
	// through a pipe and may trail the metrics by a moment.
	policySettleAfter = 500 * time.Millisecond
	// policyIgnoredAfter is how long a change on disk that the PDP never
	// reloaded for (a file it does not load) keeps caching off.
	policyIgnoredAfter = 15 * time.Second
)

// PolicyWatch follows the policy set a Cerbos PDP serves. It watches the
// policy folder the PDP loads (a change there stops caching at once, before
// the PDP applies it) and the PDP's metrics (cerbos_dev_store_* and the
// compile failure count say when it reloaded and whether it refused
// something); when a reload is done, clean and quiet, it reads the policies
// again ([ReadPolicies]) and starts a new generation. It implements
// [PolicySource].
type PolicyWatch struct {
	fsys        fs.FS
	dir         string
	metrics     func(context.Context) (pdpSignal, error)
	startedAt   func() time.Time // when the PDP serving now was started; zero if unknown
	now         func() time.Time
	log         *slog.Logger
	interval    time.Duration
	settleAfter time.Duration
	ignoreAfter time.Duration

	state atomic.Pointer[PolicyState]

	mu        sync.Mutex
	fp        string
	changedAt time.Time // when the folder last changed, as seen here
	sig       pdpSignal
	sigAt     time.Time // when sig was first seen
	metricsOK bool
	failed    bool      // the reload behind sig refused something
	refusedAt time.Time // last refused change reported by the PDP's log

	started  atomic.Bool
	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
}

var _ PolicySource = (*PolicyWatch)(nil)

// pdpSignal is the part of a PDP's metrics that changes when it reloads.
type pdpSignal struct {
	key       string    // every tracked series, as read
	failures  float64   // policy files it could not read + policy sets it could not compile
	refreshed time.Time // start of the last clean reload (cerbos_dev_store_last_successful_refresh)
}

// PolicyWatchConfig configures [WatchPolicies].
type PolicyWatchConfig struct {
	// PolicyDir is the folder the PDP loads its policies from (the same
	// files, e.g. a shared volume or the same checkout).
	PolicyDir string
	// MetricsAddr is the PDP's HTTP listener: "http://host:3592",
	// "https://host:3592" or "unix:/path/http.sock". Its /_cerbos/metrics
	// must be enabled (server.metricsEnabled, the default).
	MetricsAddr string
	// TLSCA verifies an https MetricsAddr against this PEM bundle instead
	// of the system roots.
	TLSCA string
	// Interval is how often the folder and the metrics are read; default
	// DefaultPolicyWatchInterval.
	Interval time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// WatchPolicies follows an external PDP's policy set for the decision
// cache ([WithDecisionCache]). It reads the folder and the metrics once
// before returning, so the cache works from the first check, then every
// Interval until Close.
func WatchPolicies(ctx context.Context, cfg PolicyWatchConfig) (*PolicyWatch, error) {
	fetch, err := metricsFetcher(cfg.MetricsAddr, cfg.TLSCA)
	if err != nil {
		return nil, fmt.Errorf("watch policies: %w", err)
	}
	if st, err := os.Stat(cfg.PolicyDir); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("watch policies: policy dir %q is not a readable folder (%v)", cfg.PolicyDir, err)
	}
	w := newPolicyWatch(cfg.PolicyDir, fetch, nil, cfg.Logger, cfg.Interval)
	w.start(ctx)
	return w, nil
}

func newPolicyWatch(dir string, metrics func(context.Context) (pdpSignal, error), startedAt func() time.Time, log *slog.Logger, interval time.Duration) *PolicyWatch {
	if log == nil {
		log = slog.Default()
	}
	if interval <= 0 {
		interval = DefaultPolicyWatchInterval
	}
	if startedAt == nil {
		startedAt = func() time.Time { return time.Time{} }
	}
	w := &PolicyWatch{
		fsys: os.DirFS(dir), dir: dir, metrics: metrics, startedAt: startedAt,
		now: time.Now, log: log.With("subsystem", "policy-watch"),
		interval: interval, settleAfter: policySettleAfter, ignoreAfter: policyIgnoredAfter,
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	w.state.Store(&PolicyState{Generation: 1})
	return w
}

// start reads the current state once (trusting a clean PDP at once) and
// runs the watch loop.
func (w *PolicyWatch) start(ctx context.Context) {
	w.tick(ctx, true)
	w.started.Store(true)
	go w.loop()
}

// PolicyState implements [PolicySource].
func (w *PolicyWatch) PolicyState() PolicyState { return *w.state.Load() }

// Close stops watching; the state stays as it was, minus the reads, so
// nothing more is cached. A watch that was never started closes too.
func (w *PolicyWatch) Close() {
	w.stopOnce.Do(func() {
		close(w.stop)
		if w.started.Load() {
			<-w.done
		}
		w.mu.Lock()
		w.unsettle()
		w.mu.Unlock()
	})
}

// refused records a policy change the PDP refused (from its log): caching
// stays off until a later reload is clean.
func (w *PolicyWatch) refused(at time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.refusedAt = at
	w.unsettle()
}

func (w *PolicyWatch) loop() {
	defer close(w.done)
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), max(w.interval, time.Second))
			w.tick(ctx, false)
			cancel()
		}
	}
}

// tick looks at the folder and the metrics once and moves the state on.
func (w *PolicyWatch) tick(ctx context.Context, first bool) {
	fp := w.fingerprint()
	sig, merr := w.metrics(ctx)
	now := w.now()

	w.mu.Lock()
	defer w.mu.Unlock()
	if fp != w.fp || fp == "" {
		if !first {
			w.changedAt = now
		}
		w.fp = fp
		w.unsettle()
	}
	if merr != nil {
		if w.metricsOK {
			w.log.Warn("cannot read the policy engine's metrics; decisions are not cached until it answers", "error", merr.Error())
		}
		w.metricsOK = false
		w.unsettle()
		return
	}
	if !w.metricsOK || sig.key != w.sig.key {
		reset := sig.failures < w.sig.failures // counters start again: a new process
		w.failed = sig.failures > w.sig.failures || (reset && sig.failures > 0) || w.refusedAt.After(w.sigAt)
		w.sig, w.sigAt, w.metricsOK = sig, now, true
		if first {
			w.sigAt = now.Add(-w.settleAfter)
		}
		w.unsettle()
	}
	if w.state.Load().Reads != nil || w.failed || w.refusedAt.After(w.sigAt) || now.Sub(w.sigAt) < w.settleAfter || fp == "" {
		return
	}
	applied := w.sig.refreshed
	if t := w.startedAt(); t.After(applied) {
		applied = t
	}
	if w.changedAt.After(applied) && now.Sub(w.changedAt) < w.ignoreAfter {
		return // a change on disk the PDP has not reloaded for yet
	}
	reads, err := ReadPolicies(w.fsys)
	if err != nil {
		w.log.Debug("policies not cacheable", "error", err.Error())
		return
	}
	if w.fingerprint() != fp {
		return // moved while being read: the next tick sees it
	}
	st := w.state.Load()
	w.state.Store(&PolicyState{Generation: st.Generation + 1, Reads: reads})
}

// unsettle stops caching: a new generation with no reads. Callers hold w.mu.
func (w *PolicyWatch) unsettle() {
	if st := w.state.Load(); st.Reads != nil {
		w.state.Store(&PolicyState{Generation: st.Generation + 1})
	}
}

// fingerprint hashes the name, size, mode and modification time of every
// file Cerbos loads from the folder (policies and schemas); "" when the
// folder cannot be read.
func (w *PolicyWatch) fingerprint() string {
	h := sha256.New()
	err := fs.WalkDir(w.fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != "." && skippedDir(d.Name()) {
				return fs.SkipDir
			}
			return nil
		}
		if !policyFile(p) {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%q %d %d %o\n", p, info.Size(), info.ModTime().UnixNano(), info.Mode())
		return nil
	})
	if err != nil {
		return ""
	}
	return hex.EncodeToString(h.Sum(nil))
}

// metricsPath is where Cerbos serves Prometheus metrics.
const metricsPath = "/_cerbos/metrics"

// metricsFetcher returns a function reading the reload signal from a PDP's
// HTTP listener ("http://host:port", "https://host:port" or "unix:/path").
func metricsFetcher(addr, caFile string) (func(context.Context) (pdpSignal, error), error) {
	tr := &http.Transport{MaxIdleConns: 1, IdleConnTimeout: time.Minute}
	url := strings.TrimSuffix(addr, "/") + metricsPath
	switch {
	case strings.HasPrefix(addr, "unix:"):
		sock := strings.TrimPrefix(addr, "unix:")
		if !filepath.IsAbs(sock) {
			return nil, fmt.Errorf("metrics address %q: the socket path must be absolute", addr)
		}
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}
		url = "http://cerbos" + metricsPath
	case strings.HasPrefix(addr, "https://"):
		conf := &tls.Config{MinVersion: tls.VersionTLS12}
		if caFile != "" {
			pool, err := loadCAs(caFile)
			if err != nil {
				return nil, err
			}
			conf.RootCAs = pool
		}
		tr.TLSClientConfig = conf
	case strings.HasPrefix(addr, "http://"):
	default:
		return nil, fmt.Errorf(`metrics address %q: want "http://host:port", "https://host:port" or "unix:/absolute/path"`, addr)
	}
	hc := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	return func(ctx context.Context) (pdpSignal, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return pdpSignal{}, err
		}
		res, err := hc.Do(req)
		if err != nil {
			return pdpSignal{}, err
		}
		defer res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return pdpSignal{}, fmt.Errorf("GET %s: %s", metricsPath, res.Status)
		}
		return parseSignal(io.LimitReader(res.Body, 8<<20))
	}, nil
}

// The series that change when Cerbos's disk store reloads.
var signalSeries = []string{
	"cerbos_dev_store_poll_count_total",
	"cerbos_dev_store_last_successful_refresh",
	"cerbos_dev_store_sync_error_count_total",
	"cerbos_dev_index_crud_count_total",
	"cerbos_dev_index_entry_count",
	"cerbos_dev_compiler_compile_duration_milliseconds_count",
}

// parseSignal reads the reload signal from Prometheus text. A PDP without
// any store series is not one whose reloads can be followed: an error.
func parseSignal(r io.Reader) (pdpSignal, error) {
	var sig pdpSignal
	var lines []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	seenStore := false
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, _, _ := strings.Cut(line, "{")
		name, _, _ = strings.Cut(name, " ")
		if !slices.Contains(signalSeries, name) {
			continue
		}
		lines = append(lines, line)
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return pdpSignal{}, fmt.Errorf("metrics line %q: %w", line, err)
		}
		switch {
		case name == "cerbos_dev_store_poll_count_total":
			seenStore = true
		case name == "cerbos_dev_store_sync_error_count_total":
			sig.failures += v
		case name == "cerbos_dev_compiler_compile_duration_milliseconds_count" && strings.Contains(line, `status="failure"`):
			sig.failures += v
		case name == "cerbos_dev_store_last_successful_refresh":
			seenStore = true
			if v > 0 && v < math.MaxInt64 {
				sig.refreshed = time.UnixMilli(int64(v))
			}
		}
	}
	if err := sc.Err(); err != nil {
		return pdpSignal{}, err
	}
	if !seenStore && len(lines) == 0 {
		return pdpSignal{}, errors.New("the metrics have no cerbos_dev_store series: is this a Cerbos PDP with a disk store?")
	}
	slices.Sort(lines)
	sig.key = strings.Join(lines, "\n")
	return sig, nil
}
