package cloudflare

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tollgatehq/tollgate/cloudflare/sandbox"
)

func countPath(e *env, method, suffix string) int {
	n := 0
	for _, r := range e.sb.Requests() {
		if r.Method == method && strings.HasSuffix(r.Path, suffix) {
			n++
		}
	}
	return n
}

func TestReadsRetryServerErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		purpose  Purpose
		faults   sandbox.Faults
		status   int
		attempts int
	}{
		{"5xx", PurposeQuote, sandbox.Faults{ErrorRate: 1, PathContains: "/domain-check"}, 500, 3},
		{"429", PurposeRegister, sandbox.Faults{RateLimitRate: 1, PathContains: "/domain-check"}, 429, 3},
		// A price check is deferrable: after a 429 with Retry-After the
		// budget refuses the retry itself, with the wait, sending nothing.
		{"429 on a price check", PurposeQuote, sandbox.Faults{RateLimitRate: 1, PathContains: "/domain-check"}, 0, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			s := e.session(t, tc.purpose, "faults")
			e.sb.SetFaults(tc.faults)
			_, err := s.CheckDomains(context.Background(), "faulty.com")
			var ae *APIError
			var le *LimitError
			switch {
			case tc.status == 0:
				if !errors.As(err, &le) || le.RetryAfter <= 0 || !strings.Contains(err.Error(), "retry after") {
					t.Fatalf("CheckDomains = %v, want a *LimitError with a retry-after", err)
				}
			case !errors.As(err, &ae) || ae.Status != tc.status || ae.CFRay == "":
				t.Fatalf("CheckDomains = %v", err)
			}
			if got := countPath(e, "POST", "/domain-check"); got != tc.attempts {
				t.Fatalf("%d attempts, want %d (1 + ReadRetries)", got, tc.attempts)
			}
		})
	}
	t.Run("recovers", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		s := e.session(t, PurposeQuote, "faults")
		e.sb.SetFaults(sandbox.Faults{ErrorRate: 1, PathContains: "/domain-check"})
		e.sb.OnRequest(func(r *http.Request) {
			if countPath(e, "POST", "/domain-check") == 1 { // the second attempt goes through
				e.sb.SetFaults(sandbox.Faults{})
			}
		})
		got, err := s.CheckDomains(context.Background(), "recovered.com")
		if err != nil || !got[0].Registrable {
			t.Fatalf("CheckDomains after one 500 = %+v, %v", got, err)
		}
	})
	t.Run("no retries configured", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, func(c *Config) { c.ReadRetries = -1 })
		s := e.session(t, PurposeQuote, "faults")
		e.sb.SetFaults(sandbox.Faults{ErrorRate: 1, PathContains: "/domain-check"})
		if _, err := s.CheckDomains(context.Background(), "once.com"); err == nil {
			t.Fatal("no error")
		}
		if got := countPath(e, "POST", "/domain-check"); got != 1 {
			t.Fatalf("%d attempts, want 1", got)
		}
	})
}

func TestMutationsAreNotBlindlyRetried(t *testing.T) {
	t.Parallel()
	t.Run("registration 5xx is in doubt and sent once", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		s := e.session(t, PurposeRegister, "once")
		// The registrar acts, then the answer is lost in a 500.
		e.sb.SetFaults(sandbox.Faults{ErrorRate: 1, FailAfterEffect: true, PathContains: "/registrar/registrations"})
		_, err := s.Register(context.Background(), RegisterParams{Domain: "in-doubt.com"})
		if !errors.Is(err, ErrInDoubt) {
			t.Fatalf("Register = %v, want ErrInDoubt", err)
		}
		if got := countPath(e, "POST", "/registrar/registrations"); got != 1 {
			t.Fatalf("registration sent %d times", got)
		}
		e.sb.SetFaults(sandbox.Faults{})
		reg, err := s.GetRegistration(context.Background(), "in-doubt.com")
		if err != nil || reg.Status != "active" {
			t.Fatalf("reconcile: %+v %v", reg, err)
		}
	})
	t.Run("registration 429 is not retried and not in doubt", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		s := e.session(t, PurposeRegister, "once")
		e.sb.SetFaults(sandbox.Faults{RateLimitRate: 1, PathContains: "/registrar/registrations"})
		_, err := s.Register(context.Background(), RegisterParams{Domain: "limited.com"})
		var ae *APIError
		if !errors.As(err, &ae) || ae.Status != 429 || errors.Is(err, ErrInDoubt) {
			t.Fatalf("Register = %v", err)
		}
		if got := countPath(e, "POST", "/registrar/registrations"); got != 1 {
			t.Fatalf("registration sent %d times", got)
		}
	})
	t.Run("upload 5xx is in doubt and sent once", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		s := e.session(t, PurposeDeploy, "once")
		e.sb.SetFaults(sandbox.Faults{ErrorRate: 1, FailAfterEffect: true, PathContains: "/workers/scripts/"})
		_, err := s.DeployWorker(context.Background(), DeployParams{ScriptName: "doubt", Module: []byte(workerSrc), CompatibilityDate: "2025-01-01"})
		if !errors.Is(err, ErrInDoubt) {
			t.Fatalf("DeployWorker = %v", err)
		}
		if got := countPath(e, "PUT", "/workers/scripts/doubt"); got != 1 {
			t.Fatalf("upload sent %d times", got)
		}
	})
	t.Run("upload 429 is retried", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		s := e.session(t, PurposeDeploy, "retry")
		e.sb.SetFaults(sandbox.Faults{RateLimitRate: 1, PathContains: "/workers/scripts/"})
		e.sb.OnRequest(func(r *http.Request) {
			if r.Method == http.MethodPut && countPath(e, "PUT", "/workers/scripts/limited") == 1 {
				e.sb.SetFaults(sandbox.Faults{})
			}
		})
		dep, err := s.DeployWorker(context.Background(), DeployParams{ScriptName: "limited", Module: []byte(workerSrc), CompatibilityDate: "2025-01-01"})
		if err != nil || dep.Etag == "" {
			t.Fatalf("DeployWorker = %+v, %v", dep, err)
		}
		if got := countPath(e, "PUT", "/workers/scripts/limited"); got != 2 {
			t.Fatalf("upload sent %d times, want 2", got)
		}
		if sc := e.sb.Scripts(); len(sc) != 1 || sc[0].Size != len(workerSrc) {
			t.Fatalf("retried upload lost its body: %+v", sc)
		}
	})
	t.Run("workers.dev failure after upload returns the deployment", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		s := e.session(t, PurposeDeploy, "partial")
		e.sb.SetFaults(sandbox.Faults{ErrorRate: 1, PathContains: "/subdomain"})
		dep, err := s.DeployWorker(context.Background(), DeployParams{ScriptName: "partial", Module: []byte(workerSrc), CompatibilityDate: "2025-01-01", WorkersDev: true})
		if err == nil || dep == nil || dep.Etag == "" || dep.URL != "" || !strings.Contains(err.Error(), "uploaded") {
			t.Fatalf("DeployWorker = %+v, %v", dep, err)
		}
	})
}

func TestLatencyAndHang(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.session(t, PurposeQuote, "slow")
	e.sb.SetFaults(sandbox.Faults{Latency: 25 * time.Millisecond, PathContains: "/domain-check"})
	if _, err := s.CheckDomains(context.Background(), "slow.com"); err != nil {
		t.Fatal(err)
	}
	recs := e.recorded()
	last := recs[len(recs)-1]
	if last.Duration < 25*time.Millisecond || last.Status != 200 {
		t.Fatalf("record of a slow request: %+v", last)
	}

	e.sb.SetFaults(sandbox.Faults{Hang: true, PathContains: "/domain-check"})
	// The sandbox holds a hung request until it closes, so returning at all
	// shows the context ended the call.
	_, err := s.CheckDomains(ctxTimeout(t, 100*time.Millisecond), "hang.com")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("CheckDomains against a hang = %v", err)
	}
	// A hang on the registration leaves it in doubt.
	r := e.session(t, PurposeRegister, "hang")
	e.sb.SetFaults(sandbox.Faults{Hang: true, PathContains: "/registrar/registrations"})
	_, err = r.Register(ctxTimeout(t, 100*time.Millisecond), RegisterParams{Domain: "hung.com"})
	if !errors.Is(err, ErrInDoubt) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Register against a hang = %v", err)
	}
	// Close still revokes, with the caller's context long gone.
	e.sb.SetFaults(sandbox.Faults{})
	if err := r.Close(ctxTimeout(t, time.Nanosecond)); err != nil || e.liveToken(r.TokenID) {
		t.Fatalf("Close after a timeout: %v", err)
	}
}

func TestObserverSeesEveryRequest(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	s := e.session(t, PurposeRegister, "observed")
	if _, err := s.Register(ctx, RegisterParams{Domain: "slow-observed.com"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	recs := e.recorded()
	reqs := e.sb.Requests()
	if len(recs) != len(reqs) {
		t.Fatalf("%d records for %d requests", len(recs), len(reqs))
	}
	for i, r := range recs {
		q := reqs[i]
		if r.Method != q.Method || r.Path != q.Path || r.Status != q.Status || r.CFRay != q.CFRay {
			t.Errorf("record %d = %+v, request %+v", i, r, q)
		}
		if r.Purpose != PurposeRegister || r.Label != "observed" {
			t.Errorf("record %d not attributed to the session: %+v", i, r)
		}
		parentCall := strings.Contains(r.Path, "/tokens")
		if parentCall != (r.TokenID == "") || (!parentCall && r.TokenID != s.TokenID) || q.TokenID == "" {
			t.Errorf("record %d token id %q for %s", i, r.TokenID, r.Path)
		}
	}
}

func TestObserverFailureFailsClosed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.session(t, PurposeRegister, "audit")
	e.failObs.Store(true)
	before := len(e.sb.Requests())
	_, err := s.CheckDomains(context.Background(), "audited.com")
	if !errors.Is(err, ErrObserver) || !errors.Is(err, errAuditDown) {
		t.Fatalf("CheckDomains with the audit down = %v", err)
	}
	if got := len(e.sb.Requests()) - before; got != 1 {
		t.Fatalf("an audit failure was retried: %d requests", got)
	}
	_, err = s.Register(context.Background(), RegisterParams{Domain: "audited.com"})
	if !errors.Is(err, ErrObserver) || !errors.Is(err, ErrInDoubt) {
		t.Fatalf("Register with the audit down = %v, want ErrObserver and ErrInDoubt (it acted)", err)
	}
	if _, err := e.b.Session(context.Background(), PurposeQuote, "unaudited"); !errors.Is(err, ErrObserver) {
		t.Fatalf("Session with the audit down = %v", err)
	}
	e.failObs.Store(false)
	if live := e.sb.LiveTokens(); len(live) != 2 {
		t.Fatalf("unaudited mint left tokens behind: %d live (want parent + the session)", len(live))
	}
}

// TestUnparseableErrorBody covers a proxy answering HTML: the status and
// cf-ray survive even though cloudflare-go cannot parse the body.
func TestUnparseableErrorBody(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("cf-ray", "0123456789abcdef-LHR")
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		_, _ = w.Write([]byte("<html>502 Bad Gateway</html>"))
	}))
	defer srv.Close()
	b, err := NewBroker(Config{APIBase: srv.URL + "/client/v4/", AccountID: testAccount, ParentToken: "p", HTTPClient: srv.Client(), ReadRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	err = b.Ping(context.Background())
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusBadGateway || ae.CFRay != "0123456789abcdef-LHR" {
		t.Fatalf("Ping against an HTML 502 = %#v", err)
	}
}

// countRecorded counts client-side records: a hung request reaches the
// sandbox's log only once the server notices the client left.
func countRecorded(e *env, method, suffix string) int {
	n := 0
	for _, r := range e.recorded() {
		if r.Method == method && strings.HasSuffix(r.Path, suffix) {
			n++
		}
	}
	return n
}

func TestRequestTimeoutBoundsEachAttempt(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.RequestTimeout = 30 * time.Millisecond })
	s := e.session(t, PurposeRegister, "timeout")
	e.sb.SetFaults(sandbox.Faults{Hang: true, PathContains: "/domain-check"})
	// No deadline on the context: the per-attempt timeout ends each hang,
	// and the read is retried like any transport failure.
	_, err := s.CheckDomains(context.Background(), "hung.com")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("CheckDomains = %v", err)
	}
	if got := countRecorded(e, "POST", "/domain-check"); got != 1+e.b.cfg.ReadRetries {
		t.Fatalf("%d attempts, want %d", got, 1+e.b.cfg.ReadRetries)
	}
	// A timed-out registration is sent once and left in doubt.
	e.sb.SetFaults(sandbox.Faults{Hang: true, PathContains: "/registrar/registrations"})
	if _, err := s.Register(context.Background(), RegisterParams{Domain: "timeout.com"}); !errors.Is(err, ErrInDoubt) {
		t.Fatalf("Register = %v", err)
	}
	if got := countRecorded(e, "POST", "/registrar/registrations"); got != 1 {
		t.Fatalf("registration sent %d times", got)
	}
}
