package cloudflare

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/cloudflare/cloudflare-go/v6/accounts"
	"github.com/cloudflare/cloudflare-go/v6/option"
	"github.com/cloudflare/cloudflare-go/v6/registrar"
	"github.com/cloudflare/cloudflare-go/v6/workers"
)

// rawClient is cloudflare-go with nothing but a token: what someone holding
// the minted token's value could do with it.
func rawClient(e *env, token string) []option.RequestOption {
	return []option.RequestOption{
		option.WithBaseURL(e.cfg.APIBase), option.WithAPIToken(token),
		option.WithHTTPClient(e.srv.Client()), option.WithMaxRetries(0),
	}
}

func statusOf(t *testing.T, err error) (int, int64) {
	t.Helper()
	var ae *registrar.Error
	if !errors.As(err, &ae) {
		t.Fatalf("not a Cloudflare error answer: %v", err)
	}
	code := int64(0)
	if len(ae.Errors) > 0 {
		code = ae.Errors[0].Code
	}
	return ae.StatusCode, code
}

func domainCheck(ctx context.Context, e *env, token string) error {
	var p registrar.RegistrarCheckParams
	p.AccountID.Value, p.AccountID.Present = e.sb.AccountID(), true
	p.Domains.Value, p.Domains.Present = []string{"least-privilege.com"}, true
	_, err := registrar.NewRegistrarService(rawClient(e, token)...).Check(ctx, p)
	return err
}

func registerWith(ctx context.Context, e *env, token, domain string) error {
	var p registrar.RegistrationNewParams
	p.AccountID.Value, p.AccountID.Present = e.sb.AccountID(), true
	p.DomainName.Value, p.DomainName.Present = domain, true
	_, err := registrar.NewRegistrarService(rawClient(e, token)...).Registrations.New(ctx, p)
	return err
}

type file struct {
	io.Reader
}

func (file) Filename() string    { return "worker.js" }
func (file) ContentType() string { return "application/javascript+module" }

func uploadWith(ctx context.Context, e *env, token, name string) error {
	var p workers.ScriptUpdateParams
	p.AccountID.Value, p.AccountID.Present = e.sb.AccountID(), true
	var m workers.ScriptUpdateParamsMetadata
	m.MainModule.Value, m.MainModule.Present = "worker.js", true
	m.CompatibilityDate.Value, m.CompatibilityDate.Present = "2025-01-01", true
	p.Metadata.Value, p.Metadata.Present = m, true
	p.Files.Value, p.Files.Present = []io.Reader{file{bytes.NewReader([]byte(workerSrc))}}, true
	_, err := workers.NewScriptService(rawClient(e, token)...).Update(ctx, name, p)
	return err
}

func mintWith(ctx context.Context, e *env, token string) error {
	var p accounts.TokenNewParams
	p.AccountID.Value, p.AccountID.Present = e.sb.AccountID(), true
	p.Name.Value, p.Name.Present = "escalation", true
	_, err := accounts.NewTokenService(rawClient(e, token)...).New(ctx, p)
	return err
}

// TestLeastPrivilege proves, with cloudflare-go and the minted tokens'
// values, that each token can do its purpose and nothing else.
func TestLeastPrivilege(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	deploy := e.session(t, PurposeDeploy, "lp-deploy")
	quote := e.session(t, PurposeQuote, "lp-quote")
	register := e.session(t, PurposeRegister, "lp-register")
	inspect := e.session(t, PurposeInspect, "lp-inspect")

	refused := []struct {
		name string
		err  error
	}{
		{"deploy token on domain-check", domainCheck(ctx, e, deploy.token)},
		{"deploy token on registrations", registerWith(ctx, e, deploy.token, "lp-a.com")},
		{"quote token on registrations", registerWith(ctx, e, quote.token, "lp-b.com")},
		{"inspect token on registrations", registerWith(ctx, e, inspect.token, "lp-c.com")},
		{"register token on workers", uploadWith(ctx, e, register.token, "lp-worker")},
		{"inspect token on workers upload", uploadWith(ctx, e, inspect.token, "lp-worker")},
		{"quote token minting a token", mintWith(ctx, e, quote.token)},
		{"deploy token minting a token", mintWith(ctx, e, deploy.token)},
		{"parent token registering", registerWith(ctx, e, e.b.parent, "lp-d.com")},
		{"parent token deploying", uploadWith(ctx, e, e.b.parent, "lp-worker")},
		{"parent token checking domains", domainCheck(ctx, e, e.b.parent)},
	}
	for _, r := range refused {
		if status, code := statusOf(t, r.err); status != http.StatusForbidden || code != 10000 {
			t.Errorf("%s: got %d code %d, want 403 code 10000", r.name, status, code)
		}
	}
	allowed := []struct {
		name string
		err  error
	}{
		{"quote token on domain-check", domainCheck(ctx, e, quote.token)},
		{"register token on registrations", registerWith(ctx, e, register.token, "lp-ok.com")},
		{"deploy token on workers", uploadWith(ctx, e, deploy.token, "lp-worker")},
	}
	for _, a := range allowed {
		if a.err != nil {
			t.Errorf("%s: %v", a.name, a.err)
		}
	}
	if len(e.sb.Registrations()) != 1 || len(e.sb.Scripts()) != 1 {
		t.Fatalf("refused calls changed state: %+v %+v", e.sb.Registrations(), e.sb.Scripts())
	}
}

func TestTokenRefusedAfterExpiry(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	s := e.session(t, PurposeQuote, "expiry")
	if err := domainCheck(ctx, e, s.token); err != nil {
		t.Fatalf("fresh token refused: %v", err)
	}
	e.offset.Store(int64(DefaultTokenTTL + time.Second)) // the sandbox's clock passes expires_on
	if status, code := statusOf(t, domainCheck(ctx, e, s.token)); status != http.StatusUnauthorized || code != 10000 {
		t.Fatalf("expired token: %d code %d, want 401 code 10000", status, code)
	}
	// Through the adapter the same refusal is an APIError.
	_, err := s.CheckDomains(ctx, "expired.com")
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
		t.Fatalf("CheckDomains with an expired token: %v", err)
	}
	// Expired but not deleted is still a live token: Close must delete it.
	if !e.liveToken(s.TokenID) {
		t.Fatal("expired token vanished without a delete")
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if e.liveToken(s.TokenID) {
		t.Fatal("expired token outlived Close")
	}
}

func TestTokenRefusedAfterClose(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	s := e.session(t, PurposeDeploy, "closed")
	if err := uploadWith(ctx, e, s.token, "closed-worker"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if e.liveToken(s.TokenID) {
		t.Fatal("token still live after Close")
	}
	if status, _ := statusOf(t, uploadWith(ctx, e, s.token, "closed-worker")); status != http.StatusUnauthorized {
		t.Fatalf("deleted token: %d, want 401", status)
	}
	if _, err := s.GetWorker(ctx, "closed-worker"); !errors.Is(err, ErrSessionClosed) {
		t.Fatalf("GetWorker after Close: %v", err)
	}
}
