package sandbox

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// APIPrefix is the path under which the sandbox serves the v4 API, as
// api.cloudflare.com does.
const APIPrefix = "/client/v4/"

// Options configure a Sandbox.
type Options struct {
	// StateFile is where state persists: "" keeps it in memory only;
	// otherwise the JSON snapshot there is loaded by New (or created) and
	// rewritten atomically after every change, shared with every other
	// sandbox using the same file (see doc.go, State).
	StateFile string
	// FlushInterval is how long token mints and deletes, which need not
	// survive a crash, may wait before they are written together. Default
	// DefaultFlushInterval. Every other change is written before its answer.
	FlushInterval time.Duration
	// Clock is the sandbox's notion of now, used for token expiry, not-before
	// and timestamps. Default time.Now.
	Clock func() time.Time
	// Faults are injected from the start; change them with SetFaults.
	Faults Faults
	// Seed makes fault injection and cf-ray ids deterministic.
	Seed int64
	// Logger receives one debug line per request (never a token value).
	// Default: discard.
	Logger *slog.Logger
	// Admin serves the fault admin endpoint (AdminFaultsPath) to loopback
	// clients, so a test can change faults in a sandbox running in another
	// process. Off by default: an embedded sandbox has no use for it.
	Admin bool
	// RateLimit emulates Cloudflare's API rate limit (on by default, with
	// Cloudflare's numbers).
	RateLimit RateLimit
}

// Faults make the sandbox misbehave on purpose, for tests of timeouts,
// retries and fail-closed paths.
type Faults struct {
	// Latency is added before every matching request is handled.
	Latency time.Duration
	// ErrorRate is the fraction (0..1) of matching requests answered 500.
	ErrorRate float64
	// RateLimitRate is the fraction (0..1) of matching requests answered 429.
	RateLimitRate float64
	// Hang makes matching requests wait until the client gives up (or the
	// sandbox closes) without answering.
	Hang bool
	// PathContains limits the faults to request paths containing it; ""
	// matches every path.
	PathContains string
	// Method limits the faults to requests with this HTTP method (compared
	// case-insensitively, e.g. DELETE); "" matches every method. With
	// PathContains it singles out one call, such as the token DELETE that
	// follows a registration.
	Method string
	// FailAfterEffect injects the ErrorRate 500s, and Hang, after the request
	// was handled: the change is made (and persisted) but the client sees an
	// error, or no answer at all — the cases a blindly retried POST would
	// double and a crash mid-call leaves in doubt.
	FailAfterEffect bool
}

// RequestLog is one request the sandbox received.
type RequestLog struct {
	Method  string
	Path    string
	Status  int
	TokenID string // "" when the request did not authenticate
	CFRay   string
	At      time.Time
}

// RegistrationRecord is a registration the account owns or is acquiring.
type RegistrationRecord struct {
	Domain        string
	Status        string // active | registration_pending
	AutoRenew     bool
	Years         int
	CreatedAt     time.Time
	ExpiresAt     time.Time // zero while pending
	Charged       string    // decimal string in Currency
	Currency      string
	WorkflowState string
}

// ScriptRecord is an uploaded Worker script. Etag, MainModule,
// ModuleSHA256, Size and CompatibilityDate describe its current version:
// the one serving the largest share of its traffic.
type ScriptRecord struct {
	Name              string
	Etag              string
	MainModule        string
	ModuleSHA256      string // of the main module's content
	Size              int    // bytes over all modules
	CompatibilityDate string
	WorkersDev        bool
	CreatedOn         time.Time
	ModifiedOn        time.Time
	VersionID         string         // the current version
	Versions          int            // versions kept
	Traffic           []TrafficShare // the deployment in force
}

// TrafficShare is one version's share of a Worker's traffic.
type TrafficShare struct {
	VersionID  string
	Percentage float64
}

// TokenRecord is an account token that has not been deleted.
type TokenRecord struct {
	ID               string
	Name             string
	PermissionGroups []string // names granted by allow policies, sorted
	Resources        []string
	RequestIPIn      []string
	IssuedOn         time.Time
	NotBefore        time.Time // zero if none
	ExpiresOn        time.Time // zero if none
	Expired          bool      // per the sandbox clock
}

// maxRequestLog bounds the in-memory request log (oldest dropped first).
const maxRequestLog = 50_000

// Sandbox emulates the Cloudflare API endpoints tollgate uses. It implements
// http.Handler and serves under APIPrefix. It is safe for concurrent use, and
// any number of Sandboxes (in one process or several) may share one state
// file (see store.go).
type Sandbox struct {
	mu       sync.Mutex
	st       *state
	byHash   map[string]string // token value sha256 -> token id
	stateFn  string
	clock    func() time.Time
	faults   Faults
	rng      *mrand.Rand
	seed     uint64
	rays     uint64
	requests []RequestLog
	hook     func(*http.Request)
	log      *slog.Logger
	admin    bool
	// hanging counts requests held by the Hang fault right now.
	hanging atomic.Int64
	limit   limiter

	// The shared state file: its lock file (held open), the stamp of the
	// version st was last synced with, the lazy changes not yet written and
	// the timer that writes them.
	lockF      *os.File
	stamp      fileStamp
	pending    []lazyOp
	flushTimer *time.Timer
	flushEvery time.Duration
	writes     atomic.Int64

	mux       *http.ServeMux
	closed    chan struct{}
	closeOnce sync.Once

	// surcharge (cents) is added to every registration's charge: see SetSurcharge.
	surcharge int64
}

var _ http.Handler = (*Sandbox)(nil)

// New returns a sandbox on Options.StateFile: it loads the state if the
// file exists and creates it (with a new parent token) if not, under the
// file's lock, so sandboxes starting together on one file agree on one
// account and one parent token.
func New(opts Options) (*Sandbox, error) {
	if err := errors.Join(checkFaults(opts.Faults), checkRateLimit(opts.RateLimit)); err != nil {
		return nil, err
	}
	if opts.FlushInterval < 0 {
		return nil, fmt.Errorf("sandbox: FlushInterval %v is negative", opts.FlushInterval)
	}
	s := &Sandbox{
		stateFn:    opts.StateFile,
		clock:      opts.Clock,
		faults:     opts.Faults,
		seed:       uint64(opts.Seed),
		rng:        mrand.New(mrand.NewPCG(uint64(opts.Seed), 0x70119a7e)),
		log:        opts.Logger,
		admin:      opts.Admin,
		flushEvery: opts.FlushInterval,
		closed:     make(chan struct{}),
	}
	s.limit.cfg = opts.RateLimit.withDefaults()
	if s.clock == nil {
		s.clock = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.flushEvery == 0 {
		s.flushEvery = DefaultFlushInterval
	}
	if err := s.open(); err != nil {
		return nil, err
	}
	s.routes()
	return s, nil
}

// open loads or creates the state.
func (s *Sandbox) open() error {
	if s.stateFn == "" {
		s.st = newState()
		if err := s.bootstrap(s.st); err != nil {
			return err
		}
		s.reindexLocked()
		return nil
	}
	lf, err := os.OpenFile(s.stateFn+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open sandbox state lock: %w", err)
	}
	s.lockF = lf
	unlock, err := s.lockFile()
	if err != nil {
		_ = lf.Close()
		return err
	}
	defer unlock()
	if _, err := os.Stat(s.stateFn); err == nil {
		if err := s.reloadLocked(); err != nil {
			_ = lf.Close()
			return err
		}
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		_ = lf.Close()
		return fmt.Errorf("read sandbox state: %w", err)
	}
	s.st = newState()
	if err := s.bootstrap(s.st); err != nil {
		_ = lf.Close()
		return err
	}
	s.reindexLocked()
	if err := s.writeLocked(); err != nil {
		_ = lf.Close()
		return err
	}
	return nil
}

// bootstrap creates the parent token: account-owned, no expiry, holding only
// the token-management permission groups.
func (s *Sandbox) bootstrap(st *state) error {
	val, err := newTokenValue()
	if err != nil {
		return err
	}
	id, err := randomHex(16)
	if err != nil {
		return err
	}
	now := s.clock().UTC().Truncate(time.Second)
	st.ParentToken = val
	st.ParentTokenID = id
	st.Tokens[id] = &tokenRec{
		ID: id, Name: "tollgate-sandbox bootstrap (parent)", Status: "active",
		IssuedOn: now, ModifiedOn: now,
		Policies: []policyRec{{
			ID: fmt.Sprintf("%032x", 1), Effect: "allow",
			PermissionGroups: []pgRef{
				{ID: permissionGroupID(pgTokensRead), Name: pgTokensRead},
				{ID: permissionGroupID(pgTokensWrite), Name: pgTokensWrite},
			},
			Resources: map[string]any{accountResource: "*"},
		}},
		ValueSHA256: hashToken(val),
	}
	return nil
}

// AccountID is the sandbox's fixed 32-hex account id.
func (s *Sandbox) AccountID() string { return accountID }

// ParentToken is the bootstrap token: it may only list permission groups and
// create, list and delete account tokens, like tollgate's real parent token.
// It reads the shared state, so a value rolled through another sandbox on
// the same state file is seen here at once.
func (s *Sandbox) ParentToken() string {
	s.viewLocked()
	defer s.mu.Unlock()
	return s.st.ParentToken
}

// viewLocked takes s.mu and brings the state up to date with the file for
// an accessor; a file that cannot be read leaves the last state read (and
// is logged). Callers unlock s.mu.
func (s *Sandbox) viewLocked() {
	s.mu.Lock()
	if err := s.syncLocked(); err != nil {
		s.log.Warn("sandbox: re-reading the shared state failed; answering from the last state read", "err", err)
	}
}

// SetFaults replaces the fault configuration. It panics on rates outside
// 0..1, which is a test bug, not input.
func (s *Sandbox) SetFaults(f Faults) {
	if err := checkFaults(f); err != nil {
		panic(err)
	}
	s.mu.Lock()
	s.faults = f
	s.mu.Unlock()
}

func checkFaults(f Faults) error {
	var errs []error
	if f.ErrorRate < 0 || f.ErrorRate > 1 {
		errs = append(errs, fmt.Errorf("sandbox faults: ErrorRate %v is outside 0..1", f.ErrorRate))
	}
	if f.RateLimitRate < 0 || f.RateLimitRate > 1 {
		errs = append(errs, fmt.Errorf("sandbox faults: RateLimitRate %v is outside 0..1", f.RateLimitRate))
	}
	if f.ErrorRate+f.RateLimitRate > 1 {
		errs = append(errs, fmt.Errorf("sandbox faults: ErrorRate + RateLimitRate is %v, above 1", f.ErrorRate+f.RateLimitRate))
	}
	if f.Latency < 0 {
		errs = append(errs, fmt.Errorf("sandbox faults: Latency %v is negative", f.Latency))
	}
	if f.Method != "" && !methodRE.MatchString(f.Method) {
		errs = append(errs, fmt.Errorf("sandbox faults: Method %q is not an HTTP method; use e.g. GET, POST, PUT or DELETE, or empty for all", f.Method))
	}
	return errors.Join(errs...)
}

// methodRE is an HTTP method as the faults accept it: letters only.
var methodRE = regexp.MustCompile(`^[A-Za-z]{1,16}$`)

// Faults returns the fault configuration in force.
func (s *Sandbox) Faults() Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faults
}

// Hanging is the number of requests the Hang fault holds right now: a test
// waits for it to know a call is stuck mid-flight before acting (killing
// the client, say). A held request stops counting when its client goes away.
func (s *Sandbox) Hanging() int { return int(s.hanging.Load()) }

// SetPrice sets the yearly registration and renewal price of an extension
// (e.g. "com", "co.uk"), for "the price rose" tests. The extension becomes
// supported for API registration if it was not. Prices are decimal strings
// with two fraction digits, in USD.
func (s *Sandbox) SetPrice(tld, registration, renewal string) error {
	tld = strings.ToLower(strings.Trim(tld, "."))
	if tld == "" {
		return errors.New("set price: extension is empty; give one like com or co.uk")
	}
	if _, err := parseCents(registration); err != nil {
		return fmt.Errorf("set price: registration %w", err)
	}
	if _, err := parseCents(renewal); err != nil {
		return fmt.Errorf("set price: renewal %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.commitLocked(func(st *state) error {
		st.Prices[tld] = priceRow{Registration: registration, Renewal: renewal}
		return nil
	})
}

// SetSurcharge makes every registration from now on charge amount (USD, two
// fraction digits) more than the price it was quoted at, as a registrar
// billing error would, for "charged above the approved amount" tests. "0.00"
// turns it off. It is not saved in the state file.
func (s *Sandbox) SetSurcharge(amount string) error {
	c, err := parseCents(amount)
	if err != nil {
		return fmt.Errorf("set surcharge: %w", err)
	}
	s.mu.Lock()
	s.surcharge = c
	s.mu.Unlock()
	return nil
}

// OnRequest installs a hook called with every request before it is handled
// (nil removes it). A test can block in it, or kill a process, mid-call.
func (s *Sandbox) OnRequest(fn func(r *http.Request)) {
	s.mu.Lock()
	s.hook = fn
	s.mu.Unlock()
}

// Requests returns every request received so far, oldest first.
func (s *Sandbox) Requests() []RequestLog {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// Registrations returns the account's registrations, sorted by domain.
func (s *Sandbox) Registrations() []RegistrationRecord {
	s.viewLocked()
	defer s.mu.Unlock()
	out := make([]RegistrationRecord, 0, len(s.st.Registrations))
	for _, r := range s.st.Registrations {
		rec := RegistrationRecord{
			Domain: r.Domain, Status: r.Status, AutoRenew: r.AutoRenew, Years: r.Years,
			CreatedAt: r.CreatedAt, Charged: r.Charged, Currency: currency,
		}
		if r.ExpiresAt != nil {
			rec.ExpiresAt = *r.ExpiresAt
		}
		if wf := s.st.Workflows[r.Domain]; wf != nil {
			rec.WorkflowState = wf.State
		}
		out = append(out, rec)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Domain < out[j].Domain })
	return out
}

// Scripts returns the uploaded Workers, sorted by name.
func (s *Sandbox) Scripts() []ScriptRecord {
	s.viewLocked()
	defer s.mu.Unlock()
	out := make([]ScriptRecord, 0, len(s.st.Scripts))
	for _, sc := range s.st.Scripts {
		out = append(out, sc.record())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (sc *scriptRec) record() ScriptRecord {
	v := sc.current()
	rec := ScriptRecord{
		Name: sc.Name, Etag: v.Etag, MainModule: v.MainModule, CompatibilityDate: v.CompatibilityDate,
		WorkersDev: sc.WorkersDev, CreatedOn: sc.CreatedOn, ModifiedOn: sc.ModifiedOn,
		VersionID: v.ID, Versions: len(sc.Versions),
	}
	for _, m := range v.Modules {
		rec.Size += len(m.Content)
		if m.Name == v.MainModule {
			sum := sha256.Sum256(m.Content)
			rec.ModuleSHA256 = hex.EncodeToString(sum[:])
		}
	}
	if d := sc.deployment(); d != nil {
		for _, sh := range d.Versions {
			rec.Traffic = append(rec.Traffic, TrafficShare{VersionID: sh.VersionID, Percentage: sh.Percentage})
		}
	}
	return rec
}

// LiveTokens returns every token not yet deleted, expired ones included,
// sorted by issue time. The parent token is among them.
func (s *Sandbox) LiveTokens() []TokenRecord {
	s.viewLocked()
	defer s.mu.Unlock()
	now := s.clock()
	out := make([]TokenRecord, 0, len(s.st.Tokens))
	for _, t := range s.st.Tokens {
		rec := TokenRecord{ID: t.ID, Name: t.Name, IssuedOn: t.IssuedOn, RequestIPIn: slices.Clone(t.Condition.RequestIP.In)}
		if t.NotBefore != nil {
			rec.NotBefore = *t.NotBefore
		}
		if t.ExpiresOn != nil {
			rec.ExpiresOn = *t.ExpiresOn
			rec.Expired = !now.Before(*t.ExpiresOn)
		}
		groups := map[string]bool{}
		res := map[string]bool{}
		for _, p := range t.Policies {
			if p.Effect != "allow" {
				continue
			}
			for _, g := range p.PermissionGroups {
				groups[g.Name] = true
			}
			for r := range p.Resources {
				res[r] = true
			}
		}
		for g := range groups {
			rec.PermissionGroups = append(rec.PermissionGroups, g)
		}
		for r := range res {
			rec.Resources = append(rec.Resources, r)
		}
		sort.Strings(rec.PermissionGroups)
		sort.Strings(rec.Resources)
		out = append(out, rec)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].IssuedOn.Equal(out[j].IssuedOn) {
			return out[i].IssuedOn.Before(out[j].IssuedOn)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Close releases requests held by the Hang fault (they answer 503) and
// writes the token changes waiting in memory. The handler keeps serving
// afterwards; Close only ends the hangs.
func (s *Sandbox) Close() {
	s.closeOnce.Do(func() { close(s.closed) })
	if err := s.Flush(); err != nil {
		s.log.Warn("sandbox: writing token changes on close failed", "err", err)
	}
}

// ctxKey keys the per-request info the handlers fill in for the log.
type ctxKey struct{}

type reqInfo struct {
	tokenID string
}

// ServeHTTP handles one API request: it stamps a cf-ray, runs the OnRequest
// hook, routes, and logs the outcome.
func (s *Sandbox) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.admin && strings.HasPrefix(r.URL.Path, adminPrefix) {
		// Not an API call: no cf-ray, no hook, no fault, not in the request log.
		s.serveAdmin(w, r)
		return
	}
	s.mu.Lock()
	s.rays++
	ray := rayID(s.seed, s.rays)
	hook := s.hook
	s.mu.Unlock()

	w.Header().Set("cf-ray", ray)
	if hook != nil {
		hook(r)
	}
	info := &reqInfo{}
	r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, info))
	sw := &statusWriter{ResponseWriter: w}
	start := s.clock()
	s.mux.ServeHTTP(sw, r)
	status := sw.status
	if status == 0 {
		status = http.StatusOK // the client went away before an answer
	}
	s.log.LogAttrs(r.Context(), slog.LevelDebug, "sandbox request",
		slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.Int("status", status),
		slog.String("token_id", info.tokenID), slog.String("cf_ray", ray))

	s.mu.Lock()
	if len(s.requests) >= maxRequestLog {
		// Drop the oldest tenth at once so a long run pays the copy rarely.
		s.requests = slices.Delete(s.requests, 0, maxRequestLog/10)
	}
	s.requests = append(s.requests, RequestLog{Method: r.Method, Path: r.URL.Path, Status: status, TokenID: info.tokenID, CFRay: ray, At: start})
	s.mu.Unlock()
}

// statusWriter remembers the status code written.
type statusWriter struct {
	http.ResponseWriter
	status int
}

// WriteHeader records the first status written.
func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write records an implicit 200.
func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// rayID derives a cf-ray-shaped id ("16 hex digits-colo") from the seed and
// a counter, so runs with the same seed produce the same ids.
func rayID(seed, n uint64) string {
	x := seed ^ (n * 0x9e3779b97f4a7c15)
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return fmt.Sprintf("%016x-SBX", x)
}

// endpoint wraps an API handler with fault injection, authentication and the
// permission check. need lists the permission groups of which the token must
// hold at least one; nil means any valid token of the account.
func (s *Sandbox) endpoint(need []string, h func(http.ResponseWriter, *http.Request, *tokenRec)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		after, done := s.injectFaults(w, r)
		if done {
			return
		}
		tok, ok := s.authenticate(w, r, need)
		if !ok || !s.limit.admit(w, s.clock()) {
			return
		}
		if after == afterNothing {
			h(w, r, tok)
			return
		}
		// Let the handler make its change, then throw its answer away.
		rec := httptest.NewRecorder()
		h(rec, r, tok)
		if after == afterHang {
			s.hang(w, r)
			return
		}
		writeError(w, http.StatusInternalServerError, codeUnknownError, msgUnknownError)
	}
}

// afterEffect is what a FailAfterEffect fault does once the handler ran.
type afterEffect int

const (
	afterNothing afterEffect = iota // answer normally
	afterFail                       // answer 500
	afterHang                       // never answer
)

// injectFaults applies the configured faults. done reports that a response
// was written (or the client is gone); after asks for a 500 or a hang once
// the handler has made its change.
func (s *Sandbox) injectFaults(w http.ResponseWriter, r *http.Request) (after afterEffect, done bool) {
	s.mu.Lock()
	f := s.faults
	match := (f.PathContains == "" || strings.Contains(r.URL.Path, f.PathContains)) &&
		(f.Method == "" || strings.EqualFold(f.Method, r.Method))
	var u float64
	if match && (f.ErrorRate > 0 || f.RateLimitRate > 0) {
		u = s.rng.Float64()
	}
	s.mu.Unlock()
	if !match {
		return afterNothing, false
	}
	if f.Latency > 0 {
		t := time.NewTimer(f.Latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return afterNothing, true
		}
	}
	if f.Hang {
		if f.FailAfterEffect {
			return afterHang, false
		}
		s.hang(w, r)
		return afterNothing, true
	}
	switch {
	case u < f.RateLimitRate:
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusTooManyRequests, codeRateLimited, msgRateLimited)
		return afterNothing, true
	case u < f.RateLimitRate+f.ErrorRate:
		if f.FailAfterEffect {
			return afterFail, false
		}
		writeError(w, http.StatusInternalServerError, codeUnknownError, msgUnknownError)
		return afterNothing, true
	}
	return afterNothing, false
}

// hang holds a request without answering until its client goes away, or
// answers 503 when the sandbox closes.
func (s *Sandbox) hang(w http.ResponseWriter, r *http.Request) {
	s.hanging.Add(1)
	defer s.hanging.Add(-1)
	// net/http notices a client that went away (and cancels the request's
	// context) only once the body has been read: drain it, or a killed
	// client's request would be held until Close.
	_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, maxBodyBytes))
	select {
	case <-r.Context().Done():
	case <-s.closed:
		writeError(w, http.StatusServiceUnavailable, codeUnknownError, msgUnknownError)
	}
}

// authenticate checks the bearer token the way Cloudflare does: header
// format (400), known, not expired and not before its start (401), request
// IP condition, account and permission (403).
func (s *Sandbox) authenticate(w http.ResponseWriter, r *http.Request, need []string) (*tokenRec, bool) {
	verify := strings.HasSuffix(r.URL.Path, "/tokens/verify")
	h := r.Header.Get("Authorization")
	val, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || !validTokenFormat(val) {
		writeJSON(w, http.StatusBadRequest, envelope{Errors: []apiError{{
			Code: codeInvalidHeaders, Message: "Invalid request headers",
			ErrorChain: []apiError{{Code: codeBadAuthHeader, Message: "Invalid format for Authorization header"}},
		}}})
		return nil, false
	}
	unauthenticated := func() {
		if verify {
			writeError(w, http.StatusUnauthorized, codeInvalidToken, msgInvalidToken)
			return
		}
		writeError(w, http.StatusUnauthorized, codeAuthError, msgAuthError)
	}
	s.mu.Lock()
	if err := s.syncLocked(); err != nil {
		s.mu.Unlock()
		s.log.Error("sandbox: re-reading the shared state failed", "err", err)
		writeError(w, http.StatusInternalServerError, codeUnknownError, msgUnknownError)
		return nil, false
	}
	now := s.clock()
	id, known := s.byHash[hashToken(val)]
	var tok *tokenRec
	if known {
		tok = s.st.Tokens[id]
	}
	s.mu.Unlock()
	if tok == nil { // unknown or deleted
		unauthenticated()
		return nil, false
	}
	if info, _ := r.Context().Value(ctxKey{}).(*reqInfo); info != nil {
		info.tokenID = tok.ID
	}
	if tok.Status != "active" || (tok.ExpiresOn != nil && !now.Before(*tok.ExpiresOn)) || (tok.NotBefore != nil && now.Before(*tok.NotBefore)) {
		unauthenticated()
		return nil, false
	}
	if ip, ok := remoteIP(r); !ok || !ipAllowed(tok.Condition, ip) {
		writeError(w, http.StatusForbidden, codeUnauthorized, "Cannot use the access token from location: "+remoteHost(r))
		return nil, false
	}
	// Zone endpoints (/zones/...) name no account; their handlers check the
	// zone itself.
	if acct := r.PathValue("account_id"); acct != accountID && strings.HasPrefix(r.URL.Path, APIPrefix+"accounts/") {
		writeError(w, http.StatusForbidden, codeUnauthorized, msgUnauthorized)
		return nil, false
	}
	if need != nil && !tok.allowsAccount(need) {
		writeError(w, http.StatusForbidden, codeAuthError, msgAuthError)
		return nil, false
	}
	return tok, true
}

// allowsAccount reports whether an allow policy on the account grants one of
// need and no deny policy on the account takes it away.
func (t *tokenRec) allowsAccount(need []string) bool {
	return t.allows(need, func(p policyRec) bool { return p.Resources[accountResource] == "*" })
}

// allowsZone is allowsAccount for a zone: the policy names the zone, or
// (nested under the account) all of the account's zones.
func (t *tokenRec) allowsZone(zone string, need []string) bool {
	return t.allows(need, func(p policyRec) bool { return p.coversZone(zone) })
}

func (t *tokenRec) allows(need []string, covers func(policyRec) bool) bool {
	granted, denied := map[string]bool{}, map[string]bool{}
	for _, p := range t.Policies {
		if !covers(p) {
			continue
		}
		for _, g := range p.PermissionGroups {
			if p.Effect == "deny" {
				denied[g.Name] = true
			} else {
				granted[g.Name] = true
			}
		}
	}
	for _, n := range need {
		if granted[n] && !denied[n] {
			return true
		}
	}
	return false
}

// coversZone reports whether the policy's resources include the zone.
func (p policyRec) coversZone(zone string) bool {
	if p.Resources[zoneResourcePrefix+zone] == "*" {
		return true
	}
	nested, _ := p.Resources[accountResource].(map[string]any)
	return nested[allZonesResource] == "*" || nested[zoneResourcePrefix+zone] == "*"
}

func remoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func remoteIP(r *http.Request) (netip.Addr, bool) {
	a, err := netip.ParseAddr(remoteHost(r))
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

func ipAllowed(c conditionRec, ip netip.Addr) bool {
	for _, s := range c.RequestIP.NotIn {
		if p, err := netip.ParsePrefix(s); err == nil && p.Contains(ip) {
			return false
		}
	}
	if len(c.RequestIP.In) == 0 {
		return true
	}
	for _, s := range c.RequestIP.In {
		if p, err := netip.ParsePrefix(s); err == nil && p.Contains(ip) {
			return true
		}
	}
	return false
}

// tokenAlphabet is the character set of Cloudflare API token values.
const tokenAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// validTokenFormat accepts 40-character values over the token alphabet, the
// shape of Cloudflare API tokens; anything else is a malformed header.
func validTokenFormat(v string) bool {
	if len(v) != 40 {
		return false
	}
	for i := 0; i < len(v); i++ {
		if !strings.ContainsRune(tokenAlphabet, rune(v[i])) {
			return false
		}
	}
	return true
}

func newTokenValue() (string, error) {
	var b [40]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("mint token value: %w", err)
	}
	for i := range b {
		b[i] = tokenAlphabet[int(b[i])%len(tokenAlphabet)]
	}
	return string(b[:]), nil
}

func hashToken(v string) string {
	sum := sha256.Sum256([]byte(v))
	return hex.EncodeToString(sum[:])
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random id: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// readBody reads a request body up to maxBodyBytes.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, codeScriptTooLarge, fmt.Sprintf("request body: %v (limit %d bytes)", err, maxBodyBytes))
		return nil, false
	}
	return b, true
}

// writeBadBody answers a body parse error: 6007 for malformed JSON, the
// endpoint's own code for a field that is wrong.
func writeBadBody(w http.ResponseWriter, code int, err error) {
	if errors.Is(err, errMalformedJSON) {
		writeError(w, http.StatusBadRequest, codeMalformedJSON, err.Error())
		return
	}
	writeError(w, http.StatusBadRequest, code, err.Error())
}

// Serve listens on addr (a loopback address; port 0 picks one), serves s
// until ctx is done, and returns the bound address. Non-loopback addresses
// are refused: the sandbox accepts a fixed parent token and is not meant to
// be reachable from other machines.
func Serve(ctx context.Context, addr string, s *Sandbox) (string, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("sandbox listen %q: %w; want host:port such as 127.0.0.1:8788", addr, err)
	}
	if host != "localhost" {
		ip, err := netip.ParseAddr(host)
		if err != nil || !ip.IsLoopback() {
			return "", fmt.Errorf("sandbox listen %q: %s is not a loopback address; use 127.0.0.1, ::1 or localhost", addr, host)
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("sandbox listen %q: %w", addr, err)
	}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	go func() {
		<-ctx.Done()
		s.Close()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(shutdownCtx); err != nil {
			_ = srv.Close()
		}
	}()
	return ln.Addr().String(), nil
}

// APIBase is the cloudflare-go base URL for a sandbox served at boundAddr.
func APIBase(boundAddr string) string {
	return "http://" + boundAddr + APIPrefix
}

// deterministicHex derives a stable hex id from parts, e.g. a script's tag.
func deterministicHex(parts ...[]byte) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write(p)
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}
