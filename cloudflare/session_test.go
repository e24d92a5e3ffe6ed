package cloudflare

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestCheckDomains(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.session(t, PurposeQuote, "check")
	names := []string{"tollgate-check.com", "google.com", "premium.com", "tollgate.ai", "tollgate.tk", "tollgate.museum", "a..com", "TOLLGATE-CHECK.COM.", "tollgate-x.xyz"}
	got, err := s.CheckDomains(context.Background(), names...)
	if err != nil {
		t.Fatal(err)
	}
	want := []DomainCheck{
		{Name: "tollgate-check.com", Registrable: true, Tier: "standard", Currency: "USD", RegistrationCost: "10.44", RenewalCost: "10.44"},
		{Name: "google.com", Reason: "domain_unavailable"},
		{Name: "premium.com", Reason: "domain_premium", Tier: "premium"},
		{Name: "tollgate.ai", Reason: "extension_not_supported_via_api"},
		{Name: "tollgate.tk", Reason: "extension_disallows_registration"},
		{Name: "tollgate.museum", Reason: "extension_not_supported"},
		{Name: "a..com", Reason: ReasonNotReturned},
		{Name: "tollgate-check.com", Registrable: true, Tier: "standard", Currency: "USD", RegistrationCost: "10.44", RenewalCost: "10.44"},
		{Name: "tollgate-x.xyz", Registrable: true, Tier: "standard", Currency: "USD", RegistrationCost: "2.00", RenewalCost: "13.18"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d answers for %d names", len(got), len(names))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("%s:\n got %+v\nwant %+v", names[i], got[i], want[i])
		}
	}
	for _, bad := range [][]string{nil, make([]string, 21), {"ok.com", " "}} {
		if _, err := s.CheckDomains(context.Background(), bad...); err == nil {
			t.Errorf("CheckDomains(%d names) accepted", len(bad))
		}
	}
}

func TestRegister(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		params    RegisterParams
		wantErr   func(error) bool
		charged   string
		wantPolls int
	}{
		{name: "sync 201", params: RegisterParams{Domain: "tollgate-sync.com", AutoRenew: true}, charged: "10.44"},
		{name: "multi-year", params: RegisterParams{Domain: "tollgate-multi.xyz", Years: 3}, charged: "28.36"},
		{name: "202 polled", params: RegisterParams{Domain: "slow-tollgate.dev", Years: 2}, charged: "24.36", wantPolls: 2},
		{name: "blocked then done", params: RegisterParams{Domain: "blocked-tollgate.app"}, charged: "14.18", wantPolls: 2},
		{name: "prefer respond-async", params: RegisterParams{Domain: "tollgate-async.org", Async: true}, charged: "10.11", wantPolls: 1},
		{name: "workflow fails", params: RegisterParams{Domain: "fail-tollgate.com"}, wantErr: func(err error) bool {
			var we *WorkflowError
			return errors.As(err, &we) && we.State == "failed" && we.Code == "registry_rejected" && !errors.Is(err, ErrInDoubt)
		}},
		{name: "action required", params: RegisterParams{Domain: "action-tollgate.com"}, wantErr: func(err error) bool {
			var we *WorkflowError
			return errors.As(err, &we) && we.State == "action_required" && errors.Is(err, ErrInDoubt) && strings.Contains(err.Error(), "verify_registrant_email")
		}},
		{name: "taken", params: RegisterParams{Domain: "example.com"}, wantErr: func(err error) bool {
			var ae *APIError
			return errors.As(err, &ae) && ae.Status == http.StatusConflict && strings.HasPrefix(ae.Message, "domain_unavailable") && !errors.Is(err, ErrInDoubt)
		}},
		{name: "premium", params: RegisterParams{Domain: "premium.com"}, wantErr: func(err error) bool {
			var ae *APIError
			return errors.As(err, &ae) && ae.Status == http.StatusBadRequest && strings.Contains(ae.Message, "domain_premium")
		}},
		{name: "years out of range", params: RegisterParams{Domain: "x.com", Years: 11}, wantErr: func(err error) bool {
			return strings.Contains(err.Error(), "allowed 1 to 10")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			s := e.session(t, PurposeRegister, "reg")
			reg, err := s.Register(context.Background(), tc.params)
			polls := 0
			for _, r := range e.sb.Requests() {
				if strings.HasSuffix(r.Path, "/registration-status") {
					polls++
				}
			}
			if tc.wantErr != nil {
				if err == nil || !tc.wantErr(err) {
					t.Fatalf("Register = %v, %v", reg, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			years := max(tc.params.Years, 1)
			if reg.Domain != tc.params.Domain || reg.Status != "active" || reg.WorkflowState != "succeeded" || reg.AutoRenew != tc.params.AutoRenew ||
				reg.Charged != tc.charged || reg.Currency != "USD" || !reg.ExpiresAt.Equal(reg.CreatedAt.AddDate(years, 0, 0)) {
				t.Fatalf("registration %+v", reg)
			}
			if polls != tc.wantPolls {
				t.Errorf("%d registration-status polls, want %d", polls, tc.wantPolls)
			}
			again, err := s.GetRegistration(context.Background(), tc.params.Domain)
			if err != nil || again.Domain != reg.Domain || !again.ExpiresAt.Equal(reg.ExpiresAt) || again.Status != "active" {
				t.Fatalf("GetRegistration = %+v, %v", again, err)
			}
			// Registered means taken: the second attempt gets the real error.
			_, err = s.Register(context.Background(), tc.params)
			var ae *APIError
			if !errors.As(err, &ae) || ae.Status != http.StatusConflict {
				t.Fatalf("second Register = %v", err)
			}
			checks, err := s.CheckDomains(context.Background(), tc.params.Domain)
			if err != nil || checks[0].Registrable || checks[0].Reason != "domain_unavailable" {
				t.Fatalf("CheckDomains after registering = %+v, %v", checks, err)
			}
		})
	}
}

func TestGetRegistrationNotFound(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.session(t, PurposeInspect, "inspect")
	_, err := s.GetRegistration(context.Background(), "never-registered.com")
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetRegistration = %v, want ErrNotFound", err)
	}
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 404 || ae.CFRay == "" {
		t.Fatalf("not an APIError with its cf-ray: %#v", err)
	}
}

func TestRegisterPollingStopsWithContext(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.PollInterval = 20 * time.Millisecond })
	s := e.session(t, PurposeRegister, "poll")
	// The caller gives up once the registration was accepted and is being
	// polled: cancelled on the first status poll, not after a guessed delay.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e.sb.OnRequest(func(r *http.Request) {
		if strings.Contains(r.URL.Path, "registration-status") {
			cancel()
		}
	})
	t.Cleanup(func() { e.sb.OnRequest(nil) })
	_, err := s.Register(ctx, RegisterParams{Domain: "slow-interrupted.com"})
	if !errors.Is(err, ErrInDoubt) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Register = %v, want ErrInDoubt wrapping the cancellation", err)
	}
	// Reconciling with a fresh context finds the accepted registration.
	reg, err := s.GetRegistration(context.Background(), "slow-interrupted.com")
	if err != nil || reg.Status != "registration_pending" || !reg.ExpiresAt.IsZero() {
		t.Fatalf("GetRegistration = %+v, %v", reg, err)
	}
}

const workerSrc = "export default {\n  async fetch(req) { return new Response('hello from tollgate') }\n};\n"

func TestDeployAndGetWorker(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	s := e.session(t, PurposeDeploy, "deploy")
	dep, err := s.DeployWorker(ctx, DeployParams{ScriptName: "tollgate-hello", Module: []byte(workerSrc), CompatibilityDate: "2025-06-01", WorkersDev: true})
	if err != nil {
		t.Fatal(err)
	}
	if dep.ScriptName != "tollgate-hello" || dep.ID != "tollgate-hello" || dep.Etag == "" || dep.Tag == "" || dep.ModifiedOn.IsZero() ||
		dep.URL != "https://tollgate-hello.tollgate-sandbox.workers.dev" {
		t.Fatalf("deployment %+v", dep)
	}
	recs := e.sb.Scripts()
	sum := sha256.Sum256([]byte(workerSrc))
	if len(recs) != 1 || recs[0].MainModule != "worker.js" || recs[0].CompatibilityDate != "2025-06-01" || !recs[0].WorkersDev || recs[0].ModuleSHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("sandbox scripts %+v", recs)
	}

	got, err := s.GetWorker(ctx, "tollgate-hello")
	if err != nil {
		t.Fatal(err)
	}
	if got.Etag != dep.Etag || got.ModuleSHA256 != hex.EncodeToString(sum[:]) || got.MainModule != "worker.js" || got.Size != len(workerSrc) || !got.ModifiedOn.Equal(dep.ModifiedOn) {
		t.Fatalf("GetWorker %+v", got)
	}

	// A production deploy: another module name, no workers.dev.
	dep2, err := s.DeployWorker(ctx, DeployParams{ScriptName: "tollgate-prod", Module: []byte(workerSrc), ModuleName: "index.mjs", CompatibilityDate: "2025-06-01"})
	if err != nil || dep2.URL != "" {
		t.Fatalf("deploy without workers.dev: %+v %v", dep2, err)
	}
	insp := e.session(t, PurposeInspect, "reconcile")
	got, err = insp.GetWorker(ctx, "tollgate-prod")
	if err != nil || got.MainModule != "index.mjs" || got.ModuleSHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("inspect GetWorker = %+v, %v", got, err)
	}
	if _, err := insp.GetWorker(ctx, "no-such-worker"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing worker: %v", err)
	}
}

func TestDeployWorkerRejects(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.session(t, PurposeDeploy, "rejects")
	ok := DeployParams{ScriptName: "ok", Module: []byte(workerSrc), CompatibilityDate: "2025-06-01"}
	local := []struct {
		name string
		mod  func(*DeployParams)
		want string
	}{
		{"bad script name", func(p *DeployParams) { p.ScriptName = "Bad Name" }, "script name"},
		{"empty module", func(p *DeployParams) { p.Module = nil }, "module: empty"},
		{"bad module name", func(p *DeployParams) { p.ModuleName = "../x.js" }, "module name"},
		{"bad date", func(p *DeployParams) { p.CompatibilityDate = "June 1" }, "compatibility date"},
	}
	before := len(e.sb.Requests())
	for _, tc := range local {
		p := ok
		tc.mod(&p)
		if _, err := s.DeployWorker(context.Background(), p); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	if n := len(e.sb.Requests()); n != before {
		t.Fatalf("locally refused deploys made %d requests", n-before)
	}
	// Cloudflare's own validation comes back as an APIError with its code.
	big := ok
	big.Module = bytes.Repeat([]byte("/* pad */"), 400_000)
	_, err := s.DeployWorker(context.Background(), big)
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 400 || ae.Code != 10027 || errors.Is(err, ErrInDoubt) {
		t.Fatalf("oversized upload: %v", err)
	}
	future := ok
	future.CompatibilityDate = time.Now().AddDate(0, 0, 3).Format(time.DateOnly)
	if _, err := s.DeployWorker(context.Background(), future); !errors.As(err, &ae) || ae.Code != 10021 {
		t.Fatalf("future compatibility date: %v", err)
	}
}

func TestWrongPurposeFailsLocally(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	quote := e.session(t, PurposeQuote, "q")
	deploy := e.session(t, PurposeDeploy, "d")
	inspect := e.session(t, PurposeInspect, "i")
	before := len(e.sb.Requests())
	calls := []struct {
		name string
		call func() error
	}{
		{"quote registers", func() error { _, err := quote.Register(ctx, RegisterParams{Domain: "x.com"}); return err }},
		{"quote deploys", func() error {
			_, err := quote.DeployWorker(ctx, DeployParams{ScriptName: "x", Module: []byte("x"), CompatibilityDate: "2025-01-01"})
			return err
		}},
		{"deploy checks domains", func() error { _, err := deploy.CheckDomains(ctx, "x.com"); return err }},
		{"deploy reads registrations", func() error { _, err := deploy.GetRegistration(ctx, "x.com"); return err }},
		{"inspect registers", func() error { _, err := inspect.Register(ctx, RegisterParams{Domain: "x.com"}); return err }},
		{"inspect deploys", func() error {
			_, err := inspect.DeployWorker(ctx, DeployParams{ScriptName: "x", Module: []byte("x"), CompatibilityDate: "2025-01-01"})
			return err
		}},
		{"quote reads workers", func() error { _, err := quote.GetWorker(ctx, "x"); return err }},
	}
	for _, c := range calls {
		if err := c.call(); !errors.Is(err, ErrWrongPurpose) {
			t.Errorf("%s: %v, want ErrWrongPurpose", c.name, err)
		}
	}
	if n := len(e.sb.Requests()); n != before {
		t.Fatalf("wrong-purpose calls made %d requests", n-before)
	}
}

func TestExpiredSessionFailsLocally(t *testing.T) {
	t.Parallel()
	var now time.Time
	e := newEnv(t, func(c *Config) { c.Clock = func() time.Time { return now } })
	now = time.Now()
	s := e.session(t, PurposeQuote, "late")
	now = now.Add(DefaultTokenTTL + time.Second)
	before := len(e.sb.Requests())
	if _, err := s.CheckDomains(context.Background(), "x.com"); !errors.Is(err, ErrSessionExpired) {
		t.Fatalf("CheckDomains on an expired session: %v", err)
	}
	if n := len(e.sb.Requests()); n != before {
		t.Fatal("an expired session made a request")
	}
}
