package authz

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"
)

// Defaults for [ManagedConfig].
const (
	DefaultPolicyDir         = "cerbos-policies"
	DefaultReadyTimeout      = 20 * time.Second
	DefaultRestartBackoff    = 250 * time.Millisecond
	DefaultMaxRestartBackoff = 10 * time.Second
	DefaultStopTimeout       = 5 * time.Second
	DefaultCerbosLogLevel    = "warn"
)

// cerbosVersion is the PDP release the policies and config are written for.
const cerbosVersion = "0.55."

// stableAfter is how long a child must have served before its death resets
// the restart backoff: a PDP that crashes once a day restarts at once, one
// that crash-loops backs off.
const stableAfter = 30 * time.Second

// Names inside the private directory.
const (
	dirPattern   = "tollgate-cerbos-"
	ownerFile    = "owner.pid"
	configFile   = "cerbos.yaml"
	grpcSockName = "cerbos.sock"
	httpSockName = "http.sock"
)

var errStopping = errors.New("managed cerbos is stopping")

// ManagedConfig configures [StartManaged]. Zero values mean the defaults.
type ManagedConfig struct {
	// Binary is the cerbos executable; "" means [FindBinary].
	Binary string
	// PolicyDir is the policy folder Cerbos serves and watches for changes;
	// default "cerbos-policies" (relative to the working directory).
	PolicyDir string
	// Logger receives supervisor records and Cerbos's own log lines; default
	// slog.Default(). Point it at stderr under stdio: stdout is the protocol's.
	Logger *slog.Logger
	// ReadyTimeout bounds how long one start of Cerbos may take to answer
	// before it is killed and counted as a failed start; default 20s.
	ReadyTimeout time.Duration
	// RestartBackoff is the wait before restarting a PDP that died; it
	// doubles for each consecutive failure up to MaxRestartBackoff and resets
	// once a PDP has served for 30s. Default 250ms.
	RestartBackoff time.Duration
	// MaxRestartBackoff caps the restart wait; default 10s.
	MaxRestartBackoff time.Duration
	// StopTimeout is how long Stop waits after SIGTERM before SIGKILL;
	// default 5s.
	StopTimeout time.Duration
	// LogLevel is Cerbos's own log level: debug, info, warn or error;
	// default warn (at info Cerbos logs every request, which costs latency).
	LogLevel string
	// TempDir is where the private 0700 socket directory is created; default
	// os.TempDir(). Socket paths must stay under 108 bytes.
	TempDir string
	// OnPolicyError, when set, is called for every policy file Cerbos
	// refuses (parse or compile error), e.g. to feed a metric or /healthz.
	// It runs on the log-forwarding goroutine and must not block.
	OnPolicyError func(PolicyError)
	// PolicyWatchInterval is how often the policy folder and the PDP's
	// reload counters are read for the decision cache; default
	// DefaultPolicyWatchInterval.
	PolicyWatchInterval time.Duration
}

func (c ManagedConfig) withDefaults() ManagedConfig {
	if c.PolicyDir == "" {
		c.PolicyDir = DefaultPolicyDir
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = DefaultReadyTimeout
	}
	if c.RestartBackoff == 0 {
		c.RestartBackoff = DefaultRestartBackoff
	}
	if c.MaxRestartBackoff == 0 {
		c.MaxRestartBackoff = max(DefaultMaxRestartBackoff, c.RestartBackoff)
	}
	if c.StopTimeout == 0 {
		c.StopTimeout = DefaultStopTimeout
	}
	if c.LogLevel == "" {
		c.LogLevel = DefaultCerbosLogLevel
	}
	if c.TempDir == "" {
		c.TempDir = os.TempDir()
	}
	return c
}

// Validate reports every problem with c at once. Zero values are valid (they
// mean the defaults), so Validate checks what the defaults resolve to.
func (c ManagedConfig) Validate() error {
	d := c.withDefaults()
	var errs []error
	if c.Binary != "" {
		if err := checkExecutable(c.Binary); err != nil {
			errs = append(errs, fmt.Errorf("binary %s: %w; %s", c.Binary, err, installHint))
		}
	}
	if st, err := os.Stat(d.PolicyDir); err != nil {
		errs = append(errs, fmt.Errorf("policy dir %s: %w (set --policies / TOLLGATE_POLICIES to the folder holding the Cerbos policies)", d.PolicyDir, err))
	} else if !st.IsDir() {
		errs = append(errs, fmt.Errorf("policy dir %s is not a directory", d.PolicyDir))
	}
	for _, dur := range []struct {
		name string
		v    time.Duration
	}{
		{"ready timeout", c.ReadyTimeout},
		{"restart backoff", c.RestartBackoff},
		{"max restart backoff", c.MaxRestartBackoff},
		{"stop timeout", c.StopTimeout},
	} {
		if dur.v < 0 {
			errs = append(errs, fmt.Errorf("%s %s must not be negative", dur.name, dur.v))
		}
	}
	if c.MaxRestartBackoff > 0 && c.RestartBackoff > c.MaxRestartBackoff {
		errs = append(errs, fmt.Errorf("restart backoff %s exceeds max restart backoff %s", c.RestartBackoff, c.MaxRestartBackoff))
	}
	switch d.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log level %q: want debug, info, warn or error", c.LogLevel))
	}
	if st, err := os.Stat(d.TempDir); err != nil {
		errs = append(errs, fmt.Errorf("temp dir %s: %w", d.TempDir, err))
	} else if !st.IsDir() {
		errs = append(errs, fmt.Errorf("temp dir %s is not a directory", d.TempDir))
	} else if n := len(filepath.Join(d.TempDir, dirPattern+"0000000000", grpcSockName)); n > maxUnixSocketPath {
		errs = append(errs, fmt.Errorf("temp dir %s is too long: socket paths would be %d bytes, the limit is %d", d.TempDir, n, maxUnixSocketPath))
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid managed cerbos config: %w", errors.Join(errs...))
	}
	return nil
}

// Managed is a Cerbos PDP process that tollgate started and supervises.
type Managed struct {
	cfg       ManagedConfig
	log       *slog.Logger
	bin       string
	policyDir string
	dir       string
	sock      string
	httpSock  string
	probe     *Client
	policies  *PolicyWatch

	cur       atomic.Pointer[child]
	restarts  atomic.Int64
	policyErr atomic.Pointer[PolicyError]

	stopCh   chan struct{}
	done     chan struct{}
	stopOnce sync.Once
	stopErr  error
}

// child is one run of the cerbos process.
type child struct {
	cmd     *exec.Cmd
	pid     int
	started time.Time
	exited  chan struct{} // closed after Wait returned
	waitErr error         // valid after exited is closed
	ready   atomic.Bool
	readyAt time.Time
	stdout  *logForwarder
	stderr  *logForwarder
}

// StartManaged starts the cerbos binary on cfg.PolicyDir with a generated
// config (disk store with watchForChanges, gRPC and HTTP on unix sockets in
// a private 0700 temp dir, schema enforcement reject, strict evaluation,
// audit and telemetry off), waits until it answers, and supervises it:
// a PDP that dies is restarted with backoff. ctx bounds start-up only; the
// PDP runs until [Managed.Stop]. On Linux the PDP is killed by the kernel if
// tollgate dies, even by SIGKILL.
func StartManaged(ctx context.Context, cfg ManagedConfig) (*Managed, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("start managed cerbos: %w", err)
	}
	if err := managedSupported(); err != nil {
		return nil, fmt.Errorf("start managed cerbos: %w", err)
	}
	cfg = cfg.withDefaults()
	log := cfg.Logger.With("subsystem", "cerbos")

	bin := cfg.Binary
	if bin == "" {
		var err error
		if bin, err = FindBinary(); err != nil {
			return nil, fmt.Errorf("start managed cerbos: %w", err)
		}
	}
	// `cerbos --version` costs a process start (~125 ms): it runs beside
	// the PDP's own start and is waited for only when that start fails, to
	// say whether the binary is the problem.
	version := make(chan error, 1)
	go func() { version <- checkVersion(context.WithoutCancel(ctx), bin, log) }()
	policyDir, err := filepath.Abs(cfg.PolicyDir)
	if err != nil {
		return nil, fmt.Errorf("start managed cerbos: policy dir: %w", err)
	}

	sweepStaleDirs(cfg.TempDir, log)
	dir, err := os.MkdirTemp(cfg.TempDir, dirPattern)
	if err != nil {
		return nil, fmt.Errorf("start managed cerbos: private dir: %w", err)
	}
	m := &Managed{
		cfg:       cfg,
		log:       log,
		bin:       bin,
		policyDir: policyDir,
		dir:       dir,
		sock:      filepath.Join(dir, grpcSockName),
		httpSock:  filepath.Join(dir, httpSockName),
		stopCh:    make(chan struct{}),
		done:      make(chan struct{}),
	}
	if err := m.prepareDir(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("start managed cerbos: %w", err)
	}
	fetch, err := metricsFetcher("unix:"+m.httpSock, "")
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("start managed cerbos: %w", err)
	}
	m.policies = newPolicyWatch(policyDir, fetch, m.startedAt, log, cfg.PolicyWatchInterval)
	m.probe, err = NewClient(ctx, m.Addr(), WithTimeout(250*time.Millisecond),
		WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("start managed cerbos: %w", err)
	}

	first := make(chan error, 1)
	go m.supervise(first)
	select {
	case err = <-first:
	case <-ctx.Done():
		err = fmt.Errorf("waiting for cerbos to answer: %w", ctx.Err())
	}
	if err != nil {
		_ = m.Stop()
		if verr := <-version; verr != nil {
			return nil, fmt.Errorf("start managed cerbos: %w", verr)
		}
		return nil, fmt.Errorf("start managed cerbos: %w", err)
	}
	m.policies.start(ctx)
	log.Info("managed cerbos is ready", "addr", m.Addr(), "pid", m.PID(), "policies", policyDir)
	return m, nil
}

// prepareDir locks the private dir down and writes the config and owner pid.
func (m *Managed) prepareDir() error {
	// MkdirTemp already creates 0700; be explicit because the sockets inside
	// are the PDP's only access control.
	if err := os.Chmod(m.dir, 0o700); err != nil {
		return fmt.Errorf("private dir: %w", err)
	}
	if err := os.WriteFile(filepath.Join(m.dir, ownerFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		return fmt.Errorf("owner file: %w", err)
	}
	conf, err := yaml.Marshal(m.cerbosConfig())
	if err != nil {
		return fmt.Errorf("render cerbos config: %w", err)
	}
	if err := os.WriteFile(filepath.Join(m.dir, configFile), conf, 0o600); err != nil {
		return fmt.Errorf("write cerbos config: %w", err)
	}
	return nil
}

// cerbosConfig is the generated PDP configuration.
func (m *Managed) cerbosConfig() map[string]any {
	return map[string]any{
		"server": map[string]any{
			"grpcListenAddr": "unix:" + m.sock,
			// Cerbos cannot turn HTTP off; a socket in the private dir keeps
			// it unreachable from the network.
			"httpListenAddr": "unix:" + m.httpSock,
			"udsFileMode":    "0o600",
			// The policy watch reads the store's reload counters here.
			"metricsEnabled":     true,
			"apiExplorerEnabled": false,
			"adminAPI":           map[string]any{"enabled": false},
		},
		"storage": map[string]any{
			"driver": "disk",
			"disk": map[string]any{
				"directory":       m.policyDir,
				"watchForChanges": true,
			},
		},
		"schema": map[string]any{"enforcement": "reject"},
		// A rule whose condition fails to evaluate denies instead of being
		// skipped: a broken DENY guardrail must not turn into an allow.
		"engine":    map[string]any{"strictEvaluation": true},
		"audit":     map[string]any{"enabled": false},
		"telemetry": map[string]any{"disabled": true},
	}
}

// Addr returns the PDP address for [NewClient]: "unix:<private dir>/cerbos.sock".
// It stays the same across restarts.
func (m *Managed) Addr() string { return "unix:" + m.sock }

// PID returns the pid of the running cerbos process, or 0 between restarts.
func (m *Managed) PID() int {
	if c := m.cur.Load(); c != nil {
		return c.pid
	}
	return 0
}

// Restarts returns how many times the supervisor started the PDP again after
// it died, failed attempts included.
func (m *Managed) Restarts() int { return int(m.restarts.Load()) }

// PolicyDir returns the absolute policy folder the PDP serves.
func (m *Managed) PolicyDir() string { return m.policyDir }

// LastPolicyError returns the most recent policy change Cerbos refused, if
// any since start. It is not cleared by a later good change.
func (m *Managed) LastPolicyError() (PolicyError, bool) {
	if p := m.policyErr.Load(); p != nil {
		return *p, true
	}
	return PolicyError{}, false
}

// PolicyState implements [PolicySource]: the generation changes the moment a
// change to the policy folder is seen and again when the PDP has reloaded it.
func (m *Managed) PolicyState() PolicyState { return m.policies.PolicyState() }

// startedAt is when the PDP serving now was started (zero between restarts).
func (m *Managed) startedAt() time.Time {
	if c := m.cur.Load(); c != nil {
		return c.started
	}
	return time.Time{}
}

// Stop terminates the PDP (SIGTERM, then SIGKILL after StopTimeout), stops
// supervising and removes the private dir. It is safe to call more than once.
func (m *Managed) Stop() error {
	m.stopOnce.Do(func() {
		m.policies.Close()
		close(m.stopCh)
		<-m.done
		var errs []error
		if err := m.probe.Close(); err != nil {
			errs = append(errs, err)
		}
		if err := os.RemoveAll(m.dir); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", m.dir, err))
		}
		if len(errs) > 0 {
			m.stopErr = fmt.Errorf("stop managed cerbos: %w", errors.Join(errs...))
		}
		m.log.Info("managed cerbos stopped", "restarts", m.Restarts())
	})
	return m.stopErr
}

// supervise runs the start / wait / restart loop until Stop.
func (m *Managed) supervise(first chan<- error) {
	// The kernel sends Pdeathsig when the *thread* that forked the child
	// exits, not the process, and the Go runtime may retire idle threads. So
	// every child is forked from this goroutine, locked to its thread for
	// good: the thread lives exactly as long as the supervisor, and the lock
	// is never released (the runtime then ends the thread with the goroutine,
	// after the child is already gone).
	runtime.LockOSThread()
	defer close(m.done)

	wait := m.cfg.RestartBackoff
	for attempt := 0; ; attempt++ {
		c, err := m.spawn()
		if err == nil {
			err = m.awaitReady(c)
		}
		if attempt == 0 {
			first <- err
			if err != nil {
				if c != nil {
					m.terminate(c)
				}
				return
			}
		}
		if err != nil {
			if errors.Is(err, errStopping) {
				m.terminate(c)
				return
			}
			m.log.Error("cerbos did not come back; retrying", "attempt", attempt, "retry_in", wait.String(), "error", err.Error())
			if c != nil {
				m.terminate(c)
			}
		} else {
			select {
			case <-m.stopCh:
				m.terminate(c)
				return
			case <-c.exited:
			}
			ran := time.Since(c.readyAt)
			m.log.Error("cerbos exited unexpectedly; policy checks are denied until it is back",
				"pid", c.pid, "exit", exitText(c.waitErr), "ran", ran.Round(time.Millisecond).String(),
				"last_errors", strings.Join(lastErrors(c), " | "), "restart_in", wait.String())
			if ran >= stableAfter {
				wait = m.cfg.RestartBackoff
			}
		}
		m.cur.Store(nil)
		timer := time.NewTimer(wait)
		select {
		case <-m.stopCh:
			timer.Stop()
			return
		case <-timer.C:
		}
		wait = min(wait*2, m.cfg.MaxRestartBackoff)
		m.restarts.Add(1)
	}
}

// spawn starts one cerbos process from the supervisor's locked thread.
func (m *Managed) spawn() (*child, error) {
	// A SIGKILLed PDP leaves its socket behind; remove it so readiness is
	// judged on the new process's socket.
	for _, s := range []string{m.sock, m.httpSock} {
		if err := os.Remove(s); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	c := &child{exited: make(chan struct{})}
	fwd := func(stderr bool) *logForwarder {
		return &logForwarder{
			log:      m.log,
			stderr:   stderr,
			now:      time.Now,
			ready:    c.ready.Load,
			onPolicy: m.recordPolicyError,
		}
	}
	c.stdout, c.stderr = fwd(false), fwd(true)

	cmd := exec.Command(m.bin, "server", "--config="+filepath.Join(m.dir, configFile), "--log-level="+m.cfg.LogLevel)
	cmd.Dir = m.dir
	cmd.Env = childEnv(m.dir)
	cmd.Stdin = nil
	cmd.Stdout = c.stdout
	cmd.Stderr = c.stderr
	cmd.SysProcAttr = sysProcAttr()
	cmd.WaitDelay = 2 * time.Second // never hang on a pipe a grandchild might hold
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("run %s: %w", m.bin, err)
	}
	c.cmd, c.pid, c.started = cmd, cmd.Process.Pid, time.Now()
	m.cur.Store(c)
	go func() {
		c.waitErr = cmd.Wait()
		c.stdout.flush()
		c.stderr.flush()
		close(c.exited)
	}()
	return c, nil
}

// awaitReady polls until the child answers gRPC, exits, or times out.
func (m *Managed) awaitReady(c *child) error {
	deadline := time.NewTimer(m.cfg.ReadyTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := os.Stat(m.sock); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
			err := m.probe.Ready(ctx)
			cancel()
			if err == nil {
				c.readyAt = time.Now()
				c.ready.Store(true)
				return nil
			}
		}
		select {
		case <-c.exited:
			msg := fmt.Sprintf("cerbos exited before it was ready (%s)", exitText(c.waitErr))
			if errs := lastErrors(c); len(errs) > 0 {
				msg += ": " + strings.Join(errs, " | ")
			}
			return errors.New(msg)
		case <-m.stopCh:
			return errStopping
		case <-deadline.C:
			return fmt.Errorf("cerbos did not answer on %s within %s", m.Addr(), m.cfg.ReadyTimeout)
		case <-tick.C:
		}
	}
}

// terminate stops c: SIGTERM to its process group, SIGKILL after StopTimeout.
func (m *Managed) terminate(c *child) {
	if c == nil {
		return
	}
	defer m.cur.CompareAndSwap(c, nil)
	select {
	case <-c.exited:
		return
	default:
	}
	signalGroup(c.pid, syscall.SIGTERM)
	timer := time.NewTimer(m.cfg.StopTimeout)
	defer timer.Stop()
	select {
	case <-c.exited:
		return
	case <-timer.C:
	}
	m.log.Warn("cerbos ignored SIGTERM; killing it", "pid", c.pid, "after", m.cfg.StopTimeout.String())
	signalGroup(c.pid, syscall.SIGKILL)
	<-c.exited
}

func (m *Managed) recordPolicyError(pe PolicyError) {
	m.policyErr.Store(&pe)
	m.policies.refused(pe.At)
	if m.cfg.OnPolicyError != nil {
		m.cfg.OnPolicyError(pe)
	}
}

func lastErrors(c *child) []string {
	return append(c.stderr.lastErrors(), c.stdout.lastErrors()...)
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// childEnv is the PDP's whole environment: it needs no secrets, so none of
// tollgate's (Slack, Cloudflare tokens) are inherited, and no CERBOS_*
// variable can override the generated config.
func childEnv(dir string) []string {
	env := []string{
		"TMPDIR=" + dir,
		"CERBOS_NO_TELEMETRY=1",
	}
	for _, k := range []string{"PATH", "TZ"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// checkVersion runs `cerbos --version`: a binary that cannot even do that is
// a start-up error; another release is a warning (the policies and the
// generated config are written for 0.55).
func checkVersion(ctx context.Context, bin string, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--version")
	cmd.Env = childEnv(os.TempDir())
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("%s --version: %w; %s", bin, err, installHint)
	}
	ver, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	if !strings.HasPrefix(ver, cerbosVersion) {
		log.Warn("cerbos binary is not the release tollgate is tested with", "binary", bin, "version", ver, "want", cerbosVersion+"x")
	}
	return nil
}

// sweepStaleDirs removes private dirs left by a tollgate that died without
// cleaning up (the PDP itself was killed with it). A dir is only removed
// when it is ours (same uid, a real directory) and its owner pid is dead.
func sweepStaleDirs(tempDir string, log *slog.Logger) {
	matches, _ := filepath.Glob(filepath.Join(tempDir, dirPattern+"*"))
	for _, dir := range matches {
		raw, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue // being created right now, or not ours
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
		if err != nil || pid <= 0 || pid == os.Getpid() || processAlive(pid) || !ownedDir(dir) {
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			log.Warn("could not remove a stale cerbos dir", "dir", dir, "error", err.Error())
			continue
		}
		log.Info("removed a stale cerbos dir left by a dead tollgate", "dir", dir, "owner_pid", pid)
	}
}
