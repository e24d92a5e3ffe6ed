package tools

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/approvals/display"
	"github.com/tollgatehq/tollgate/authz"
	"github.com/tollgatehq/tollgate/cloudflare"
	"github.com/tollgatehq/tollgate/ledger/money"
)

const (
	registerDomainName = "register_domain"
	minYears, maxYears = 1, 10
	minReason          = 10
	maxReason          = 500
)

var idempotencyKeyRE = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// RegisterDomainArgs are the arguments of register_domain.
type RegisterDomainArgs struct {
	Domain         string `json:"domain" jsonschema:"the domain to register, e.g. example.dev"`
	Years          *int   `json:"years,omitempty" jsonschema:"registration term in years"`
	AutoRenew      bool   `json:"auto_renew,omitempty" jsonschema:"renew automatically before expiry, charging the account each year"`
	Reason         string `json:"reason" jsonschema:"why you need this domain; shown to the human who approves the purchase"`
	IdempotencyKey string `json:"idempotency_key,omitempty" jsonschema:"reuse the same key to retry safely: the same key never registers twice"`
}

// registerArgs are the normalised arguments an Operation is bound to.
type registerArgs struct {
	Domain    string `json:"domain"`
	Years     int    `json:"years"`
	AutoRenew bool   `json:"auto_renew"`
}

// RegisterResult is what a successful registration returns.
type RegisterResult struct {
	Domain    string    `json:"domain"`
	Unicode   string    `json:"unicode,omitempty"`
	Status    string    `json:"status"`
	AutoRenew bool      `json:"auto_renew"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	Charged   Amount    `json:"charged"`
}

// RegisterDomain is the register_domain tool. It always waits for a human
// approval: a registration cannot be undone.
func RegisterDomain(r Runner, cfg Config) Tool {
	m := registerDomain{cfg: cfg}
	tool := mcp.NewTool(registerDomainName,
		mcp.WithToolTitle("Register a domain (needs human approval)"),
		mcp.WithDescription("Buys a domain through Cloudflare Registrar. Costs real money: the registrar's price for "+
			"the first year plus renewals for any further years, held against your budgets. Irreversible, so it always "+
			"waits for a human approver in Slack, who sees the exact domain, term, price and your reason. If no decision "+
			"arrives within the wait, the result has status awaiting_approval and an operation_id: call get_operation "+
			"with it later. Premium names and extensions not sold through the API are refused. Check the price first "+
			"with check_domain or estimate_cost."),
		withInput[RegisterDomainArgs](registerSchema),
		withOutput[OperationView](),
		mcp.WithReadOnlyHintAnnotation(false),
		mcp.WithDestructiveHintAnnotation(true),
		mcp.WithIdempotentHintAnnotation(true),
		mcp.WithOpenWorldHintAnnotation(true),
		mcp.WithTaskSupport(mcp.TaskSupportOptional),
	)
	return Tool{Tool: tool, Handler: mutationHandler(r, m)}
}

func registerSchema(p map[string]*jsonschema.Schema) {
	p["domain"].MinLength, p["domain"].MaxLength = ptr(1), ptr(maxNameOctets+1)
	p["years"].Type, p["years"].Types = "integer", nil
	p["years"].Minimum, p["years"].Maximum = ptr(float64(minYears)), ptr(float64(maxYears))
	p["years"].Default = json.RawMessage("1")
	p["auto_renew"].Default = json.RawMessage("false")
	reasonAndKeySchema(p)
}

func reasonAndKeySchema(p map[string]*jsonschema.Schema) {
	p["reason"].MinLength, p["reason"].MaxLength = ptr(minReason), ptr(maxReason)
	p["idempotency_key"].Pattern = idempotencyKeyRE.String()
	p["idempotency_key"].MaxLength = ptr(128)
}

type registerDomain struct{ cfg Config }

var _ Mutation = registerDomain{}

func (registerDomain) Name() string   { return registerDomainName }
func (registerDomain) Action() string { return "register" }

// Access: the registrar, read and admin (the price is re-checked before
// buying); reconciling reads the registration and its workflow.
func (registerDomain) Access() Access {
	return Access{
		Execute:   cloudflare.Permissions{Account: []string{cloudflare.GroupRegistrarRead, cloudflare.GroupRegistrarAdmin}},
		Reconcile: cloudflare.Permissions{Account: []string{cloudflare.GroupRegistrarRead}},
	}
}

// estimateOptional are the arguments an estimate does not need: nothing is
// asked of a human, and nothing is repeated.
var estimateOptional = []string{"reason", "idempotency_key"}

func optionalFor(estimate bool) []string {
	if estimate {
		return estimateOptional
	}
	return nil
}

func (registerDomain) normalize(raw json.RawMessage, estimate bool, _ time.Time) (Call, error) {
	a, err := decodeArgs[RegisterDomainArgs](raw, optionalFor(estimate)...)
	if err != nil {
		return Call{}, err
	}
	var errs InputErrors
	d, derr := NormalizeDomain(a.Domain)
	var ie *InputError
	if errors.As(derr, &ie) {
		errs = append(errs, ie)
	}
	years := minYears
	if a.Years != nil {
		years = *a.Years
		if years < minYears || years > maxYears {
			errs = append(errs, inputErr("years", fmt.Sprintf("a whole number of years from %d to %d", minYears, maxYears), "%d is out of range", years))
		}
	}
	if e := checkReason(a.Reason, estimate); e != nil {
		errs = append(errs, e)
	}
	if e := checkKey(a.IdempotencyKey); e != nil {
		errs = append(errs, e)
	}
	if len(errs) > 0 {
		return Call{}, errs
	}
	args, hash, err := canonicalHash(registerArgs{Domain: d.FQDN, Years: years, AutoRenew: a.AutoRenew})
	if err != nil {
		return Call{}, err
	}
	return Call{
		Tool: registerDomainName, Args: args, ArgsHash: hash, Resource: "domain:" + d.FQDN,
		Reason: a.Reason, IdempotencyKey: a.IdempotencyKey,
	}, nil
}

func (registerDomain) decode(raw json.RawMessage) (registerArgs, Domain, error) {
	var a registerArgs
	if err := json.Unmarshal(raw, &a); err != nil {
		return a, Domain{}, fmt.Errorf("stored register_domain arguments: %w", err)
	}
	d, err := NormalizeDomain(a.Domain)
	if err != nil {
		return a, Domain{}, err
	}
	return a, d, nil
}

func (m registerDomain) PreResource(raw json.RawMessage) (authz.Resource, error) {
	a, d, err := m.decode(raw)
	if err != nil {
		return authz.Resource{}, err
	}
	return authz.Resource{Kind: "domain", ID: d.FQDN, Attr: map[string]any{
		"tld": d.TLD, "sld": d.SLD, "years": a.Years, "auto_renew": a.AutoRenew,
	}}, nil
}

func (m registerDomain) Plan(ctx context.Context, env PlanEnv, raw json.RawMessage, _ []byte) (Plan, error) {
	a, d, err := m.decode(raw)
	if err != nil {
		return Plan{}, err
	}
	q, err := env.Quote(ctx, d.FQDN)
	if err != nil {
		return Plan{}, upstreamError("domain-check", err)
	}
	total, lines, err := registrationPrice(q.DomainCheck, a.Years)
	if err != nil {
		return Plan{}, err
	}
	res, _ := m.PreResource(raw)
	res.Attr["price_micros"] = total.Micros
	res.Attr["currency"] = total.Currency
	res.Attr["tier"] = q.Tier
	renew := "off"
	if a.AutoRenew {
		renew = "on"
	}
	fields := []approvals.Field{{Label: "Domain", Value: d.FQDN}}
	if d.Unicode != d.FQDN {
		fields = append(fields, approvals.Field{Label: "Unicode", Value: "contains non-ASCII letters: " + d.Unicode})
	}
	fields = append(fields,
		approvals.Field{Label: "Years", Value: strconv.Itoa(a.Years)},
		approvals.Field{Label: "Auto-renew", Value: renew},
		approvals.Field{Label: "Tier", Value: q.Tier},
	)
	return Plan{
		Resource:       res,
		Amount:         total,
		Breakdown:      lines,
		Basis:          "live registrar quote",
		QuoteExpiresAt: q.ExpiresAt,
		Irreversible:   true,
		Summary:        fmt.Sprintf("Register %s for %s (auto-renew %s)", d.Display(), plural(a.Years, "year"), renew),
		Fields:         fields,
	}, nil
}

// registrationPrice is the registrar's price for a term: the registration
// price for the first year and the renewal price for each further year.
// Names the registrar will not sell through the API are refused here.
func registrationPrice(q cloudflare.DomainCheck, years int) (money.Money, []CostLine, error) {
	if !q.Registrable {
		return money.Money{}, nil, &ToolError{Code: "not_registrable", Message: fmt.Sprintf("%s cannot be registered: %s", q.Name, registrarReason(q.Reason))}
	}
	if q.Tier == "premium" {
		return money.Money{}, nil, &ToolError{Code: "not_registrable", Message: fmt.Sprintf("%s is premium-priced; tollgate does not register premium names", q.Name)}
	}
	first, err := money.ParseMoney(q.RegistrationCost, q.Currency)
	if err != nil {
		return money.Money{}, nil, fmt.Errorf("registrar price for %s: %w", q.Name, err)
	}
	renewal, err := money.ParseMoney(q.RenewalCost, q.Currency)
	if err != nil {
		return money.Money{}, nil, fmt.Errorf("registrar renewal price for %s: %w", q.Name, err)
	}
	lines := []CostLine{{Item: "registration, first year", Amount: AmountOf(first)}}
	total := first
	if years > 1 {
		more, err := renewal.Mul(int64(years - 1))
		if err != nil {
			return money.Money{}, nil, err
		}
		if total, err = total.Add(more); err != nil {
			return money.Money{}, nil, err
		}
		lines = append(lines, CostLine{Item: fmt.Sprintf("renewal, %s at %s", plural(years-1, "further year"), renewal), Amount: AmountOf(more)})
	}
	return total, lines, nil
}

// PriceChangedError aborts an execution whose live price rose above what was
// reserved and approved.
type PriceChangedError struct {
	Reserved, Now money.Money
}

func (e *PriceChangedError) Error() string {
	return fmt.Sprintf("the price rose from %s (reserved and approved) to %s; nothing was bought. Estimate again and make a new request", e.Reserved, e.Now)
}

// AlwaysNeedsApproval is true: a registration cannot be undone.
func (registerDomain) AlwaysNeedsApproval(json.RawMessage) bool { return true }

func (m registerDomain) Execute(ctx context.Context, s *cloudflare.Session, in ExecInput) (Outcome, error) {
	a, d, err := m.decode(in.Args)
	if err != nil {
		return Outcome{}, err
	}
	checks, err := s.CheckDomains(ctx, d.FQDN)
	if err != nil {
		return Outcome{}, fmt.Errorf("re-check price: %w: %w", ErrNotAttempted, err)
	}
	if len(checks) != 1 {
		return Outcome{}, fmt.Errorf("re-check price: %w: registrar answered for %d names, asked for 1", ErrNotAttempted, len(checks))
	}
	total, _, err := registrationPrice(checks[0], a.Years)
	if err != nil {
		return Outcome{}, err
	}
	if total.Currency != in.MaxAmount.Currency || total.Micros > in.MaxAmount.Micros {
		return Outcome{}, &PriceChangedError{Reserved: in.MaxAmount, Now: total}
	}
	reg, err := s.Register(ctx, cloudflare.RegisterParams{Domain: d.FQDN, Years: a.Years, AutoRenew: a.AutoRenew})
	if err != nil {
		return Outcome{}, err
	}
	charged := total
	if reg.Charged != "" {
		if c, err := money.ParseMoney(reg.Charged, reg.Currency); err == nil {
			charged = c
		}
	}
	return m.outcome(d, reg, charged), nil
}

func (registerDomain) outcome(d Domain, reg *cloudflare.Registration, charged money.Money) Outcome {
	res := RegisterResult{
		Domain: reg.Domain, Status: reg.Status, AutoRenew: reg.AutoRenew,
		CreatedAt: reg.CreatedAt, ExpiresAt: reg.ExpiresAt, Charged: AmountOf(charged),
	}
	if d.Unicode != d.FQDN {
		res.Unicode = d.Unicode
	}
	return Outcome{Result: res, Charged: charged, Summary: fmt.Sprintf("Registered %s (%s), charged %s", d.Display(), reg.Status, charged)}
}

func (m registerDomain) Reconcile(ctx context.Context, s *cloudflare.Session, in ExecInput) (Outcome, bool, error) {
	_, d, err := m.decode(in.Args)
	if err != nil {
		return Outcome{}, false, err
	}
	reg, err := s.GetRegistration(ctx, d.FQDN)
	if errors.Is(err, cloudflare.ErrNotFound) {
		return Outcome{}, false, nil
	}
	if err != nil {
		return Outcome{}, false, err
	}
	if reg.Status == "registration_pending" {
		// Accepted but not finished: the workflow says how it ended.
		wf, err := s.RegistrationWorkflow(ctx, d.FQDN)
		switch {
		case errors.Is(err, cloudflare.ErrNotFound):
			return Outcome{}, false, nil
		case err != nil:
			return Outcome{}, false, err
		case wf.State == "failed":
			return Outcome{}, false, nil
		case wf.State != "succeeded":
			return Outcome{}, false, fmt.Errorf("registration of %s is still %s; will ask again", d.FQDN, wf.State)
		}
		if reg, err = s.GetRegistration(ctx, d.FQDN); err != nil {
			return Outcome{}, false, err
		}
	}
	if reg.Status != "active" {
		return Outcome{}, false, fmt.Errorf("registration of %s is %s; will ask again", d.FQDN, reg.Status)
	}
	// The registrar's charge is not readable after the fact; the reserved
	// amount is what was approved and what the price re-check allowed.
	return m.outcome(d, reg, in.MaxAmount), true, nil
}

func checkReason(reason string, optional bool) *InputError {
	n := utf8.RuneCountInString(reason)
	if optional && n == 0 {
		return nil
	}
	allowed := fmt.Sprintf("%d to %d characters saying why you need this; the approver reads it", minReason, maxReason)
	if n < minReason || n > maxReason {
		return inputErr("reason", allowed, "%d characters", n)
	}
	// The approver sees the reason without control, bidi and zero-width
	// characters: what is left must still say something.
	if v := utf8.RuneCountInString(strings.TrimSpace(display.Clean(reason))); v < minReason {
		return inputErr("reason", allowed, "%d characters but only %d visible (control, bidi and zero-width characters and line breaks are not shown to the approver)", n, v)
	}
	return nil
}

func checkKey(key string) *InputError {
	const allowed = "1-128 characters from A-Z a-z 0-9 . _ : -, not starting with auto:"
	switch {
	case key == "":
		return nil
	case strings.HasPrefix(key, "auto:"):
		return inputErr("idempotency_key", allowed, "the auto: prefix is reserved for keys tollgate derives")
	case !idempotencyKeyRE.MatchString(key):
		return inputErr("idempotency_key", allowed, "%q is not a valid key", truncate(key, 40))
	}
	return nil
}

func plural(n int, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return strconv.Itoa(n) + " " + unit + "s"
}

func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n]) + "…"
}

// registerDomainApproval: a registration is paid at once and cannot be
// undone; a mandate offered with one covers the same TLD; the quorum probe
// is a registration at the policy's price ceiling.
var registerDomainApproval = ApprovalTraits{
	Consequence: func(raw json.RawMessage) string {
		a, _, err := registerDomain{}.decode(raw)
		if err != nil {
			return ""
		}
		s := "A registration cannot be undone: the domain is bought from Cloudflare's registrar and paid for at once."
		if a.AutoRenew {
			s += " It renews automatically, and is charged again, when the term ends."
		}
		return s
	},
	MandatePattern: func(name string) string {
		if i := strings.LastIndex(name, "."); i >= 0 {
			return "*" + name[i:]
		}
		return name
	},
	QuorumProbe: func(e ProbeEnv) QuorumProbe {
		return QuorumProbe{Amount: e.RegistrationCeiling, Irreversible: true, Resource: authz.Resource{
			Kind: "domain", ID: "quorum-check." + e.TLD, Attr: map[string]any{
				"tld": e.TLD, "sld": "quorum-check", "years": 1, "auto_renew": false,
				"price_micros": e.RegistrationCeiling.Micros, "currency": e.RegistrationCeiling.Currency, "tier": "standard",
			},
		}}
	},
}
