package cloudflare

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudflare/cloudflare-go/v6/option"
	"github.com/cloudflare/cloudflare-go/v6/registrar"
	"github.com/cloudflare/cloudflare-go/v6/workers"
)

// Session is one operation's access to Cloudflare: a token minted for it
// alone, with a client built for that token. The token value is unexported
// and never logged. Close deletes the token.
type Session struct {
	Purpose Purpose
	Label   string
	TokenID string
	// ExpiresAt is the token's expires_on.
	ExpiresAt time.Time
	// PermissionGroups are the names of the groups the token holds.
	PermissionGroups []string
	// Zones are the ids of the zones the token's zone groups apply to (none
	// for an account-only token; empty too when they apply to all zones).
	Zones []string

	b      *Broker
	token  string // secret
	grants grants

	closed  atomic.Bool
	closeMu sync.Mutex
	deleted bool
}

// Close deletes the session's token, retrying with backoff. It is
// idempotent, and it runs even if ctx is already done (bounded by
// Config.CloseTimeout) so a timed-out operation still revokes its token.
// After Close every other method fails with ErrSessionClosed. On failure the
// token id is logged (never the value) and Close may be called again; Sweep
// deletes it on the next start otherwise.
func (s *Session) Close(ctx context.Context) error {
	s.closed.Store(true)
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.deleted {
		return nil
	}
	b := s.b
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.cfg.CloseTimeout)
	defer cancel()
	if err := b.deleteToken(ctx, s.Purpose, s.Label, s.TokenID); err != nil {
		b.log.LogAttrs(ctx, slog.LevelWarn, "could not delete minted cloudflare token; it expires on its own and Sweep deletes it on start",
			slog.String(logPurpose, string(s.Purpose)), slog.String(logLabel, s.Label), slog.String(logTokenID, s.TokenID),
			slog.Time(logExpires, s.ExpiresAt), slog.String(logErr, err.Error()))
		return fmt.Errorf("close %s session %s: delete token %s: %w", s.Purpose, s.Label, s.TokenID, err)
	}
	s.deleted = true
	b.log.LogAttrs(ctx, slog.LevelDebug, "revoked cloudflare token",
		slog.String(logPurpose, string(s.Purpose)), slog.String(logLabel, s.Label), slog.String(logTokenID, s.TokenID))
	return nil
}

// ready fails locally, before any request, when the call is not allowed:
// the session is closed or expired, or its token lacks one of needs.
func (s *Session) ready(op string, needs ...need) error {
	if s.closed.Load() {
		return fmt.Errorf("%s: %w", op, ErrSessionClosed)
	}
	if err := s.checkNeeds(op, needs...); err != nil {
		return err
	}
	if !s.b.cfg.Clock().Before(s.ExpiresAt) {
		return fmt.Errorf("%s: %w at %s; open a new session", op, ErrSessionExpired, s.ExpiresAt.Format(time.RFC3339))
	}
	return nil
}

// opts are the client options for this session's token.
func (s *Session) opts() []option.RequestOption {
	return s.b.clientOptions(s.token, s.Purpose, s.Label, s.TokenID, false)
}

func (s *Session) accountID() string { return s.b.cfg.AccountID }

// Reasons CheckDomains adds to Cloudflare's own, both meaning "do not buy".
const (
	// ReasonNotReturned: Cloudflare left the name out of its answer (it
	// omits malformed names).
	ReasonNotReturned = "not_returned"
	// ReasonPricingMissing: Cloudflare said registrable but sent no price;
	// treated as not registrable, since nothing can be reserved for it.
	ReasonPricingMissing = "pricing_missing"
)

// DomainCheck is the registrar's live answer for one name. Prices are
// Cloudflare's exact decimal strings, per year, in Currency.
type DomainCheck struct {
	Name             string
	Registrable      bool
	Reason           string // Cloudflare's reason when not registrable, or one of the Reason* constants
	Tier             string // standard | premium (may be empty when not registrable)
	Currency         string
	RegistrationCost string // first year
	RenewalCost      string // each further year
}

// CheckDomains asks domain-check about 1 to 20 names and answers in the
// order asked (duplicates answered twice). Needs Registrar Domains Read (or
// Admin): PurposeQuote, PurposeRegister, PurposeInspect.
func (s *Session) CheckDomains(ctx context.Context, names ...string) ([]DomainCheck, error) {
	const op = "check domains"
	if err := s.ready(op, needRegistrarRead); err != nil {
		return nil, err
	}
	if len(names) < 1 || len(names) > 20 {
		return nil, fmt.Errorf("%s: got %d names; ask about 1 to 20 at a time", op, len(names))
	}
	for i, n := range names {
		if strings.TrimSpace(n) == "" {
			return nil, fmt.Errorf("%s: name %d is empty; pass fully qualified names such as example.com", op, i)
		}
	}
	var res *registrar.RegistrarCheckResponse
	err := s.b.read(ctx, func(ctx context.Context) error {
		var p registrar.RegistrarCheckParams
		p.AccountID.Value, p.AccountID.Present = s.accountID(), true
		p.Domains.Value, p.Domains.Present = names, true
		var err error
		res, err = registrar.NewRegistrarService(s.opts()...).Check(ctx, p)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	byName := map[string]registrar.RegistrarCheckResponseDomain{}
	for _, d := range res.Domains {
		byName[canonical(d.Name)] = d
	}
	out := make([]DomainCheck, 0, len(names))
	for _, n := range names {
		d, ok := byName[canonical(n)]
		if !ok {
			out = append(out, DomainCheck{Name: n, Reason: ReasonNotReturned})
			continue
		}
		dc := DomainCheck{
			Name: d.Name, Registrable: d.Registrable, Reason: string(d.Reason), Tier: string(d.Tier),
			Currency: d.Pricing.Currency, RegistrationCost: d.Pricing.RegistrationCost, RenewalCost: d.Pricing.RenewalCost,
		}
		if dc.Registrable && (dc.Currency == "" || dc.RegistrationCost == "" || dc.RenewalCost == "") {
			dc.Registrable, dc.Reason = false, ReasonPricingMissing
		}
		out = append(out, dc)
	}
	return out, nil
}

func canonical(name string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(name)), ".")
}

// RegisterParams is one registration.
type RegisterParams struct {
	Domain    string
	Years     int  // 1 to 10; 0 means 1
	AutoRenew bool // sent explicitly either way
	// Async sends "Prefer: respond-async": Cloudflare answers 202 at once
	// and the outcome is polled.
	Async bool
}

// Registration is a domain the account owns, as Cloudflare reports it.
type Registration struct {
	Domain        string
	Status        string // active | registration_pending | expired | ...
	AutoRenew     bool
	CreatedAt     time.Time
	ExpiresAt     time.Time // zero while pending
	WorkflowState string    // the registration workflow's final state, "" from GetRegistration
	// Charged and Currency are what the workflow reports it charged, as an
	// exact decimal string, or "" if it reports nothing (Cloudflare
	// documents no such field; the sandbox sends one).
	Charged  string
	Currency string
}

var decimalRE = regexp.MustCompile(`^[0-9]{1,15}(\.[0-9]{1,6})?$`)

// Register starts a registration (Registrations.New, sent once, never
// retried: it is billable) and, on a 202, polls registration-status with
// backoff until the workflow completes, needs action, or ctx is done.
// Errors that leave the outcome open wrap ErrInDoubt; a failed workflow is a
// *WorkflowError. Needs Registrar Domains Admin: PurposeRegister.
func (s *Session) Register(ctx context.Context, p RegisterParams) (*Registration, error) {
	const op = "register"
	if err := s.ready(op, needRegistrarAdmin); err != nil {
		return nil, err
	}
	domain := canonical(p.Domain)
	if domain == "" {
		return nil, fmt.Errorf("%s: domain is empty; give a fully qualified name such as example.com", op)
	}
	years := p.Years
	if years == 0 {
		years = 1
	}
	if years < 1 || years > 10 {
		return nil, fmt.Errorf("%s %s: years %d; allowed 1 to 10", op, domain, p.Years)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s %s: %w", op, domain, err)
	}
	svc := registrar.NewRegistrarService(s.opts()...)
	var ws *registrar.WorkflowStatus
	err := s.b.mutateOnce(ctx, func(ctx context.Context) error {
		var params registrar.RegistrationNewParams
		params.AccountID.Value, params.AccountID.Present = s.accountID(), true
		params.DomainName.Value, params.DomainName.Present = domain, true
		params.AutoRenew.Value, params.AutoRenew.Present = p.AutoRenew, true
		params.Years.Value, params.Years.Present = int64(years), true
		if p.Async {
			params.Prefer.Value, params.Prefer.Present = "respond-async", true
		}
		var err error
		ws, err = svc.Registrations.New(ctx, params)
		return err
	})
	if err != nil {
		if ambiguous(err) {
			return nil, fmt.Errorf("%s %s: %w: %w", op, domain, ErrInDoubt, err)
		}
		return nil, fmt.Errorf("%s %s: %w", op, domain, err)
	}
	s.checkSelfLink(ctx, domain, ws)
	interval := s.b.cfg.PollInterval
	for !ws.Completed && ws.State != registrar.WorkflowStatusStateActionRequired {
		s.b.log.LogAttrs(ctx, slog.LevelDebug, "registration workflow pending",
			slog.String(logDomain, domain), slog.String(logState, string(ws.State)), slog.Duration(logWait, interval))
		// The session's token expires in minutes: stop before it does, and
		// leave the outcome to reconciliation rather than let a refused poll
		// look like a refusal of the registration itself.
		if !s.b.cfg.Clock().Add(interval + pollTokenMargin).Before(s.ExpiresAt) {
			return nil, fmt.Errorf("%s %s: workflow still %s when the operation's token was about to expire: %w", op, domain, ws.State, ErrInDoubt)
		}
		if err := sleep(ctx, interval); err != nil {
			return nil, fmt.Errorf("%s %s: workflow %s when polling stopped: %w: %w", op, domain, ws.State, ErrInDoubt, err)
		}
		next, err := s.pollStatus(ctx, svc, domain)
		if err != nil {
			return nil, fmt.Errorf("%s %s: poll registration-status: %w: %w", op, domain, ErrInDoubt, err)
		}
		if next.State == registrar.WorkflowStatusStateBlocked {
			// A third party holds it up: poll more slowly.
			interval = min(interval*3, s.b.cfg.MaxPollInterval)
		} else {
			interval = min(interval*2, s.b.cfg.MaxPollInterval)
		}
		ws = next
	}
	switch ws.State {
	case registrar.WorkflowStatusStateSucceeded:
	case registrar.WorkflowStatusStateFailed:
		return nil, fmt.Errorf("%s %s: %w", op, domain, &WorkflowError{Domain: domain, State: string(ws.State), Code: ws.Error.Code, Message: ws.Error.Message})
	default:
		// action_required, or a "completed" state this client does not know.
		return nil, fmt.Errorf("%s %s: %w", op, domain, &WorkflowError{Domain: domain, State: string(ws.State), Message: actionText(ws)})
	}
	return s.registrationFromWorkflow(ctx, svc, domain, ws), nil
}

// pollTokenMargin is how much token lifetime a registration poll leaves
// unused, so the last poll is never refused for an expired token.
const pollTokenMargin = 30 * time.Second

// checkSelfLink logs when links.self is not this domain's
// registration-status. The link is never requested as given: polling uses
// the typed endpoint on the configured API base, so the token can only ever
// go to that host.
func (s *Session) checkSelfLink(ctx context.Context, domain string, ws *registrar.WorkflowStatus) {
	if ws.Links.Self == "" {
		return
	}
	want := "accounts/" + s.accountID() + "/registrar/registrations/" + domain + "/registration-status"
	if u, err := url.Parse(ws.Links.Self); err != nil || !strings.HasSuffix(u.Path, want) {
		s.b.log.LogAttrs(ctx, slog.LevelWarn, "registration links.self is not the registration-status endpoint; polling the endpoint instead",
			slog.String(logDomain, domain))
	}
}

func (s *Session) pollStatus(ctx context.Context, svc *registrar.RegistrarService, domain string) (*registrar.WorkflowStatus, error) {
	var ws *registrar.WorkflowStatus
	err := s.b.read(ctx, func(ctx context.Context) error {
		var q registrar.RegistrationStatusGetParams
		q.AccountID.Value, q.AccountID.Present = s.accountID(), true
		var err error
		ws, err = svc.RegistrationStatus.Get(ctx, domain, q)
		return err
	})
	return ws, err
}

func actionText(ws *registrar.WorkflowStatus) string {
	if a, ok := ws.Context["action"].(string); ok && a != "" {
		return "Cloudflare needs action: " + a
	}
	return "the workflow stopped without completing"
}

// registrationFromWorkflow builds the result of a succeeded workflow from
// context.registration, falling back to Registrations.Get. The registration
// has happened either way, so a failed read-back is logged, not returned:
// reporting failure here would release a hold that was really charged.
func (s *Session) registrationFromWorkflow(ctx context.Context, svc *registrar.RegistrarService, domain string, ws *registrar.WorkflowStatus) *Registration {
	out := &Registration{Domain: domain, WorkflowState: string(ws.State)}
	if c, ok := ws.Context["charge"].(map[string]any); ok {
		amt, _ := c["amount"].(string)
		cur, _ := c["currency"].(string)
		if decimalRE.MatchString(amt) && len(cur) == 3 {
			out.Charged, out.Currency = amt, strings.ToUpper(cur)
		}
	}
	var reg registrar.Registration
	found := false
	if raw, ok := ws.Context["registration"]; ok {
		if b, err := json.Marshal(raw); err == nil && json.Unmarshal(b, &reg) == nil && reg.DomainName != "" {
			found = true
		}
	}
	if !found {
		got, err := s.getRegistration(ctx, svc, domain)
		if err != nil {
			s.b.log.LogAttrs(ctx, slog.LevelWarn, "registration succeeded but reading it back failed",
				slog.String(logDomain, domain), slog.String(logErr, err.Error()))
			out.Status = "active"
			return out
		}
		reg = *got
	}
	fillRegistration(out, &reg)
	return out
}

func fillRegistration(out *Registration, reg *registrar.Registration) {
	out.Domain = reg.DomainName
	out.Status = string(reg.Status)
	out.AutoRenew = reg.AutoRenew
	out.CreatedAt = reg.CreatedAt
	out.ExpiresAt = reg.ExpiresAt
}

func (s *Session) getRegistration(ctx context.Context, svc *registrar.RegistrarService, domain string) (*registrar.Registration, error) {
	var reg *registrar.Registration
	err := s.b.read(ctx, func(ctx context.Context) error {
		var q registrar.RegistrationGetParams
		q.AccountID.Value, q.AccountID.Present = s.accountID(), true
		var err error
		reg, err = svc.Registrations.Get(ctx, domain, q)
		return err
	})
	return reg, err
}

// GetRegistration reads one registration; errors.Is(err, ErrNotFound) when
// the account does not own the domain. Needs Registrar Domains Read (or
// Admin): PurposeRegister, PurposeInspect.
func (s *Session) GetRegistration(ctx context.Context, domain string) (*Registration, error) {
	const op = "get registration"
	if err := s.ready(op, needRegistrarRead); err != nil {
		return nil, err
	}
	domain = canonical(domain)
	if domain == "" {
		return nil, fmt.Errorf("%s: domain is empty; give a fully qualified name such as example.com", op)
	}
	reg, err := s.getRegistration(ctx, registrar.NewRegistrarService(s.opts()...), domain)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", op, domain, err)
	}
	out := &Registration{}
	fillRegistration(out, reg)
	return out, nil
}

// Workflow is a registration workflow as reconciliation needs it.
type Workflow struct {
	// State is pending, in_progress, action_required, blocked, succeeded or failed.
	State     string
	Completed bool
}

// RegistrationWorkflow returns a domain's registration workflow, for
// reconciling a registration that was still pending. Missing → ErrNotFound.
// Needs Registrar Domains Read (or Admin): PurposeRegister, PurposeInspect.
func (s *Session) RegistrationWorkflow(ctx context.Context, domain string) (*Workflow, error) {
	const op = "workflow status"
	if err := s.ready(op, needRegistrarRead); err != nil {
		return nil, err
	}
	domain = canonical(domain)
	if domain == "" {
		return nil, fmt.Errorf("%s: domain is empty; give a fully qualified name such as example.com", op)
	}
	ws, err := s.pollStatus(ctx, registrar.NewRegistrarService(s.opts()...), domain)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", op, domain, err)
	}
	return &Workflow{State: string(ws.State), Completed: ws.Completed}, nil
}

// DeployParams is one Worker upload.
type DeployParams struct {
	ScriptName        string
	Module            []byte // ES module source
	ModuleName        string // default "worker.js"
	CompatibilityDate string // YYYY-MM-DD
	// WorkersDev enables the script's workers.dev route after the upload
	// and reports its URL.
	WorkersDev bool
}

// Deployment is an uploaded Worker.
type Deployment struct {
	ScriptName string
	Etag       string // changes with every upload: the version marker
	// ID is Cloudflare's id of the script, which its API documents as
	// usually the script name; it is not a version id.
	ID         string
	Tag        string // Cloudflare's stable script tag
	CreatedOn  time.Time
	ModifiedOn time.Time
	URL        string // https://<script>.<subdomain>.workers.dev when WorkersDev
}

var (
	scriptNameRE = regexp.MustCompile(`^[a-z0-9_][a-z0-9_-]{0,62}$`)
	moduleNameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._/-]{0,127}$`)
	dateRE       = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}$`)
)

// modulePart is an upload part; cloudflare-go's multipart encoder reads the
// file name and content type from these methods.
type modulePart struct {
	io.Reader
	name string
}

// Filename is the part's file name, the module name metadata.main_module refers to.
func (m *modulePart) Filename() string { return m.name }

// ContentType marks the part as an ES module, as Cloudflare requires of a main module.
func (m *modulePart) ContentType() string { return "application/javascript+module" }

// DeployWorker uploads an ES-module Worker (multipart, metadata.main_module)
// and, with WorkersDev, enables its workers.dev route. The upload is retried
// only on a 429; a 5xx or transport failure wraps ErrInDoubt. If the upload
// succeeded but enabling workers.dev failed, the Deployment is returned with
// the error so the caller knows what is live. Needs Workers Scripts Write:
// PurposeDeploy.
func (s *Session) DeployWorker(ctx context.Context, p DeployParams) (*Deployment, error) {
	const op = "deploy worker"
	if err := s.ready(op, needWorkersWrite); err != nil {
		return nil, err
	}
	if p.ModuleName == "" {
		p.ModuleName = "worker.js"
	}
	if err := checkModule(p.ScriptName, p.Module, p.ModuleName, p.CompatibilityDate); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s %s: %w", op, p.ScriptName, err)
	}
	scripts := workers.NewScriptService(s.opts()...)
	var res *workers.ScriptUpdateResponse
	err := s.b.mutate(ctx, func(ctx context.Context) error {
		var params workers.ScriptUpdateParams
		params.AccountID.Value, params.AccountID.Present = s.accountID(), true
		var meta workers.ScriptUpdateParamsMetadata
		meta.MainModule.Value, meta.MainModule.Present = p.ModuleName, true
		meta.CompatibilityDate.Value, meta.CompatibilityDate.Present = p.CompatibilityDate, true
		params.Metadata.Value, params.Metadata.Present = meta, true
		// A fresh reader per attempt: the encoder consumes it.
		params.Files.Value = []io.Reader{&modulePart{Reader: bytes.NewReader(p.Module), name: p.ModuleName}}
		params.Files.Present = true
		var err error
		res, err = scripts.Update(ctx, p.ScriptName, params)
		return err
	})
	if err != nil {
		if ambiguous(err) {
			return nil, fmt.Errorf("%s %s: %w: %w", op, p.ScriptName, ErrInDoubt, err)
		}
		return nil, fmt.Errorf("%s %s: %w", op, p.ScriptName, err)
	}
	dep := &Deployment{
		ScriptName: p.ScriptName, Etag: res.Etag, ID: res.ID, Tag: res.Tag,
		CreatedOn: res.CreatedOn, ModifiedOn: res.ModifiedOn,
	}
	if !p.WorkersDev {
		return dep, nil
	}
	err = s.b.mutate(ctx, func(ctx context.Context) error {
		var params workers.ScriptSubdomainNewParams
		params.AccountID.Value, params.AccountID.Present = s.accountID(), true
		params.Enabled.Value, params.Enabled.Present = true, true
		params.PreviewsEnabled.Value, params.PreviewsEnabled.Present = false, true
		_, err := scripts.Subdomain.New(ctx, p.ScriptName, params)
		return err
	})
	if err != nil {
		return dep, fmt.Errorf("%s %s: uploaded (etag %s) but enabling workers.dev failed: %w", op, p.ScriptName, dep.Etag, err)
	}
	var sub *workers.SubdomainGetResponse
	err = s.b.read(ctx, func(ctx context.Context) error {
		var q workers.SubdomainGetParams
		q.AccountID.Value, q.AccountID.Present = s.accountID(), true
		var err error
		sub, err = workers.NewSubdomainService(s.opts()...).Get(ctx, q)
		return err
	})
	if err != nil {
		return dep, fmt.Errorf("%s %s: uploaded and enabled on workers.dev, but reading the account subdomain failed: %w", op, p.ScriptName, err)
	}
	dep.URL = "https://" + p.ScriptName + "." + sub.Subdomain + ".workers.dev"
	return dep, nil
}

// Script is a deployed Worker as read back from Cloudflare.
type Script struct {
	ScriptName   string
	Etag         string
	ModifiedOn   time.Time
	MainModule   string // the entry point's file name
	ModuleSHA256 string // hex SHA-256 of the main module's content
	Size         int    // bytes of the main module
	Main         []byte // the main module's content
}

// GetWorker reads a Worker's metadata (from the scripts list) and its main
// module's content; errors.Is(err, ErrNotFound) when there is no such
// script. Needs Workers Scripts Read (or Write): PurposeDeploy,
// PurposeInspect.
func (s *Session) GetWorker(ctx context.Context, name string) (*Script, error) {
	const op = "get worker"
	if err := s.ready(op, needWorkersRead); err != nil {
		return nil, err
	}
	if !scriptNameRE.MatchString(name) {
		return nil, fmt.Errorf("%s: script name %q: want 1 to 63 lowercase letters, digits, '-' or '_'", op, name)
	}
	scripts := workers.NewScriptService(s.opts()...)
	var meta *workers.ScriptListResponse
	err := s.b.read(ctx, func(ctx context.Context) error {
		var q workers.ScriptListParams
		q.AccountID.Value, q.AccountID.Present = s.accountID(), true
		page, err := scripts.List(ctx, q)
		if err != nil {
			return err
		}
		meta = nil
		for i := range page.Result {
			if page.Result[i].ID == name {
				meta = &page.Result[i]
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s %s: list scripts: %w", op, name, err)
	}
	if meta == nil {
		return nil, fmt.Errorf("%s %s: %w", op, name, ErrNotFound)
	}
	var content *string
	var raw *http.Response
	err = s.b.read(ctx, func(ctx context.Context) error {
		var q workers.ScriptGetParams
		q.AccountID.Value, q.AccountID.Present = s.accountID(), true
		var err error
		content, err = scripts.Get(ctx, name, q, option.WithResponseInto(&raw))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s %s: read content: %w", op, name, err)
	}
	if content == nil || raw == nil {
		return nil, fmt.Errorf("%s %s: read content: empty answer", op, name)
	}
	entry, main, err := mainModule(raw.Header.Get("Content-Type"), raw.Header.Get("cf-entrypoint"), []byte(*content))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", op, name, err)
	}
	sum := sha256.Sum256(main)
	return &Script{
		ScriptName: name, Etag: meta.Etag, ModifiedOn: meta.ModifiedOn,
		MainModule: entry, ModuleSHA256: hex.EncodeToString(sum[:]), Size: len(main), Main: main,
	}, nil
}
